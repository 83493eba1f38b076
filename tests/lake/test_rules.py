"""Rules, transfers, quotas and the reaper against real storage, on SQLite and PostgreSQL.

The worker's own rounds run in-process (``Worker.transfer_batch`` and
``housekeeping``): the same code ``vre worker`` runs, without a subprocess.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.xrootd import XRootD
from vre.config import Settings
from vre.db import transaction, utcnow
from vre.errors import Forbidden, Invalid, NotFound, QuotaExceeded
from vre.identity.models import Account
from vre.lake import (
    catalogue,
    quotas,
    reaper,
    rses,
    rule_views,
    rules,
    scopes,
    storage,
    transfers,
    upload,
)
from vre.lake.models import AVAILABLE, BAD, DID, RSE, Replica
from vre.lake.rule_models import DONE, OK, REPLICATING, STUCK, Lock, Rule, Transfer, Usage
from vre.worker import Worker


@pytest.fixture
def lake(
    sessions: sessionmaker[Session],
    root: Account,
    alice: Account,
    tmp_path: Path,
    xrootd_server: XRootD,
) -> dict[str, Path]:
    """Three RSEs (two POSIX, one XRootD) and alice's scope."""
    dirs = {"A": tmp_path / "a", "B": tmp_path / "b"}
    with transaction(sessions) as session:
        rses.add(session, root, "DISK-A", dirs["A"].as_uri(), {"site": "ONE", "tier": "1"})
        rses.add(session, root, "DISK-B", dirs["B"].as_uri(), {"site": "TWO", "tier": "2"})
        rses.add(
            session,
            root,
            "XRD-C",
            f"{xrootd_server.url}/{tmp_path.name}",
            {"site": "TWO", "tier": "1"},
        )
        scopes.add(session, alice, "user.alice")
    dirs["C"] = xrootd_server.local(tmp_path.name)
    return dirs


def put(
    sessions: sessionmaker[Session],
    actor: Account,
    name: str,
    data: bytes,
    rse: str = "DISK-A",
    dataset: str | None = None,
) -> None:
    upload.upload(
        sessions,
        actor,
        "user.alice",
        name,
        rse,
        [data],
        dataset=("user.alice", dataset) if dataset else None,
    )


def drain(
    sessions: sessionmaker[Session], settings: Settings | None = None, rounds: int = 20
) -> None:
    """Run worker rounds until nothing is due."""
    worker = Worker(settings or Settings(reaper_grace=3600, transfer_lease=30))
    with ThreadPoolExecutor(4) as pool:
        for _ in range(rounds):
            worker.housekeeping(sessions)
            if not worker.transfer_batch(sessions, pool):
                break


def rule_state(sessions: sessionmaker[Session], rule_id: int) -> Rule:
    with transaction(sessions) as session:
        return session.get(Rule, rule_id)  # type: ignore[return-value]


def replica_states(sessions: sessionmaker[Session], name: str) -> dict[str, str]:
    with transaction(sessions) as session:
        rows = session.execute(
            select(RSE.name, Replica.state)
            .join(Replica, Replica.rse_id == RSE.id)
            .join(DID, DID.id == Replica.did_id)
            .where(DID.name == name)
        )
        return dict(rows.all())


def test_replicate_across_protocols(sessions, alice, lake) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(300_000)
    put(sessions, alice, "f1", data)
    with transaction(sessions) as session:
        rule = rules.add(session, alice, "user.alice", "f1", "DISK-B|XRD-C", copies=2)
        rule_id = rule.id
        assert rule.state == REPLICATING
    assert replica_states(sessions, "f1") == {
        "DISK-A": AVAILABLE,
        "DISK-B": "copying",
        "XRD-C": "copying",
    }
    drain(sessions)
    assert rule_state(sessions, rule_id).state == OK
    assert set(replica_states(sessions, "f1").values()) == {AVAILABLE}
    with transaction(sessions) as session:
        urls = {
            r.rse: r.url
            for r in __import__("vre.lake.replicas", fromlist=["x"])
            .list_for(session, alice, [("user.alice", "f1")])[0]
            .replicas
        }
    for url in urls.values():
        assert b"".join(storage.read(url)) == data


