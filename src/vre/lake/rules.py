"""Replication rules: "keep N copies of this DID on RSEs matching EXPR (until T)".

A rule holds one lock per (file, RSE) it chose. A lock on an available replica is
``ok``; otherwise a transfer is queued and the lock is ``replicating`` until the
worker reports back (``stuck`` when it gave up). Evaluation is idempotent: it adds
locks for files the rule covers but does not lock yet and releases locks of files
it no longer covers, so attach, detach and crashes all heal by evaluating again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from vre import bulk, policy
from vre.db import take_write_lock, utcnow
from vre.errors import Invalid, NotFound, VREError
from vre.identity import accounts
from vre.identity.models import Account
from vre.lake import catalogue, quotas, rses
from vre.lake.models import (
    AVAILABLE,
    BAD,
    COPYING,
    DID,
    RSE,
    UNAVAILABLE,
    CollectionUpdate,
    Replica,
)
from vre.lake.names import deterministic_path
from vre.lake.rule_models import OK, QUEUED, REPLICATING, STUCK, SUBMITTED, Lock, Rule, Transfer
from vre.leases import claimable

MAX_COPIES = 10
MAX_LIFETIME = 100 * 365.25 * 86400.0  # a century, in seconds: beyond it, no expiry means it


def add(
    session: Session,
    actor: Account,
    scope: str,
    name: str,
    expression: str,
    *,
    copies: int = 1,
    lifetime: float | None = None,
    account: str | None = None,
    comment: str = "",
) -> Rule:
    """Create a rule and its locks now; a rule that would exceed a quota is refused."""
    owner = accounts.get(session, account) if account else actor
    if owner.id != actor.id:
        policy.require(
            actor,
            "rule.create_for_other",
            message="only an admin can create a rule for another account",
        )
    did = catalogue.readable(session, actor, scope, name)
    if not 1 <= copies <= MAX_COPIES:
        raise Invalid(f"copies must be between 1 and {MAX_COPIES}")
    if lifetime is not None and not 0 < lifetime <= MAX_LIFETIME:  # NaN fails too
        raise Invalid(
            f"lifetime must be a positive number of seconds, at most {MAX_LIFETIME:.0f}"
            " (a century); leave it out for a rule that never expires"
        )
    selected = rses.resolve(session, expression)
    if len(selected) < copies:
        raise Invalid(
            f"RSE expression {expression!r} selects {len(selected)} RSE(s), fewer than"
            f" the {copies} copies asked for"
        )
    rule = Rule(
        did_id=did.id,
        account_id=owner.id,
        rse_expression=expression,
        copies=copies,
        comment=comment[:512],
        expires_at=utcnow() + timedelta(seconds=lifetime) if lifetime else None,
    )
    session.add(rule)
    session.flush()
    evaluate(session, rule, refuse_over_quota=True)
    return rule


def _rse_ids(session: Session, expression: str) -> list[int]:
    names = rses.resolve(session, expression)
    return list(session.scalars(select(RSE.id).where(RSE.name.in_(names)).order_by(RSE.name)))


def evaluate(session: Session, rule: Rule, *, refuse_over_quota: bool = False) -> None:
    """Bring the rule's locks in line with the files its DID covers today."""
    did = session.get(DID, rule.did_id)
    owner = session.get(Account, rule.account_id)
    # A rule covers what its owner may read: a private file in a public dataset is not
    # copied, locked or shown for another account (and is let go if it became private).
    files = catalogue.files_for(session, owner, [did]) if did and owner else []
    sizes = {f.id: f.bytes or 0 for f in files}
    locked: dict[int, list[int]] = defaultdict(list)
    for did_id, rse_id in session.execute(
        select(Lock.did_id, Lock.rse_id).where(Lock.rule_id == rule.id)
    ):
        locked[did_id].append(rse_id)
    gone = [d for d in locked if d not in sizes]
    if gone:
        release(session, rule, gone)
    new = [f for f in sizes if f not in locked]
    rule.error = None
    if new:
        try:
            _lock(session, rule, new, sizes)
        except VREError as exc:  # later files that do not fit: the rule is stuck, says why
            if refuse_over_quota:
                raise
            rule.error = exc.message
            rule.state = STUCK
            return
    recount(session, [rule.id])


