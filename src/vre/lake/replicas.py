"""Replicas: which storage element holds which file, registered and listed in bulk.

The hot paths here run one query per batch, never one per file: registering
10,000 files is a handful of multi-row INSERTs in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from vre import bulk
from vre.db import utcnow
from vre.errors import Conflict, Forbidden, Invalid, NotFound
from vre.identity.models import Account
from vre.lake import catalogue, meta, quotas, rses, scopes, storage
from vre.lake.checksums import check_adler32, check_md5
from vre.lake.models import AVAILABLE, DID, FILE, RSE, DIDMeta, Replica
from vre.lake.names import check_name, check_scope, deterministic_path
from vre.lake.rule_models import OK, Lock, Rule


@dataclass
class FileEntry:
    scope: str
    name: str
    bytes: int
    adler32: str
    md5: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _check_entry(entry: FileEntry) -> None:
    check_scope(entry.scope)
    check_name(entry.name)
    if entry.bytes < 0:
        raise Invalid(f"{entry.scope}:{entry.name}: bytes must not be negative")
    entry.adler32 = check_adler32(entry.adler32) or ""
    entry.md5 = check_md5(entry.md5)
    meta.check(entry.meta)


def same_content(did: DID | Row[Any], size: int, adler32: str, md5: str | None) -> bool:
    return (
        did.bytes == size
        and did.adler32 == adler32
        and (md5 is None or did.md5 is None or did.md5 == md5)
    )


def register(
    session: Session,
    actor: Account,
    rse_name: str,
    files: Sequence[FileEntry],
    *,
    dataset: tuple[str, str] | None = None,
) -> dict[str, int]:
    """Declare files already stored on an RSE at their deterministic paths.

    New DIDs are created, existing ones must have the same size and checksum; replicas
    already known are kept; everything is optionally attached to ``dataset``. Each new
    replica is held by a rule of the registrant, charged to its quota on the RSE like an
    upload's: a batch that does not fit is refused whole, and nothing is recorded.
    """
    if not files:
        raise Invalid("no files given")
    for entry in files:
        _check_entry(entry)
    keys = [(f.scope, f.name) for f in files]
    if len(set(keys)) != len(keys):
        raise Invalid("the same DID is listed twice")
    scopes.require_writable(session, actor, {f.scope for f in files})
    rse = rses.get(session, rse_name)
    existing = catalogue.find_many(session, keys)
    _check_existing(files, existing)
    known = _replicas_on(session, rse.id, [d.id for d in existing.values()])
    placing = [
        f
        for f in files
        if (f.scope, f.name) not in existing or existing[(f.scope, f.name)].id not in known
    ]
    quotas.charge(session, actor.id, quotas.tally((rse.id, f.bytes) for f in placing))
    new = [f for f in files if (f.scope, f.name) not in existing]
    now = utcnow()
    ids = _insert_files(session, actor, new, now)
    ids.update({k: d.id for k, d in existing.items()})
    bulk.insert_rows(
        session,
        Replica.__table__,
        [
            {
                "did_id": ids[(f.scope, f.name)],
                "rse_id": rse.id,
                "state": AVAILABLE,
                "path": deterministic_path(f.scope, f.name),
                "lock_count": 1,
                "tombstone": None,
                "created_at": now,
                "updated_at": now,
            }
            for f in placing
        ],
    )
    _keep(session, actor, rse, [(ids[(f.scope, f.name)], f.bytes) for f in placing], now)
    attached = 0
    if dataset is not None:
        target = catalogue.open_dataset(session, actor, *dataset)
        attached = catalogue.link(session, target.id, [ids[k] for k in keys])
    return {"files": len(new), "replicas": len(placing), "attached": attached}


def _check_existing(files: Sequence[FileEntry], existing: dict[tuple[str, str], Row[Any]]) -> None:
    for entry in files:
        did = existing.get((entry.scope, entry.name))
        if did is None:
            continue
        if did.type != FILE:
            raise Conflict(f"{entry.scope}:{entry.name} exists and is a {did.type}")
        if not same_content(did, entry.bytes, entry.adler32, entry.md5):
            raise Conflict(
                f"{entry.scope}:{entry.name} exists with other content"
                f" ({did.bytes} bytes, adler32 {did.adler32})"
            )


def _replicas_on(session: Session, rse_id: int, did_ids: Sequence[int]) -> set[int]:
    known: set[int] = set()
    for batch in bulk.chunks(did_ids):
        known |= set(
            session.scalars(
                select(Replica.did_id).where(Replica.rse_id == rse_id, Replica.did_id.in_(batch))
            )
        )
    return known


def _insert_files(
    session: Session, actor: Account, new: Sequence[FileEntry], now: datetime
) -> dict[tuple[Any, ...], int]:
    """New file DIDs and their metadata; maps (scope, name) to the new id."""
    ids = bulk.insert_with_ids(
        session,
        DID.__table__,
        [
            {
                "scope": f.scope,
                "name": f.name,
                "type": FILE,
                "account_id": actor.id,
                "bytes": f.bytes,
                "adler32": f.adler32,
                "md5": f.md5,
                "is_open": False,
                "created_at": now,
            }
            for f in new
        ],
        key=("scope", "name"),
    )
    bulk.insert_rows(
        session,
        DIDMeta.__table__,
        [r for f in new for r in meta.rows(ids[(f.scope, f.name)], f.meta)],
    )
    return ids


def _keep(
    session: Session, actor: Account, rse: RSE, files: Sequence[tuple[int, int]], now: datetime
) -> None:
    """The registrant's rule on each (file id, bytes) registered on ``rse``, one ``ok``
    lock each (charged by the caller): what an upload's rule does, in bulk. A replica no
    lock held would count on nobody's quota, and the first rule to let go of it would
    hand it to the reaper."""
    rule_ids = bulk.insert_with_ids(
        session,
        Rule.__table__,
        [
            {
                "did_id": did_id,
                "account_id": actor.id,
                "rse_expression": rse.name,
                "copies": 1,
                "state": OK,
                "locks_ok": 1,
                "locks_replicating": 0,
                "locks_stuck": 0,
                "expires_at": None,
                "comment": "register",
                "error": None,
                "created_at": now,
                "updated_at": now,
            }
            for did_id, _ in files
        ],
        key=("did_id",),
    )
    bulk.insert_rows(
        session,
        Lock.__table__,
        [
            {"rule_id": rule_ids[(d,)], "did_id": d, "rse_id": rse.id, "state": OK, "bytes": size}
            for d, size in files
        ],
    )


@dataclass
class ReplicaView:
    rse: str
    state: str
    url: str


@dataclass
class FileReplicas:
    scope: str
    name: str
    bytes: int | None
    adler32: str | None
    md5: str | None
    replicas: list[ReplicaView]


def list_for(
    session: Session,
    actor: Account,
    dids: Sequence[tuple[str, str]],
    *,
    all_states: bool = True,
    refuse_unreadable: bool = False,
) -> list[FileReplicas]:
    """Every file under ``dids`` that ``actor`` may read, with its replicas: two queries
    whatever the size (a few more when a container holds a collection one may not read).

    A file's own scope decides (``catalogue.under``); a listing leaves the others out and
    says nothing of them. ``refuse_unreadable`` (stage-in) refuses instead, saying how
    many files that is, never which."""
    for scope in {s for s, _ in dids}:
        scopes.readable(session, actor, scope)
    found = catalogue.find_all(session, list(dids))
    roots = [d.id for d in found.values()]
    seen = catalogue.under(session, actor, roots)
    query = (
        select(DID, RSE.name, RSE.prefix, Replica.state, Replica.path)
        .outerjoin(Replica, Replica.did_id == DID.id)
        .outerjoin(RSE, RSE.id == Replica.rse_id)
        .where(DID.type == FILE)
        .order_by(DID.scope, DID.name, RSE.name)
    )
    out: dict[int, FileReplicas] = {}
    sources = seen.sources()
    for source in sources:
        earlier = set(out)
        for did, rse_name, prefix, state, path in session.execute(query.where(DID.id.in_(source))):
            if did.id in earlier or not seen.rights(did.scope):
                continue
            item = out.get(did.id)
            if item is None:
                item = out[did.id] = FileReplicas(
                    did.scope, did.name, did.bytes, did.adler32, did.md5, []
                )
            if rse_name is not None and (all_states or state == AVAILABLE):
                item.replicas.append(ReplicaView(rse_name, state, storage.join(prefix, path)))
    if refuse_unreadable:
        _refuse_unreadable(session, actor, dids, roots, len(out))
    listed = list(out.values())
    return listed if len(sources) == 1 else sorted(listed, key=lambda f: (f.scope, f.name))


def _refuse_unreadable(
    session: Session,
    actor: Account,
    dids: Sequence[tuple[str, str]],
    roots: Sequence[int],
    shown: int,
) -> None:
    """Refuse when ``actor`` may see fewer files under ``roots`` than there are."""
    under = catalogue.descendant_ids(roots)
    total = session.scalar(
        select(func.count()).select_from(DID).where(DID.id.in_(under), DID.type == FILE)
    )
    hidden = (total or 0) - shown
    if hidden > 0:
        asked = f"{dids[0][0]}:{dids[0][1]}" if len(dids) == 1 else "the DIDs asked for"
        raise Forbidden(
            f"{asked} holds {hidden} file(s) that account {actor.name!r} may not read"
            " (their scopes are private): nothing was staged"
        )


def pick_available(session: Session, did: DID, rse_name: str | None = None) -> tuple[RSE, Replica]:
    """An available replica of one file (on ``rse_name`` if given)."""
    query = (
        select(RSE, Replica)
        .join(Replica, Replica.rse_id == RSE.id)
        .where(Replica.did_id == did.id, Replica.state == AVAILABLE)
        .order_by(RSE.name)
    )
    if rse_name:
        query = query.where(RSE.name == rse_name)
    row = session.execute(query).first()
    if row is None:
        where = f" on {rse_name}" if rse_name else ""
        raise NotFound(f"{did.scope}:{did.name} has no available replica{where}")
    return row[0], row[1]