def test_replicate_file_to_webdav_to_s3(  # type: ignore[no-untyped-def]
    sessions, root, alice, lake, webdav_server, s3_server, tmp_path
) -> None:
    """Three protocols in a chain: POSIX → WebDAV (TLS) → S3."""
    with transaction(sessions) as session:
        rses.add(
            session,
            root,
            "DAV",
            f"{webdav_server.tls_url}/{tmp_path.name}",
            options={"verify": webdav_server.ca},
        )
        rses.add(session, root, "S3", f"{s3_server.url}/{tmp_path.name}", options=s3_server.options)
    data = os.urandom(123_456)
    put(sessions, alice, "chain", data)
    with transaction(sessions) as session:
        first = rules.add(session, alice, "user.alice", "chain", "DAV").id
    drain(sessions)
    with transaction(sessions) as session:  # only WebDAV may serve as source now
        rules.remove(
            session,
            alice,
            next(r for r, *_ in rule_views.list_rules(session, alice) if r.comment == "upload").id,
        )
    reaper.reap(sessions, timedelta(0))
    with transaction(sessions) as session:
        second = rules.add(session, alice, "user.alice", "chain", "S3").id
    drain(sessions)
    assert rule_state(sessions, first).state == OK
    assert rule_state(sessions, second).state == OK
    assert replica_states(sessions, "chain") == {"DAV": AVAILABLE, "S3": AVAILABLE}
    with transaction(sessions) as session:
        done = session.scalars(select(Transfer).order_by(Transfer.id)).all()
    assert [t.source for t in done] == ["DISK-A", "DAV"]
    (on_s3,) = s3_server.local(tmp_path.name).rglob("chain")
    assert on_s3.read_bytes() == data


def test_copies_two_prefers_rses_holding_the_file(sessions, alice, lake) -> None:  # type: ignore[no-untyped-def]
    put(sessions, alice, "f2", b"payload two", rse="XRD-C")
    with transaction(sessions) as session:
        rule = rules.add(session, alice, "user.alice", "f2", "tier=1", copies=2)
        locks = {r["rse"]: r["state"] for r in rule_views.locks_of(session, rule)}
    assert locks == {"XRD-C": OK, "DISK-A": REPLICATING}
    with transaction(sessions) as session:
        again = rules.add(session, alice, "user.alice", "f2", "site=TWO", copies=1)
        assert [r["rse"] for r in rule_views.locks_of(session, again)] == ["XRD-C"]
        assert again.state == OK
    with pytest.raises(Invalid, match="fewer than"), transaction(sessions) as session:
        rules.add(session, alice, "user.alice", "f2", "site=ONE", copies=2)


def test_rule_on_open_dataset_covers_files_added_later(sessions, alice, lake) -> None:  # type: ignore[no-untyped-def]
    put(sessions, alice, "d1", b"first", dataset="ds")
    with transaction(sessions) as session:
        rule_id = rules.add(session, alice, "user.alice", "ds", "DISK-B").id
    drain(sessions)
    put(sessions, alice, "d2", b"second", dataset="ds")
    put(sessions, alice, "d3", b"third")
    with transaction(sessions) as session:
        catalogue.attach(session, alice, "user.alice", "ds", [("user.alice", "d3")])
    drain(sessions)
    rule = rule_state(sessions, rule_id)
    assert (rule.state, rule.locks_ok) == (OK, 3)
    assert (lake["B"] / "user.alice").exists()
    with transaction(sessions) as session:
        catalogue.detach(session, alice, "user.alice", "ds", [("user.alice", "d3")])
    drain(sessions)
    rule = rule_state(sessions, rule_id)
    assert rule.locks_ok == 2
    with transaction(sessions) as session:
        d3 = session.execute(
            select(Replica.lock_count, Replica.tombstone)
            .join(DID, DID.id == Replica.did_id)
            .join(RSE, RSE.id == Replica.rse_id)
            .where(DID.name == "d3", RSE.name == "DISK-B")
        ).one()
    assert d3.lock_count == 0 and d3.tombstone is not None  # released: a reaper candidate


