"""The reaper's batch: claim (commit) -> delete bytes -> drop rows."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select

from vre.config import Settings
from vre.db import transaction
from vre.errors import Conflict
from vre.lake import quotas, reaper, rses, rule_views, rules, scopes, storage, upload
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


def unwanted_copy_on_b(sessions, alice, name):
    """NAME on DISK-A, and a copy on DISK-B that no rule wants any more (the reaper's)."""
    upload.upload(sessions, alice, "user.alice", name, "DISK-A", [name.encode() * 10])
    with transaction(sessions) as session:
        rule = rules.add(session, alice, "user.alice", name, "DISK-B").id
    drain(sessions)
    with transaction(sessions) as session:
        rules.remove(session, alice, rule)


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
        unwanted_copy_on_b(sessions, alice, n)
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


def take_batch(sessions, retry=reaper.RETRY):
    """A reaper round's first step, as another worker runs it."""
    with transaction(sessions) as session:
        return reaper._claim(session, timedelta(0), 1000, retry)


def test_a_replica_relocked_after_a_failed_delete_is_deleted_then_copied_again(
    sessions, alice, disks, monkeypatch
):
    unwanted_copy_on_b(sessions, alice, "e1")
    real = storage.delete

    def broken(url, **kw):
        raise storage.StorageError("storage element down")

    monkeypatch.setattr(storage, "delete", broken)
    assert reaper.reap(sessions, timedelta(0)) == []
    monkeypatch.setattr(storage, "delete", real)
    with transaction(sessions) as session:  # wanted back: locked again, no tombstone
        rules.add(session, alice, "user.alice", "e1", "DISK-B")
    drain(sessions)  # its transfer waits for the deletion
    assert state(sessions, "e1")["DISK-B"] == ("unavailable", 1)
    assert [c.rse for c in reaper.reap(sessions, timedelta(0), retry=timedelta(0))] == ["DISK-B"]
    drain(sessions)
    assert state(sessions, "e1")["DISK-B"] == ("available", 1)
    assert [p.read_bytes() for p in disks["B"].rglob("e1")] == [b"e1" * 10]


def test_a_slow_reaper_leaves_alone_what_another_took_up_again(sessions, alice, disks, monkeypatch):
    unwanted_copy_on_b(sessions, alice, "d1")
    stamp_a, due_a = take_batch(sessions)  # reaper A claims, deletes the bytes, is slow
    storage.delete(due_a[0].url, options=due_a[0].options)
    with transaction(sessions) as session:  # the copy is wanted back meanwhile
        rules.add(session, alice, "user.alice", "d1", "DISK-B")
    real = storage.delete

    def delete(url, **kw):  # while reaper B deletes, A reports back and a worker runs
        if "/b/" in url:
            with transaction(sessions) as session:
                reaper._forget(session, due_a, stamp_a)
            drain(sessions)
            assert state(sessions, "d1")["DISK-B"] == ("unavailable", 1)  # still B's
        return real(url, **kw)

    monkeypatch.setattr(storage, "delete", delete)
    taken = reaper.reap(sessions, timedelta(0), retry=timedelta(0))  # B, after the retry time
    monkeypatch.undo()
    assert [c.rse for c in taken] == ["DISK-B"]
    drain(sessions)
    assert state(sessions, "d1")["DISK-B"] == ("available", 1)
    assert [p.read_bytes() for p in disks["B"].rglob("d1")] == [b"d1" * 10]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_reaper_cannot_claim_a_replica_a_rule_is_placing_a_lock_on(
    sessions, alice, disks, monkeypatch
):
    unwanted_copy_on_b(sessions, alice, "g1")
    real_free = quotas.free
    claimed = []

    def free(session, *args, **kwargs):  # between the rule's read of replicas and its lock
        if not claimed:
            claimed.append(take_batch(sessions)[1])
        return real_free(session, *args, **kwargs)

    monkeypatch.setattr(quotas, "free", free)
    with transaction(sessions) as session:
        rules.add(session, alice, "user.alice", "g1", "DISK-B")
    monkeypatch.undo()
    assert claimed == [[]]  # the replica was held: skipped
    assert reaper.reap(sessions, timedelta(0)) == []  # and now it is locked
    assert state(sessions, "g1")["DISK-B"] == ("available", 1)
    assert [p.read_bytes() for p in disks["B"].rglob("g1")] == [b"g1" * 10]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_reaper_cannot_claim_a_replica_an_upload_is_deciding_on(
    sessions, alice, disks, monkeypatch
):
    upload.upload(sessions, alice, "user.alice", "h1", "DISK-A", [b"h1" * 10])
    with transaction(sessions) as session:
        for rule, *_ in rule_views.list_rules(session, alice):
            rules.remove(session, alice, rule.id)
    real = rules.held_by
    claimed = []

    def held_by(session, *args):  # the upload has read the replica: same bytes are there
        if not claimed:
            claimed.append(take_batch(sessions)[1])
        return real(session, *args)

    monkeypatch.setattr(rules, "held_by", held_by)
    assert (
        upload.upload(sessions, alice, "user.alice", "h1", "DISK-A", [b"h1" * 10]).created is False
    )
    monkeypatch.undo()
    assert claimed == [[]]
    assert reaper.reap(sessions, timedelta(0)) == []
    assert state(sessions, "h1") == {"DISK-A": ("available", 1)}
    assert [p.read_bytes() for p in disks["A"].rglob("h1")] == [b"h1" * 10]
