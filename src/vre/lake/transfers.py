"""Transfers: claiming queued requests, copying bytes, and reporting back.

Claiming is one UPDATE whose first act is to take the rows (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL; SQLite serialises writers), stamping them with this worker
and a lease. A worker extends its leases while it copies; one that dies stops
extending, and after the lease runs out another worker takes the transfer over.
Bytes land under a temporary name and only the catalogue update makes a replica
``available``, so a killed worker never leaves an available replica half-written.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Table, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from vre import bulk, policy
from vre.db import transaction, utcnow
from vre.identity.models import Account
from vre.lake import catalogue, rules, storage
from vre.lake.models import AVAILABLE, BAD, DID, RSE, UNAVAILABLE, Replica
from vre.lake.names import deterministic_path
from vre.lake.rule_models import (
    DONE,
    FAILED,
    OK,
    QUEUED,
    REPLICATING,
    STUCK,
    SUBMITTED,
    Lock,
    Transfer,
)
from vre.leases import Lease

log = logging.getLogger(__name__)


@dataclass
class Source:
    rse_id: int
    rse: str
    url: str
    options: dict[str, Any]


@dataclass
class Job:
    id: int
    did_id: int
    rse_id: int
    did: str
    bytes: int
    adler32: str
    url: str
    options: dict[str, Any]
    attempts: int
    tag: str = ""  # this claim's temporary name: two claims never share a part file
    stale_tags: list[str] = field(default_factory=list)  # parts a dead worker left behind
    sources: list[Source] = field(default_factory=list)


@dataclass
class Outcome:
    job: Job
    done: bool
    source: str | None = None
    bytes: int = 0
    duration: float = 0.0
    error: str | None = None
    bad_sources: list[int] = field(default_factory=list)


class TransferTool(Protocol):
    """How bytes move; fsspec streaming today, third-party copy or FTS3 later."""

    def copy(self, job: Job) -> Outcome: ...


class StreamingTool:
    """Stream source → destination through fsspec, checking adler32 on the way."""

    def copy(self, job: Job) -> Outcome:
        try:
            return self._copy(job)
        except Exception as exc:  # an unexpected error fails this transfer, not the batch
            storage.discard_part(job.url, job.tag, options=job.options)
            return Outcome(job, False, error=f"{type(exc).__name__}: {exc}")

    def _copy(self, job: Job) -> Outcome:
        started = time.monotonic()
        if not job.sources:
            return Outcome(job, False, error="no available source replica")
        for stale in job.stale_tags:
            storage.discard_part(job.url, stale, options=job.options)
        copied = storage.copy_verified(
            job.sources,
            job.url,
            tag=job.tag,
            options=job.options,
            expected_bytes=job.bytes,
            expected_adler32=job.adler32,
        )
        bad = [source.rse_id for source in copied.mismatched]
        duration = time.monotonic() - started
        if copied.source is None or copied.stored is None:
            return Outcome(
                job, False, error="; ".join(copied.errors), bad_sources=bad, duration=duration
            )
        return Outcome(job, True, copied.source.rse, copied.stored.bytes, duration, bad_sources=bad)


def lease(worker: str, seconds: float) -> Lease:
    """A worker's lease on the transfers it copies (a finished one is no longer held)."""
    return Lease(Transfer, worker, seconds, held=Transfer.state == SUBMITTED)


def claim(session: Session, held: Lease, limit: int) -> list[Job]:
    """Take up to ``limit`` transfers that are due, or whose worker's lease ran out."""
    now = utcnow()
    being_reaped = (  # its bytes may still be deleted: the reaper hands it over after
        select(Replica.did_id)
        .where(
            Replica.did_id == Transfer.did_id,
            Replica.rse_id == Transfer.rse_id,
            Replica.state == UNAVAILABLE,
        )
        .exists()
    )
    due = and_(
        or_(
            and_(Transfer.state == QUEUED, Transfer.next_attempt_at <= now),
            and_(Transfer.state == SUBMITTED, Transfer.lease_until < now),
        ),
        ~being_reaped,
    )
    pick = select(Transfer.id).where(due).order_by(Transfer.id).limit(limit)
    orphaned = dict(
        session.execute(
            select(Transfer.id, Transfer.worker).where(
                Transfer.state == SUBMITTED, Transfer.lease_until < now
            )
        ).all()
    )
    ids = held.take(session, pick, state=SUBMITTED, updated_at=now)
    if not ids:
        return []
    rows = session.execute(
        select(Transfer, DID, RSE, Replica.path)
        .join(DID, DID.id == Transfer.did_id)
        .join(RSE, RSE.id == Transfer.rse_id)
        .outerjoin(
            Replica, and_(Replica.did_id == Transfer.did_id, Replica.rse_id == Transfer.rse_id)
        )
        .where(Transfer.id.in_(ids))
        .order_by(Transfer.id)
    ).all()
    jobs = [
        Job(
            id=t.id,
            did_id=d.id,
            rse_id=r.id,
            did=f"{d.scope}:{d.name}",
            bytes=d.bytes or 0,
            adler32=d.adler32 or "",
            url=storage.join(r.prefix, path or deterministic_path(d.scope, d.name)),
            options=dict(r.options or {}),
            attempts=t.attempts,
            tag=claim_tag(t.id, held.worker),
            stale_tags=[claim_tag(t.id, w) for w in [orphaned.get(t.id)] if w],
        )
        for t, d, r, path in rows
    ]
    _attach_sources(session, jobs)
    return jobs


