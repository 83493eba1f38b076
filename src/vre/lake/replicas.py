"""Replicas: which storage element holds which file, registered and listed in bulk.

The hot paths here run one query per batch, never one per file: registering
10,000 files is a handful of multi-row INSERTs in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from vre import bulk
from vre.db import utcnow
from vre.errors import Conflict, Invalid, NotFound
from vre.identity.models import Account
from vre.lake import catalogue, meta, rses, scopes, storage
from vre.lake.checksums import check_adler32, check_md5
from vre.lake.models import AVAILABLE, DID, FILE, RSE, DIDMeta, Replica
from vre.lake.names import check_name, check_scope, deterministic_path


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
    already known are kept; everything is optionally attached to ``dataset``.
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
    new = [f for f in files if (f.scope, f.name) not in existing]
    now = utcnow()
    ids: dict[tuple[Any, ...], int] = bulk.insert_with_ids(
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
    ids.update({k: d.id for k, d in existing.items()})
    known = set()
    old_ids = [d.id for d in existing.values()]
    for batch in bulk.chunks(old_ids):
        known |= set(
            session.scalars(
                select(Replica.did_id).where(Replica.rse_id == rse.id, Replica.did_id.in_(batch))
            )
        )
    replica_rows = [
        {
            "did_id": ids[(f.scope, f.name)],
            "rse_id": rse.id,
            "state": AVAILABLE,
            "path": deterministic_path(f.scope, f.name),
            "created_at": now,
            "updated_at": now,
        }
        for f in files
        if ids[(f.scope, f.name)] not in known
    ]
    bulk.insert_rows(session, Replica.__table__, replica_rows)
    attached = 0
    if dataset is not None:
        target = catalogue.open_dataset(session, actor, *dataset)
        attached = catalogue.link(session, target.id, [ids[k] for k in keys])
    return {"files": len(new), "replicas": len(replica_rows), "attached": attached}


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
    session: Session, actor: Account, dids: Sequence[tuple[str, str]], *, all_states: bool = True
) -> list[FileReplicas]:
    """Every file under ``dids`` with its replicas: two queries whatever the size."""
    for scope in {s for s, _ in dids}:
        scopes.readable(session, actor, scope)
    found = catalogue.find_all(session, list(dids))
    roots = list(found.values())
    file_ids = catalogue.descendant_ids(d.id for d in roots)
    query = (
        select(DID, RSE.name, RSE.prefix, Replica.state, Replica.path)
        .outerjoin(Replica, Replica.did_id == DID.id)
        .outerjoin(RSE, RSE.id == Replica.rse_id)
        .where(DID.id.in_(file_ids), DID.type == FILE)
        .order_by(DID.scope, DID.name, RSE.name)
    )
    out: dict[int, FileReplicas] = {}
    for did, rse_name, prefix, state, path in session.execute(query):
        item = out.get(did.id)
        if item is None:
            item = out[did.id] = FileReplicas(
                did.scope, did.name, did.bytes, did.adler32, did.md5, []
            )
        if rse_name is not None and (all_states or state == AVAILABLE):
            item.replicas.append(ReplicaView(rse_name, state, storage.join(prefix, path)))
    return list(out.values())


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