def test_lifetime_expiry_then_reaper(sessions, alice, root, lake) -> None:  # type: ignore[no-untyped-def]
    put(sessions, alice, "tmp1", b"short lived")
    with transaction(sessions) as session:
        rule_id = rules.add(session, alice, "user.alice", "tmp1", "DISK-B", lifetime=60).id
    drain(sessions)
    copy = next((lake["B"]).rglob("tmp1"))
    assert copy.read_bytes() == b"short lived"
    with transaction(sessions) as session:
        session.execute(
            update(Rule)
            .where(Rule.id == rule_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    drain(sessions, Settings(reaper_grace=0))
    with transaction(sessions) as session:
        assert session.get(Rule, rule_id) is None
    assert not copy.exists()
    assert replica_states(sessions, "tmp1") == {"DISK-A": AVAILABLE}  # the upload's rule holds it
    with transaction(sessions) as session:
        usage = session.scalar(
            select(func.sum(Usage.bytes))
            .join(RSE, RSE.id == Usage.rse_id)
            .where(RSE.name == "DISK-B")
        )
    assert usage == 0


def test_reaper_dry_run_and_delete_rule(sessions, alice, lake) -> None:  # type: ignore[no-untyped-def]
    put(sessions, alice, "r1", b"reap me")
    with transaction(sessions) as session:
        rule_id = rules.add(session, alice, "user.alice", "r1", "DISK-B").id
    drain(sessions)
    with transaction(sessions) as session:
        rules.remove(session, alice, rule_id)
    with transaction(sessions) as session:
        due = reaper.candidates(session, timedelta(0))
    assert [(c.did, c.rse) for c in due] == [("user.alice:r1", "DISK-B")]
    assert next(lake["B"].rglob("r1")).exists()  # a dry run deletes nothing
    gone = reaper.reap(sessions, timedelta(0))
    assert [c.rse for c in gone] == ["DISK-B"]
    assert not list(lake["B"].rglob("r1"))


def test_quota_refusal_names_rse_limit_and_usage(sessions, alice, root, lake) -> None:  # type: ignore[no-untyped-def]
    put(sessions, alice, "q1", b"x" * 1000)
    with transaction(sessions) as session:
        quotas.set_quota(session, root, "alice", "DISK-B", 1500)
        rules.add(session, alice, "user.alice", "q1", "DISK-B")
    put(sessions, alice, "q2", b"y" * 1000)
    with pytest.raises(QuotaExceeded) as refused, transaction(sessions) as session:
        rules.add(session, alice, "user.alice", "q2", "DISK-B")
    assert "DISK-B" in refused.value.message and "1500" in refused.value.message
    assert "1000 used" in refused.value.message
    with transaction(sessions) as session:
        shown = {q.rse: q for q in quotas.show(session, alice)}
        assert (shown["DISK-B"].limit, shown["DISK-B"].used) == (1500, 1000)
        assert session.scalar(select(func.count()).select_from(Rule)) == 3  # 2 uploads + 1
    with pytest.raises(Forbidden), transaction(sessions) as session:
        quotas.set_quota(session, alice, "alice", "DISK-B", 10**12)


def test_corrupted_source_is_marked_bad_and_another_source_used(sessions, alice, lake) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(50_000)
    put(sessions, alice, "c1", data, rse="DISK-A")
    with transaction(sessions) as session:
        rules.add(session, alice, "user.alice", "c1", "XRD-C")
    drain(sessions)
    on_a = next(lake["A"].rglob("c1"))
    on_a.write_bytes(b"corrupt!" + data[8:])
    with transaction(sessions) as session:
        rule_id = rules.add(session, alice, "user.alice", "c1", "DISK-B").id
        # DISK-A sorts first among sources: the worker must try it, find it bad, move on.
        session.execute(
            update(Replica)
            .where(Replica.rse_id == select(RSE.id).where(RSE.name == "XRD-C").scalar_subquery())
            .values(updated_at=Replica.updated_at)
        )
    worker = Worker(Settings())
    with ThreadPoolExecutor(2) as pool:
        worker.transfer_batch(sessions, pool)
    assert replica_states(sessions, "c1")["DISK-A"] == BAD
    assert next(lake["B"].rglob("c1")).read_bytes() == data
    drain(sessions)  # the bad replica is locked by the upload's rule: it gets repaired
    assert on_a.read_bytes() == data
    assert replica_states(sessions, "c1") == {
        "DISK-A": AVAILABLE,
        "DISK-B": AVAILABLE,
        "XRD-C": AVAILABLE,
    }
    assert rule_state(sessions, rule_id).state == OK
    with transaction(sessions) as session:
        errors = list(session.scalars(select(Transfer.last_error).where(Transfer.state == DONE)))
    assert all(e is None for e in errors)


def test_no_source_fails_with_retries_then_stuck(sessions, alice, lake) -> None:  # type: ignore[no-untyped-def]
    put(sessions, alice, "s1", b"lonely")
    next(lake["A"].rglob("s1")).unlink()  # the only copy is gone from disk
    with transaction(sessions) as session:
        rule_id = rules.add(session, alice, "user.alice", "s1", "DISK-B").id
    worker = Worker(Settings(transfer_attempts=3))
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            worker.transfer_batch(sessions, pool)
            with transaction(sessions) as session:  # skip the backoff wait
                session.execute(update(Transfer).values(next_attempt_at=utcnow()))
    rule = rule_state(sessions, rule_id)
    assert rule.state == STUCK and rule.locks_stuck == 1
    with transaction(sessions) as session:
        transfer = session.scalars(select(Transfer)).one()
    assert transfer.state == "failed" and transfer.attempts == 3  # VRE_TRANSFER_ATTEMPTS
    assert "missing" in (transfer.last_error or "")


def test_another_account_cannot_touch_my_rules_or_transfers(sessions, alice, bob, lake) -> None:  # type: ignore[no-untyped-def]
    put(sessions, alice, "p1", b"private")
    with transaction(sessions) as session:
        rule_id = rules.add(session, alice, "user.alice", "p1", "DISK-B").id
    with pytest.raises(NotFound), transaction(sessions) as session:
        rules.remove(session, bob, rule_id)
    with pytest.raises(NotFound), transaction(sessions) as session:
        rules.get(session, bob, rule_id)
    with transaction(sessions) as session:
        assert transfers.list_transfers(session, bob) == []
        assert rule_views.list_rules(session, bob) == []
        assert len(transfers.list_transfers(session, alice)) == 1
    with pytest.raises(Forbidden), transaction(sessions) as session:
        rules.add(session, bob, "user.alice", "p1", "DISK-B")
    with pytest.raises(Forbidden), transaction(sessions) as session:
        rules.add(session, bob, "user.alice", "p1", "DISK-B", account="alice")


def test_erase_needs_force_then_goes_through_the_reaper(sessions, alice, lake) -> None:  # type: ignore[no-untyped-def]
    from vre.errors import Conflict

    put(sessions, alice, "e1", b"erase me", dataset="eds")
    with transaction(sessions) as session:
        rules.add(session, alice, "user.alice", "eds", "DISK-B")
    drain(sessions)
    with pytest.raises(Conflict, match="--force"), transaction(sessions) as session:
        reaper.erase(session, alice, "user.alice", "e1")
    with transaction(sessions) as session:
        assert (
            reaper.erase(session, alice, "user.alice", "e1", force=True) == "queued for the reaper"
        )
    drain(sessions, Settings(reaper_grace=0))
    assert not list(lake["A"].rglob("e1")) and not list(lake["B"].rglob("e1"))
    with transaction(sessions) as session:
        assert session.scalar(select(DID).where(DID.name == "e1")) is None
        assert (
            session.scalar(
                select(func.count())
                .select_from(Lock)
                .join(DID, DID.id == Lock.did_id)
                .where(DID.name == "e1")
            )
            == 0
        )


def test_failed_storage_delete_is_retried_not_forgotten(  # type: ignore[no-untyped-def]
    sessions, alice, lake, monkeypatch
) -> None:
    put(sessions, alice, "k1", b"keep trying")
    with transaction(sessions) as session:
        rule_id = rules.add(session, alice, "user.alice", "k1", "DISK-B").id
    drain(sessions)
    with transaction(sessions) as session:
        rules.remove(session, alice, rule_id)
    real_delete = storage.delete

    def broken(url: str, **kwargs: object) -> None:
        raise storage.StorageError(f"deleting {url} failed: storage element is down")

    monkeypatch.setattr(storage, "delete", broken)
    assert reaper.reap(sessions, timedelta(0)) == []
    # Still catalogued (never forgotten), no longer offered as a source while it goes.
    assert replica_states(sessions, "k1") == {"DISK-A": AVAILABLE, "DISK-B": "unavailable"}
    assert next(lake["B"].rglob("k1")).exists()
    monkeypatch.setattr(storage, "delete", real_delete)
    assert reaper.reap(sessions, timedelta(0)) == []  # left to its reaper for a while ...
    again = reaper.reap(sessions, timedelta(0), retry=timedelta(0))  # ... VRE_REAPER_RETRY
    assert [c.rse for c in again] == ["DISK-B"]
    assert not list(lake["B"].rglob("k1"))