def claim_tag(transfer_id: int, worker: str) -> str:
    return f"t{transfer_id}.{hashlib.sha1(worker.encode()).hexdigest()[:8]}"


def _attach_sources(session: Session, jobs: Sequence[Job]) -> None:
    by_did: dict[int, list[Job]] = {}
    for job in jobs:
        by_did.setdefault(job.did_id, []).append(job)
    if not by_did:
        return
    query = (
        select(Replica.did_id, RSE.id, RSE.name, RSE.prefix, RSE.options, Replica.path)
        .join(RSE, RSE.id == Replica.rse_id)
        .where(Replica.did_id.in_(list(by_did)), Replica.state == AVAILABLE)
        .order_by(RSE.name)
    )
    for did_id, rse_id, name, prefix, options, path in session.execute(query):
        for job in by_did[did_id]:
            if job.rse_id != rse_id:
                job.sources.append(Source(rse_id, name, storage.join(prefix, path), options or {}))


@dataclass(frozen=True)
class Retry:
    """How often a transfer is tried, and how long it waits between attempts."""

    attempts: int = 5
    backoff: float = 2.0  # seconds before the second attempt, doubled for each next one

    def delay(self, attempts: int) -> timedelta:
        return timedelta(seconds=self.backoff * 2 ** (attempts - 1))


def report(
    sessions: sessionmaker[Session], held: Lease, outcomes: Sequence[Outcome], retry: Retry
) -> None:
    """Report a batch in one transaction, then delete bytes that lost their replica.

    Storage is touched only after the commit: a slow or failing delete never holds the
    catalogue's locks, and bytes left by a failed delete are only an orphan file."""
    with transaction(sessions) as session:
        orphans = _finish(session, held, outcomes, retry)
    for job in orphans:
        try:
            storage.delete(job.url, options=job.options)
        except storage.StorageError as exc:
            log.warning("transfer %s: could not delete %s: %s", job.id, job.url, exc.message)


def _finish(session: Session, held: Lease, outcomes: Sequence[Outcome], retry: Retry) -> list[Job]:
    """Transfers, replicas, locks and rules of one batch; returns copies nobody wants.

    Done transfers (the common case) are reported in bulk: one statement per table and
    destination RSE, not per file. Failures take the slower path, one by one.
    """
    # A transfer whose lease ran out belongs to another worker now: not ours to report.
    # Renewing is the first statement: it takes the rows (PostgreSQL) or the write lock
    # (SQLite), so no other worker can take them over between this check and the report.
    ids = [o.job.id for o in outcomes]
    mine = set(ids) - held.renew(session, ids)
    done = [o for o in outcomes if o.done and o.job.id in mine]
    _mark_done(session, done)
    orphans, rule_ids = _place_copies(session, done)
    for out in outcomes:
        if not out.done and out.job.id in mine:
            rule_ids |= _mark_failed(session, out, retry)
        for rse_id in out.bad_sources:
            _declare_bad(session, out.job.did_id, rse_id)
            rule_ids |= _holders(session, out.job.did_id, rse_id)
    if rule_ids:
        rules.recount(session, sorted(rule_ids))
    return orphans


def _mark_done(session: Session, done: Sequence[Outcome]) -> None:
    if not done:
        return
    table = cast(Table, Transfer.__table__)
    session.execute(
        update(table)
        .where(table.c.id == bindparam("t_id"))
        .values(
            state=DONE,
            attempts=bindparam("t_attempts"),
            bytes=bindparam("t_bytes"),
            source=bindparam("t_source"),
            duration=bindparam("t_duration"),
            last_error=None,
            lease_until=None,
            updated_at=utcnow(),
        ),
        [
            {
                "t_id": o.job.id,
                "t_attempts": o.job.attempts + 1,
                "t_bytes": o.bytes,
                "t_source": o.source,
                "t_duration": o.duration,
            }
            for o in done
        ],
    )


