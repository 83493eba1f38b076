"""Figures for monitoring, read from the database at scrape time.

The state lives in the database, not in a process, so any server answers for
every worker: queue sizes, transfer volume, failures, durations, rule states.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from vre import policy
from vre.identity.models import Account
from vre.lake.models import Replica
from vre.lake.rule_models import (
    DONE,
    FAILED,
    OK,
    QUEUED,
    REPLICATING,
    STUCK,
    SUBMITTED,
    Rule,
    Transfer,
)

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0)


@dataclass
class Snapshot:
    transfers_by_state: dict[str, int] = field(default_factory=dict)
    transfer_bytes: int = 0
    transfer_failures: int = 0
    duration_buckets: list[tuple[float, int]] = field(default_factory=list)
    duration_count: int = 0
    duration_sum: float = 0.0
    rules_by_state: dict[str, int] = field(default_factory=dict)
    replicas_by_state: dict[str, int] = field(default_factory=dict)


def snapshot(session: Session, actor: Account) -> Snapshot:
    policy.require(actor, "metrics.read", message="only an admin can read the metrics")
    snap = Snapshot()
    counts = dict(
        session.execute(select(Transfer.state, func.count()).group_by(Transfer.state)).all()
    )
    snap.transfers_by_state = {s: counts.get(s, 0) for s in (QUEUED, SUBMITTED, DONE, FAILED)}
    done = Transfer.state == DONE
    snap.transfer_bytes = (
        session.scalar(select(func.coalesce(func.sum(Transfer.bytes), 0)).where(done)) or 0
    )
    attempts = session.scalar(select(func.coalesce(func.sum(Transfer.attempts), 0))) or 0
    snap.transfer_failures = int(attempts) - counts.get(DONE, 0)  # every attempt not ending done
    snap.duration_count = counts.get(DONE, 0)
    snap.duration_sum = float(
        session.scalar(select(func.coalesce(func.sum(Transfer.duration), 0.0)).where(done)) or 0.0
    )
    counts_le = session.execute(
        select(
            *[func.sum(case((Transfer.duration <= b, 1), else_=0)) for b in DURATION_BUCKETS]
        ).where(done)
    ).one()
    snap.duration_buckets = [
        (b, int(c or 0)) for b, c in zip(DURATION_BUCKETS, counts_le, strict=True)
    ]
    rules = dict(session.execute(select(Rule.state, func.count()).group_by(Rule.state)).all())
    snap.rules_by_state = {s: rules.get(s, 0) for s in (OK, REPLICATING, STUCK)}
    snap.replicas_by_state = dict(
        session.execute(select(Replica.state, func.count()).group_by(Replica.state)).all()
    )
    return snap
