"""Deletion: the reaper removes replicas no lock holds, storage first, catalogue second.

A replica becomes a candidate when its last lock goes (it gets a tombstone) and the
grace period has passed. A storage delete that fails leaves the row in place, so
the next round tries again: bytes are never forgotten.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from vre import bulk, policy
from vre.config import Settings
from vre.db import transaction, utcnow
from vre.errors import Conflict
from vre.identity.models import Account
from vre.lake import catalogue, rules, storage
from vre.lake.models import (
    COPYING,
    DID,
    FILE,
    RSE,
    UNAVAILABLE,
    Attachment,
    CollectionUpdate,
    Replica,
)
from vre.lake.rule_models import QUEUED, SUBMITTED, Lock, Rule, Transfer
from vre.leases import claimable

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    did_id: int
    rse_id: int
    did: str
    rse: str
    url: str
    bytes: int
    tombstone: str
    options: dict[str, Any]


def _due(grace: timedelta, retry: timedelta) -> Any:
    """A replica the reaper may take: no lock, tombstoned long enough, nothing writing it;
    or one whose deletion an earlier round began (``unavailable``) and left for ``retry``.

    While it is ``unavailable`` nothing revives it: an upload of the same file is refused,
    a rule that wants it back queues a transfer that waits, and after its bytes are gone
    the reaper hands such a replica to that transfer (``copying``)."""
    now = utcnow()
    fresh = and_(
        Replica.lock_count == 0,
        Replica.tombstone.is_not(None),
        Replica.tombstone <= now - grace,
        Replica.state.not_in((COPYING, UNAVAILABLE)),
        ~_transfer_active(),
    )
    left = and_(Replica.state == UNAVAILABLE, Replica.updated_at < now - retry)
    return or_(fresh, left)


RETRY = timedelta(seconds=Settings.model_fields["reaper_retry"].default)


def candidates(
    session: Session,
    grace: timedelta,
    limit: int = 1000,
    *,
    claim: bool = False,
    retry: timedelta = RETRY,
) -> list[Candidate]:
    """What is due, oldest tombstone first (``claim``: skipping rows another reaper holds)."""
    query = (
        select(Replica, DID.scope, DID.name, DID.bytes, RSE.name, RSE.prefix, RSE.options)
        .join(DID, DID.id == Replica.did_id)
        .join(RSE, RSE.id == Replica.rse_id)
        .where(_due(grace, retry))
        .order_by(Replica.tombstone.asc().nulls_first())
        .limit(limit)
    )
    if claim:
        query = claimable(session, query, of=Replica)
    return [
        Candidate(
            r.did_id,
            r.rse_id,
            f"{scope}:{name}",
            rse,
            storage.join(prefix, r.path),
            size or 0,
            r.tombstone.isoformat() if r.tombstone else "",  # re-locked while being deleted
            options or {},
        )
        for r, scope, name, size, rse, prefix, options in session.execute(query)
    ]


def _transfer_active() -> Any:
    """A queued or running transfer still writes to this replica: not the reaper's yet."""
    return (
        select(Transfer.id)
        .where(
            Transfer.did_id == Replica.did_id,
            Transfer.rse_id == Replica.rse_id,
            Transfer.state.in_((QUEUED, SUBMITTED)),
        )
        .exists()
    )


def preview(
    session: Session, actor: Account, grace: timedelta, *, retry: timedelta = RETRY
) -> list[Candidate]:
    """The dry run an admin asks for: what a reaper round would delete now."""
    policy.require(actor, "reaper.run", message="only an admin can look at the reaper's work")
    return candidates(session, grace, retry=retry)


def reap_now(
    factory: sessionmaker[Session], actor: Account, grace: timedelta, *, retry: timedelta = RETRY
) -> list[Candidate]:
    """One reaper round on an admin's request (the worker runs ``reap`` on its own)."""
    policy.require(actor, "reaper.run", message="only an admin can run the reaper")
    return reap(factory, grace, retry=retry)


def reap(
    factory: sessionmaker[Session],
    grace: timedelta,
    limit: int = 1000,
    *,
    retry: timedelta = RETRY,
) -> list[Candidate]:
    """Delete what is due; returns what was deleted.

    Three steps, storage outside every transaction: claim a batch (its replicas become
    ``unavailable``, committed before any byte goes: never a source again, and a rule
    that wants one back queues a fresh copy), delete the bytes, drop the rows. A crash
    or a failed delete leaves catalogued, unavailable replicas that a round takes up again
    after ``retry``. The claim's time stamps its rows: a round that took them up again
    (this one was too slow) owns them now, and this one neither deletes nor forgets them."""
    with transaction(factory) as session:
        stamp, due = _claim(session, grace, limit, retry)
    started = time.monotonic()
    deleted = []
    for item in due:
        if time.monotonic() - started > retry.total_seconds() / 2 and not _still_mine(
            factory, item, stamp
        ):
            continue
        try:
            storage.delete(item.url, options=item.options)
        except storage.StorageError as exc:
            log.warning("reaper: %s on %s stays for the next round: %s", item.did, item.rse, exc)
            continue
        deleted.append(item)
    if deleted:
        with transaction(factory) as session:
            _forget(session, deleted, stamp)
    return deleted