def _hold_rses(session: Session, rse_ids: list[int]) -> None:
    """Serialise lock placement per RSE (PostgreSQL row locks, in id order).

    Two rules placed at the same instant would otherwise both see no copy and queue the
    same one twice, or both pass one quota check; the second now waits for the first to
    commit and then reads what it did. ``FOR NO KEY UPDATE``: inserting a replica, lock or
    transfer that refers to the RSE (a foreign-key check, ``FOR KEY SHARE``) never waits
    for it, nor it for them. A transaction that places locks for several rules takes all
    their RSEs first (``_hold_rses_of``), so two transactions always lock in one order.
    SQLite serialises writers: callers make their transaction a writer before reading."""
    quotas.hold(session, rse_ids)


def _hold_rses_of(session: Session, placing: Sequence[Rule]) -> None:
    wanted: set[int] = set()
    for expression in {r.rse_expression for r in placing}:
        wanted |= set(_rse_ids(session, expression))
    if wanted:
        _hold_rses(session, sorted(wanted))


def _lock(session: Session, rule: Rule, file_ids: list[int], sizes: dict[int, int]) -> None:
    candidates = _rse_ids(session, rule.rse_expression)
    if len(candidates) < rule.copies:
        raise Invalid(f"rule {rule.id}: {rule.rse_expression!r} selects too few RSEs")
    _hold_rses(session, candidates)
    # The replicas are read locked (PostgreSQL): the reaper cannot claim one between this
    # read and the lock placed on it, nor may it hold one we are about to count on.
    present: dict[tuple[int, int], str] = {}
    for chunk in bulk.chunks(file_ids):
        query = select(Replica.did_id, Replica.rse_id, Replica.state).where(
            Replica.did_id.in_(chunk), Replica.rse_id.in_(candidates)
        )
        for did_id, rse_id, state in session.execute(query.with_for_update(key_share=True)):
            present[(did_id, rse_id)] = state
    room = quotas.free(session, rule.account_id, candidates)
    order = {rse_id: i for i, rse_id in enumerate(candidates)}
    rank = {AVAILABLE: 0, COPYING: 1}
    chosen: list[tuple[int, int]] = []
    for did_id in file_ids:
        best = sorted(
            candidates,
            key=lambda r: (rank.get(present.get((did_id, r), ""), 2), -room[r], order[r]),
        )[: rule.copies]
        for rse_id in best:
            room[rse_id] -= sizes[did_id]
            chosen.append((did_id, rse_id))
    usage = quotas.tally((r, sizes[d]) for d, r in chosen)
    quotas.charge(session, rule.account_id, usage)
    bulk.insert_rows(
        session,
        Lock.__table__,
        [
            {
                "rule_id": rule.id,
                "did_id": d,
                "rse_id": r,
                "state": OK if present.get((d, r)) == AVAILABLE else REPLICATING,
                "bytes": sizes[d],
            }
            for d, r in chosen
        ],
    )
    _hold(session, [(d, r) for d, r in chosen if (d, r) in present], +1)
    request_copies(session, rule, [(d, r) for d, r in chosen if present.get((d, r)) != AVAILABLE])


