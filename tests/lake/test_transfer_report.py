"""A worker whose transfer lease ran out reports only what it still holds, atomically."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from vre import leases
from vre.db import transaction, utcnow
from vre.identity.models import Account
from vre.lake import rses, rules, scopes, transfers, upload
from vre.lake.rule_models import Transfer


def test_no_takeover_between_the_lease_check_and_the_report(
    sessions: sessionmaker[Session],
    root: Account,
    alice: Account,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with transaction(sessions) as session:
        rses.add(session, root, "DISK-A", (tmp_path / "a").as_uri())
        rses.add(session, root, "DISK-B", (tmp_path / "b").as_uri())
        scopes.add(session, alice, "user.alice")
    upload.upload(sessions, alice, "user.alice", "f", "DISK-A", [b"f" * 100])
    with transaction(sessions) as session:
        rules.add(session, alice, "user.alice", "f", "DISK-B")
    a, b = transfers.lease("A", 60), transfers.lease("B", 60)
    with transaction(sessions) as session:
        jobs = transfers.claim(session, a, 10)
    outcomes = [transfers.StreamingTool().copy(j) for j in jobs]
    with transaction(sessions) as session:  # A was slow, but its lease has not run out
        session.execute(update(Transfer).values(lease_until=utcnow() + timedelta(seconds=1)))
    real = leases.Lease.renew
    taken: list[int] = []
    rival: list[threading.Thread] = []

    def renew(self: leases.Lease, session: Session, ids: Any) -> set[int]:
        lost = real(self, session, ids)
        if self.worker == "A" and not rival:  # ... it runs out now; B tries to take it over

            def take_over() -> None:
                with transaction(sessions) as s:
                    s.execute(update(Transfer).values(lease_until=utcnow() - timedelta(seconds=1)))
                    taken.extend(j.id for j in transfers.claim(s, b, 10))

            rival.append(threading.Thread(target=take_over))
            rival[0].start()
            rival[0].join(0.5)  # blocked (row lock or SQLite's write lock) until A commits
        return lost

    monkeypatch.setattr(leases.Lease, "renew", renew)
    transfers.report(sessions, a, outcomes, transfers.Retry())
    rival[0].join(30)
    with transaction(sessions) as session:
        row = session.scalars(select(Transfer)).one()
    assert (row.state, row.worker, taken) == ("done", "A", [])