def _claim(
    session: Session, grace: timedelta, limit: int, retry: timedelta
) -> tuple[datetime, list[Candidate]]:
    found = candidates(session, grace, limit, claim=True, retry=retry)
    due = {(c.did_id, c.rse_id): c for c in found}
    stamp = utcnow()
    taken: list[Candidate] = []
    for pairs in bulk.chunks(list(due)):
        marked = session.execute(
            update(Replica)
            .where(tuple_(Replica.did_id, Replica.rse_id).in_(pairs), _due(grace, retry))
            .values(state=UNAVAILABLE, updated_at=stamp)
            .returning(Replica.did_id, Replica.rse_id),
            execution_options={"synchronize_session": False},
        )
        taken += [due[(d, r)] for d, r in marked]  # a rule locked the others meanwhile
    return stamp, taken


def _still_mine(factory: sessionmaker[Session], item: Candidate, stamp: datetime) -> bool:
    """A slow round looks again before each delete: is the deletion still its own?"""
    with transaction(factory) as session:
        found = session.scalar(
            select(Replica.did_id).where(
                Replica.did_id == item.did_id,
                Replica.rse_id == item.rse_id,
                Replica.state == UNAVAILABLE,
                Replica.updated_at == stamp,
            )
        )
    return found is not None


def _forget(session: Session, deleted: list[Candidate], stamp: datetime) -> None:
    """Drop the rows of replicas whose bytes went; one a rule locked since is handed to
    its queued transfer (``copying``): only now may bytes be written there again."""
    gone: set[int] = set()
    for pairs in bulk.chunks([(c.did_id, c.rse_id) for c in deleted]):
        mine = (
            tuple_(Replica.did_id, Replica.rse_id).in_(pairs),
            Replica.state == UNAVAILABLE,
            Replica.updated_at == stamp,
        )
        session.execute(
            update(Replica)
            .where(*mine, Replica.lock_count > 0)
            .values(state=COPYING, tombstone=None, updated_at=utcnow()),
            execution_options={"synchronize_session": False},
        )
        gone |= set(
            session.scalars(
                delete(Replica).where(*mine, Replica.lock_count == 0).returning(Replica.did_id),
                execution_options={"synchronize_session": False},
            )
        )
    for did_id in sorted(gone):
        _drop_if_last(session, did_id)


def _drop_if_last(session: Session, did_id: int) -> None:
    """An erased (obsolete) file goes from the catalogue with its last replica."""
    did = session.get(DID, did_id)
    if did is None or not did.obsolete:
        return
    left = session.scalar(select(func.count()).where(Replica.did_id == did_id))
    if not left:
        session.delete(did)


def erase(session: Session, actor: Account, scope: str, name: str, *, force: bool = False) -> str:
    """Delete a DID. With replicas (or content) it needs ``force``, and then the reaper
    removes the bytes: rules on it are deleted and it leaves every collection."""
    did = catalogue.writable(session, actor, scope, name)
    if did.type == FILE:
        count = session.scalar(select(func.count()).where(Replica.did_id == did.id)) or 0
        if count and not force:
            raise Conflict(
                f"{scope}:{name} has {count} replica(s): use --force to delete it and its"
                " replicas (the reaper removes the bytes)"
            )
    else:
        children = session.scalar(select(func.count()).where(Attachment.parent_id == did.id)) or 0
        if children and not force:
            raise Conflict(f"{scope}:{name} is not empty ({children} DIDs): use --force")
    for rule in session.scalars(select(Rule).where(Rule.did_id == did.id)):
        rules.release(session, rule)  # the scope's writer may drop every rule on its DIDs
        session.delete(rule)
    parents = list(
        session.scalars(select(Attachment.parent_id).where(Attachment.child_id == did.id))
    )
    session.execute(delete(Attachment).where(Attachment.child_id == did.id))
    session.add_all(CollectionUpdate(parent_id=p) for p in parents)
    if did.type != FILE:
        session.add(CollectionUpdate(parent_id=did.id))
        session.execute(delete(Attachment).where(Attachment.parent_id == did.id))
        session.delete(did)
        return "deleted"
    holders = session.scalars(
        select(Rule).join(Lock, Lock.rule_id == Rule.id).where(Lock.did_id == did.id).distinct()
    )
    for rule in list(holders):  # rules on collections above it let go of this file
        rules.release(session, rule, [did.id])
        rules.recount(session, [rule.id])
    did.obsolete = True
    session.execute(update(Replica).where(Replica.did_id == did.id).values(tombstone=utcnow()))
    if not session.scalar(select(func.count()).where(Replica.did_id == did.id)):
        session.delete(did)
        return "deleted"
    return "queued for the reaper"