def _by_rse(pairs: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = defaultdict(list)
    for did_id, rse_id in pairs:
        grouped[rse_id].append(did_id)
    return grouped


def _hold(session: Session, pairs: Sequence[tuple[int, int]], step: int) -> None:
    """Move replica lock counts; a replica no lock holds gets its tombstone (reaper)."""
    now = utcnow()
    for rse_id, did_ids in _by_rse(pairs).items():
        for chunk in bulk.chunks(did_ids):
            where = (Replica.rse_id == rse_id, Replica.did_id.in_(chunk))
            values: dict[str, Any] = {"lock_count": Replica.lock_count + step}
            if step > 0:
                values["tombstone"] = None
            session.execute(update(Replica).where(*where).values(**values))
            if step < 0:
                session.execute(
                    update(Replica)
                    .where(*where, Replica.lock_count <= 0)
                    .values(lock_count=0, tombstone=now)
                )
                unheld = select(Replica.did_id).where(*where, Replica.lock_count == 0)
                session.execute(  # nobody wants these copies any more
                    delete(Transfer).where(
                        Transfer.rse_id == rse_id,
                        Transfer.did_id.in_(unheld.scalar_subquery()),
                        Transfer.state == QUEUED,
                    )
                )
                running = (
                    select(Transfer.id)
                    .where(
                        Transfer.did_id == Replica.did_id,
                        Transfer.rse_id == Replica.rse_id,
                        Transfer.state == SUBMITTED,
                    )
                    .exists()
                )
                session.execute(  # a copy never started has no bytes: the row just goes
                    delete(Replica).where(
                        *where, Replica.lock_count == 0, Replica.state == COPYING, ~running
                    )
                )


def _replicas_and_transfers(
    session: Session, pairs: Sequence[tuple[int, int]]
) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """Which (file, RSE) pairs have a replica row already, and which a transfer in flight."""
    existing: set[tuple[int, int]] = set()
    active: set[tuple[int, int]] = set()
    for rse_id, did_ids in _by_rse(pairs).items():
        for chunk in bulk.chunks(did_ids):
            existing |= {
                (d, rse_id)
                for d in session.scalars(
                    select(Replica.did_id).where(
                        Replica.rse_id == rse_id, Replica.did_id.in_(chunk)
                    )
                )
            }
            active |= {
                (d, rse_id)
                for d in session.scalars(
                    select(Transfer.did_id).where(
                        Transfer.rse_id == rse_id,
                        Transfer.did_id.in_(chunk),
                        Transfer.state.in_((QUEUED, SUBMITTED)),
                    )
                )
            }
    return existing, active


def request_copies(session: Session, rule: Rule, pairs: Sequence[tuple[int, int]]) -> None:
    """Copying replicas and queued transfers for the locks that need bytes moved."""
    if not pairs:
        return
    now = utcnow()
    wanted = sorted({d for d, _ in pairs})
    names: dict[int, tuple[str, str]] = {}
    for chunk in bulk.chunks(wanted):
        query = select(DID.id, DID.scope, DID.name).where(DID.id.in_(chunk))
        names.update({i: (sc, n) for i, sc, n in session.execute(query)})
    existing, active = _replicas_and_transfers(session, pairs)
    bulk.insert_rows(
        session,
        Replica.__table__,
        [
            {
                "did_id": d,
                "rse_id": r,
                "state": COPYING,
                "path": deterministic_path(*names[d]),
                "lock_count": 1,
                "tombstone": None,
                "created_at": now,
                "updated_at": now,
            }
            for d, r in pairs
            if (d, r) not in existing
        ],
    )
    for rse_id, did_ids in _by_rse([p for p in pairs if p in existing]).items():
        for chunk in bulk.chunks(did_ids):
            session.execute(
                update(Replica)
                .where(
                    Replica.rse_id == rse_id,
                    Replica.did_id.in_(chunk),
                    # bad stays visible until repaired; unavailable is being deleted: the
                    # reaper hands it to the queued transfer once its bytes are gone
                    Replica.state.not_in((COPYING, BAD, UNAVAILABLE)),
                )
                .values(state=COPYING, updated_at=now)
            )
    bulk.insert_rows(
        session,
        Transfer.__table__,
        [
            {
                "did_id": d,
                "rse_id": r,
                "account_id": rule.account_id,
                "state": QUEUED,
                "attempts": 0,
                "bytes": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for d, r in pairs
            if (d, r) not in active
        ],
    )


def release(session: Session, rule: Rule, file_ids: Sequence[int] | None = None) -> None:
    """Drop the rule's locks (all, or on these files) and give back their usage.

    Usage and replica counts move by what the DELETE really removed (RETURNING), so two
    releases racing each other cannot give the same lock back twice.
    """
    statement = delete(Lock).where(Lock.rule_id == rule.id)
    returning = (Lock.did_id, Lock.rse_id, Lock.bytes)
    if file_ids is None:
        rows = list(session.execute(statement.returning(*returning)))
    else:
        rows = [
            row
            for chunk in bulk.chunks(list(file_ids))
            for row in session.execute(
                statement.where(Lock.did_id.in_(chunk)).returning(*returning)
            )
        ]
    if not rows:
        return
    quotas.add_usage(
        session,
        rule.account_id,
        {r: (-b, -f) for r, (b, f) in quotas.tally((r, b) for _, r, b in rows).items()},
    )
    _hold(session, [(d, r) for d, r, _ in rows], -1)


def recount(session: Session, rule_ids: Sequence[int]) -> None:
    """Rule state from its lock states: stuck beats replicating beats ok.

    The rule rows are locked first (in id order): two workers finishing batches of the
    same rule at once then count one after the other, never from the same stale view.
    """
    session.execute(
        select(Rule.id).where(Rule.id.in_(list(rule_ids))).order_by(Rule.id).with_for_update()
    )
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for rule_id, state, count in session.execute(
        select(Lock.rule_id, Lock.state, func.count())
        .where(Lock.rule_id.in_(list(rule_ids)))
        .group_by(Lock.rule_id, Lock.state)
    ):
        counts[rule_id][state] = count
    erred = set(
        session.scalars(select(Rule.id).where(Rule.id.in_(list(rule_ids)), Rule.error.is_not(None)))
    )  # files the rule could not lock (quota): stuck until an evaluation succeeds
    now = utcnow()
    for rule_id in rule_ids:
        c = counts.get(rule_id, {})
        state = (
            STUCK if c.get(STUCK) or rule_id in erred else REPLICATING if c.get(REPLICATING) else OK
        )
        session.execute(
            update(Rule)
            .where(Rule.id == rule_id)
            .values(
                state=state,
                locks_ok=c.get(OK, 0),
                locks_replicating=c.get(REPLICATING, 0),
                locks_stuck=c.get(STUCK, 0),
                updated_at=now,
            )
        )


def get(session: Session, actor: Account, rule_id: int, action: str = "rule.read") -> Rule:
    rule = session.get(Rule, rule_id)
    missing = f"rule {rule_id} does not exist"
    if rule is None:
        raise NotFound(missing)
    policy.require(actor, action, owner_id=rule.account_id, missing=missing)
    return rule


def _take(session: Session, rule_id: int) -> Rule | None:
    """The rule row, locked (PostgreSQL) and fresh, or None if another caller deleted it."""
    session.expire_all()
    return session.scalar(select(Rule).where(Rule.id == rule_id).with_for_update())


def remove(session: Session, actor: Account, rule_id: int) -> None:
    """Delete a rule: its locks go, and replicas no lock holds become reaper candidates."""
    get(session, actor, rule_id, "rule.delete")
    rule = _take(session, rule_id)
    if rule is None:
        return
    release(session, rule)
    session.delete(rule)


def held_by(session: Session, actor: Account, did_id: int, rse_id: int) -> bool:
    """Whether one of the actor's rules already locks this file on this RSE."""
    query = (
        select(Lock.rule_id)
        .join(Rule, Rule.id == Lock.rule_id)
        .where(Lock.did_id == did_id, Lock.rse_id == rse_id, Rule.account_id == actor.id)
        .limit(1)
    )
    return session.scalar(query) is not None


def expire(session: Session) -> int:
    """Delete rules whose lifetime has passed."""
    expired = list(session.scalars(select(Rule.id).where(Rule.expires_at < utcnow())))
    done = 0
    for rule_id in expired:
        rule = _take(session, rule_id)
        if rule is not None:
            release(session, rule)
            session.delete(rule)
            done += 1
    return done


def retry_stuck(session: Session) -> int:
    """Evaluate again the rules that could not lock every file (a quota may have grown)."""
    take_write_lock(session)
    stuck_rules = select(Rule).where(Rule.error.is_not(None)).order_by(Rule.id)
    stuck = list(session.scalars(stuck_rules.with_for_update()))
    _hold_rses_of(session, stuck)
    for rule in stuck:
        evaluate(session, rule)
    return len(stuck)


def covering(session: Session, did_ids: Iterable[int]) -> list[Rule]:
    """Rules on these DIDs or on any collection above them (locked for evaluation)."""
    ids = set(did_ids)
    for did_id in list(ids):
        ids |= catalogue.ancestors(session, did_id)
    query = select(Rule).where(Rule.did_id.in_(ids)).order_by(Rule.id)
    return list(session.scalars(query.with_for_update()))


def process_updates(session: Session, limit: int = 500) -> int:
    """Evaluate the rules over collections whose content changed; returns updates done."""
    take_write_lock(session)
    pick = select(CollectionUpdate).order_by(CollectionUpdate.id).limit(limit)
    updates = list(session.scalars(claimable(session, pick)))
    if not updates:
        return 0
    placing = covering(session, {u.parent_id for u in updates})
    _hold_rses_of(session, placing)
    for rule in placing:
        evaluate(session, rule)
    session.execute(
        delete(CollectionUpdate).where(CollectionUpdate.id.in_([u.id for u in updates]))
    )
    return len(updates)
