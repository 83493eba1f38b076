"""The reaper's batch: claim (commit) -> delete bytes -> drop rows."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select

from vre.config import Settings
from vre.db import transaction
from vre.errors import Conflict
from vre.lake import reaper, rses, rules, scopes, storage, upload
from vre.lake.models import DID, RSE, Replica
from vre.worker import Worker


@pytest.fixture
def disks(sessions, root, alice, tmp_path):
    with transaction(sessions) as session:
        rses.add(session, root, "DISK-A", (tmp_path / "a").as_uri())
        rses.add(session, root, "DISK-B", (tmp_path / "b").as_uri())
        scopes.add(session, alice, "user.alice")
    return {"A": tmp_path / "a", "B": tmp_path / "b"}


def drain(sessions, rounds=10):
    worker = Worker(Settings(reaper_grace=3600, transfer_lease=30))
    with ThreadPoolExecutor(2) as pool:
        for _ in range(rounds):
            with transaction(sessions) as session:
                while rules.process_updates(session):
                    pass
            if not worker.transfer_batch(sessions, pool):
                break


def state(sessions, name):
    with transaction(sessions) as session:
        return {
            rse: (st, lc)
            for rse, st, lc in session.execute(
                select(RSE.name, Replica.state, Replica.lock_count)
                .join(Replica, Replica.rse_id == RSE.id)
                .join(DID, DID.id == Replica.did_id)
                .where(DID.name == name)
            )
        }


def test_a_file_being_reaped_cannot_be_uploaded_again_until_it_is_gone(
    sessions, alice, disks, monkeypatch
):
    """While the reaper's batch deletes one file, the user uploads the other again."""
    for n in ("a1", "a2"):
        upload.upload(sessions, alice, "user.alice", n, "DISK-A", [n.encode() * 10])
    with transaction(sessions) as session:
        reaper.erase(session, alice, "user.alice", "a1", force=True)
        reaper.erase(session, alice, "user.alice", "a2", force=True)
    real = storage.delete
    refused = []

    def delete(url, **kw):
        if not refused:
            with pytest.raises(Conflict, match="being deleted by the reaper") as err:
                upload.upload(sessions, alice, "user.alice", "a2", "DISK-A", [b"a2" * 10])
            refused.append(err.value)
        return real(url, **kw)

    monkeypatch.setattr(storage, "delete", delete)
    assert sorted(c.did for c in reaper.reap(sessions, timedelta(0))) == [
        "user.alice:a1",
        "user.alice:a2",
    ]
    monkeypatch.undo()
    assert refused and state(sessions, "a2") == {}
    upload.upload(sessions, alice, "user.alice", "a2", "DISK-A", [b"a2" * 10])  # now it may
    assert state(sessions, "a2") == {"DISK-A": ("available", 1)}
    assert [p.name for p in disks["A"].rglob("a2")] == ["a2"]


def test_a_copy_wanted_back_during_the_batch_waits_for_the_delete(
    sessions, alice, disks, monkeypatch
):
    for n in ("b1", "b2"):
        upload.upload(sessions, alice, "user.alice", n, "DISK-A", [n.encode() * 10])
    ids = []
    with transaction(sessions) as session:
        for n in ("b1", "b2"):
            ids.append(rules.add(session, alice, "user.alice", n, "DISK-B").id)
    drain(sessions)
    with transaction(sessions) as session:
        for i in ids:
            rules.remove(session, alice, i)
    real = storage.delete
    calls = []

    def delete(url, **kw):
        if not calls:
            with transaction(sessions) as session:  # the user wants b2 on DISK-B again
                rules.add(session, alice, "user.alice", "b2", "DISK-B")
            drain(sessions)  # a worker runs meanwhile: the transfer must wait
            assert state(sessions, "b2")["DISK-B"] == ("unavailable", 1)
        calls.append(url)
        return real(url, **kw)

    monkeypatch.setattr(storage, "delete", delete)
    assert len(reaper.reap(sessions, timedelta(0))) == 2
    monkeypatch.undo()
    assert state(sessions, "b2")["DISK-B"] == ("copying", 1)  # handed to the transfer
    drain(sessions)
    assert state(sessions, "b2")["DISK-B"] == ("available", 1)
    assert [p.read_bytes() for p in disks["B"].rglob("b2")] == [b"b2" * 10]


def test_a_deletion_left_unfinished_is_taken_up_again_after_the_retry_time(
    sessions, alice, disks, monkeypatch
):
    upload.upload(sessions, alice, "user.alice", "c1", "DISK-A", [b"c1" * 10])
    with transaction(sessions) as session:
        reaper.erase(session, alice, "user.alice", "c1", force=True)

    def broken(url, **kw):
        raise storage.StorageError("storage element down")

    monkeypatch.setattr(storage, "delete", broken)
    assert reaper.reap(sessions, timedelta(0)) == []
    monkeypatch.undo()
    assert state(sessions, "c1") == {"DISK-A": ("unavailable", 0)}
    assert reaper.reap(sessions, timedelta(0)) == []  # another round leaves it to its reaper
    assert [c.did for c in reaper.reap(sessions, timedelta(0), retry=timedelta(0))] == [
        "user.alice:c1"
    ]
    assert state(sessions, "c1") == {} and list(disks["A"].rglob("c1")) == []