def _place_copies(session: Session, done: Sequence[Outcome]) -> tuple[list[Job], set[int]]:
    """Copied replicas become available and their locks ok; returns the copies whose
    replica went while they were made (their bytes go after the commit) and the rules."""
    now = utcnow()
    rule_ids: set[int] = set()
    orphans: list[Job] = []
    by_rse: dict[int, list[int]] = {}
    jobs_at = {(o.job.did_id, o.job.rse_id): o.job for o in done}
    for out in done:
        by_rse.setdefault(out.job.rse_id, []).append(out.job.did_id)
    for rse_id, did_ids in by_rse.items():
        for chunk in bulk.chunks(did_ids):
            made = set(
                session.scalars(
                    update(Replica)
                    .where(Replica.rse_id == rse_id, Replica.did_id.in_(chunk))
                    .values(state=AVAILABLE, updated_at=now)
                    .returning(Replica.did_id)
                )
            )
            orphans += [jobs_at[(did_id, rse_id)] for did_id in set(chunk) - made]
            session.execute(
                update(Lock).where(Lock.rse_id == rse_id, Lock.did_id.in_(chunk)).values(state=OK)
            )
            rule_ids |= set(
                session.scalars(
                    select(Lock.rule_id)
                    .where(Lock.rse_id == rse_id, Lock.did_id.in_(chunk))
                    .distinct()
                )
            )
    return orphans, rule_ids


def _mark_failed(session: Session, out: Outcome, retry: Retry) -> set[int]:
    """Queue the transfer again after its back-off, or fail it for good (locks stuck)."""
    job, now = out.job, utcnow()
    attempts = job.attempts + 1
    final = attempts >= retry.attempts
    session.execute(
        update(Transfer)
        .where(Transfer.id == job.id)
        .values(
            state=FAILED if final else QUEUED,
            attempts=attempts,
            last_error=out.error,
            duration=out.duration,
            lease_until=None,
            updated_at=now,
            next_attempt_at=now + retry.delay(attempts),
        )
    )
    if not final:
        return set()
    _set_locks(session, job.did_id, job.rse_id, STUCK)
    return _holders(session, job.did_id, job.rse_id)


def _holders(session: Session, did_id: int, rse_id: int) -> set[int]:
    return set(
        session.scalars(select(Lock.rule_id).where(Lock.did_id == did_id, Lock.rse_id == rse_id))
    )


def _set_locks(session: Session, did_id: int, rse_id: int, state: str) -> None:
    session.execute(
        update(Lock).where(Lock.did_id == did_id, Lock.rse_id == rse_id).values(state=state)
    )


def _declare_bad(session: Session, did_id: int, rse_id: int) -> None:
    """A replica whose bytes do not match: never a source again; locked ones get repaired."""
    session.execute(
        update(Replica)
        .where(Replica.did_id == did_id, Replica.rse_id == rse_id)
        .values(state=BAD, updated_at=utcnow())
    )
    owner = session.scalar(
        select(Lock.rule_id).where(Lock.did_id == did_id, Lock.rse_id == rse_id).limit(1)
    )
    if owner is None:
        return
    _set_locks(session, did_id, rse_id, REPLICATING)
    rule = session.get(rules.Rule, owner)
    if rule is not None:
        rules.request_copies(session, rule, [(did_id, rse_id)])


@dataclass
class TransferView:
    id: int
    did: str
    rse: str
    state: str
    attempts: int
    source: str | None
    bytes: int
    duration: float | None
    rate_mb_s: float | None
    last_error: str | None
    created_at: str


def list_transfers(
    session: Session,
    actor: Account,
    *,
    state: str | None = None,
    rse: str | None = None,
    limit: int = 1000,
) -> list[TransferView]:
    query = (
        select(Transfer, DID.scope, DID.name, RSE.name)
        .join(DID, DID.id == Transfer.did_id)
        .join(RSE, RSE.id == Transfer.rse_id)
    )
    query = policy.visible_to(query, actor, Transfer.account_id, "transfer.list_all")
    if state:
        query = query.where(Transfer.state == state)
    if rse:
        query = query.where(RSE.name == rse)
    views = []
    seen = catalogue.rights(session, actor)  # a transfer names its file: only readable ones
    for t, scope, name, rse_name in session.execute(
        query.order_by(Transfer.id.desc()).limit(limit)
    ):
        if not seen(scope):
            continue
        rate = t.bytes / t.duration / 1e6 if t.duration and t.bytes else None
        views.append(
            TransferView(
                t.id,
                f"{scope}:{name}",
                rse_name,
                t.state,
                t.attempts,
                t.source,
                t.bytes,
                t.duration,
                rate,
                t.last_error,
                t.created_at.isoformat(),
            )
        )
    return views
