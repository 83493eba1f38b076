"""Rules created at the same instant, with real concurrency on PostgreSQL.

Two transactions run side by side on their own connections. The window between
"read what exists" and "write what is missing" is widened by slowing the quota read
(the edge between those two steps), so without serialisation both would read before
either writes: the same copy queued twice, or two rules passing one quota check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from vre.db import transaction
from vre.errors import QuotaExceeded
from vre.identity.models import Account
from vre.lake import quotas, rses, rules, scopes, upload
from vre.lake.models import Replica
from vre.lake.rule_models import Transfer, Usage

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@pytest.fixture
def two_disks(
    sessions: sessionmaker[Session], root: Account, alice: Account, tmp_path: Path
) -> None:
    with transaction(sessions) as session:
        rses.add(session, root, "DISK-A", (tmp_path / "a").as_uri())
        rses.add(session, root, "DISK-B", (tmp_path / "b").as_uri())
        scopes.add(session, alice, "user.alice", public=True)
    for name in ("f1", "f2"):
        upload.upload(sessions, alice, "user.alice", name, "DISK-A", [b"x" * 1000])


@pytest.fixture
def slow_quota_read(monkeypatch: pytest.MonkeyPatch) -> None:
    real = quotas.free

    def slow(*args: Any, **kwargs: Any) -> dict[int, float]:
        answer = real(*args, **kwargs)
        time.sleep(0.5)  # both transactions are now between their reads and their writes
        return answer

    monkeypatch.setattr(quotas, "free", slow)


def side_by_side(sessions: sessionmaker[Session], *calls: Callable[[Session], Any]) -> list[Any]:
    """Run each call in its own transaction on its own thread, started together."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def one(i: int, call: Callable[[Session], Any]) -> None:
        start.wait()
        try:
            with transaction(sessions) as session:
                call(session)
            results[i] = "ok"
        except Exception as exc:  # the outcome is what the test looks at
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_two_rules_at_once_queue_one_copy(
    sessions: sessionmaker[Session],
    alice: Account,
    bob: Account,
    two_disks: None,
    slow_quota_read: None,
) -> None:
    results = side_by_side(
        sessions,
        lambda s: rules.add(s, alice, "user.alice", "f1", "DISK-B"),
        lambda s: rules.add(s, bob, "user.alice", "f1", "DISK-B"),
    )
    assert results == ["ok", "ok"], results
    with transaction(sessions) as session:
        assert session.scalar(select(func.count()).select_from(Transfer)) == 1
        replica = session.scalars(select(Replica).where(Replica.rse_id == 2)).one()
        assert replica.lock_count == 2  # both rules hold the one copy


def test_two_rules_at_once_cannot_both_pass_one_quota(
    sessions: sessionmaker[Session],
    root: Account,
    alice: Account,
    two_disks: None,
    slow_quota_read: None,
) -> None:
    with transaction(sessions) as session:
        quotas.set_quota(session, root, "alice", "DISK-B", 1500)  # room for one file
    results = side_by_side(
        sessions,
        lambda s: rules.add(s, alice, "user.alice", "f1", "DISK-B"),
        lambda s: rules.add(s, alice, "user.alice", "f2", "DISK-B"),
    )
    assert sorted(map(type, results), key=str) == sorted([str, QuotaExceeded], key=str), results
    with transaction(sessions) as session:
        used = session.scalars(select(Usage).where(Usage.rse_id == 2)).one()
    assert (used.bytes, used.files) == (1000, 1)


def test_usage_rows_are_created_by_concurrent_writers_without_collision(
    sessions: sessionmaker[Session], alice: Account, two_disks: None
) -> None:
    """The first usage row of an account on an RSE, written by two transactions at once."""
    barrier = threading.Barrier(2)

    def add(session: Session) -> None:
        barrier.wait()
        quotas.add_usage(session, alice.id, {2: (10, 1)})
        time.sleep(0.2)

    assert side_by_side(sessions, add, add) == ["ok", "ok"]
    with transaction(sessions) as session:
        used = session.scalars(select(Usage).where(Usage.rse_id == 2)).one()
    assert (used.bytes, used.files) == (20, 2)
