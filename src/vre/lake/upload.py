"""Uploads: bytes first, catalogue second, and nothing half-written either way.

1. a ``PendingUpload`` row is committed, so bytes on storage are never unknown;
2. the bytes stream to a temporary name on the RSE, checksummed on the way;
3. one transaction decides (new DID, same content already there, or conflict),
   moves the bytes into place and registers DID, replica, dataset and metadata.
If the writer dies anywhere, ``sweep_pending`` finds the row and removes the bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from vre.db import transaction, utcnow
from vre.errors import Conflict, Invalid, StorageError
from vre.identity.models import Account
from vre.lake import catalogue, meta, rses, rules, scopes, storage
from vre.lake.checksums import check_adler32, check_md5
from vre.lake.models import (
    AVAILABLE,
    DATASET,
    DID,
    FILE,
    RSE,
    UNAVAILABLE,
    PendingUpload,
    Replica,
    Scope,
)
from vre.lake.names import MAX_PATH, PART_SUFFIX, check_name, deterministic_path
from vre.lake.replicas import same_content

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Target:
    """Where the bytes of one upload go: the final URL and its temporary twin."""

    url: str
    tag: str
    options: dict[str, Any]

    def write(self, chunks: Iterable[bytes]) -> storage.Stored:
        return storage.write_part(self.url, chunks, tag=self.tag, options=self.options)

    def commit(self) -> None:
        storage.commit_part(self.url, self.tag, options=self.options)

    def discard(self) -> None:
        storage.discard_part(self.url, self.tag, options=self.options)

    def exists(self) -> bool:
        return storage.exists(self.url, options=self.options)

    def has_part(self) -> bool:
        return storage.exists(storage.part_url(self.url, self.tag), options=self.options)


def _check_length(rse: RSE, path: str, did: str) -> None:
    """A name valid everywhere may still be too long under a deep RSE prefix: refused
    before any byte is written, never a storage error after the upload."""
    full = storage.local_path(storage.join(rse.prefix, path)) or storage.join(rse.prefix, path)
    if len(full.encode()) + PART_SUFFIX >= MAX_PATH:
        raise Invalid(
            f"{did} is too long for RSE {rse.name}: its path there would pass"
            f" {MAX_PATH} bytes; choose a shorter name"
        )


@dataclass
class UploadResult:
    scope: str
    name: str
    rse: str
    bytes: int
    adler32: str
    md5: str
    url: str
    created: bool


def _dataset(session: Session, actor: Account, scope: str, name: str) -> DID:
    """The target dataset, created (open) when it does not exist yet, like rucio upload."""
    found = session.scalar(select(DID.id).where(DID.scope == scope, DID.name == name))
    if found is None:
        return catalogue.add_collection(session, actor, scope, name, DATASET)
    return catalogue.open_dataset(session, actor, scope, name)


def upload(
    factory: sessionmaker[Session],
    actor: Account,
    scope: str,
    name: str,
    rse_name: str,
    chunks: Iterable[bytes],
    *,
    dataset: tuple[str, str] | None = None,
    meta_values: dict[str, Any] | None = None,
    adler32: str | None = None,
    md5: str | None = None,
) -> UploadResult:
    check_name(name)
    adler32, md5 = check_adler32(adler32), check_md5(md5)
    meta.check(meta_values or {})
    with transaction(factory) as session:
        scopes.writable(session, actor, scope)
        if dataset is not None:
            scopes.writable(session, actor, dataset[0])
            check_name(dataset[1])
        rse = rses.get(session, rse_name)
        path = deterministic_path(scope, name)
        _check_length(rse, path, f"{scope}:{name}")
        pending = PendingUpload(rse_id=rse.id, path=path, account_id=actor.id)
        session.add(pending)
        session.flush()
        target = _Target(storage.join(rse.prefix, path), str(pending.id), dict(rse.options or {}))
        pending_id = pending.id
    try:
        stored = target.write(chunks)
        for kind, want, got in (("adler32", adler32, stored.adler32), ("md5", md5, stored.md5)):
            if want and want != got:
                raise Invalid(
                    f"checksum mismatch for {scope}:{name}: expected {kind} {want}, got {got}"
                    " (nothing was stored)"
                )
        with transaction(factory) as session:
            result = _register(
                session, actor, pending_id, (scope, name), (rse.id, rse_name), stored, dataset
            )
            if meta_values and result.placed:
                meta.set_many(session, [result.did_id], meta_values)
    except BaseException:
        target.discard()
        with transaction(factory) as session:
            session.execute(delete(PendingUpload).where(PendingUpload.id == pending_id))
        raise
    _place(factory, target, pending_id, moved=result.placed)
    return result.view(target.url, stored)


def _place(
    factory: sessionmaker[Session], target: _Target, pending_id: int, *, moved: bool
) -> None:
    """After the catalogue committed: move the bytes into place (or drop the duplicate),
    then let the pending row go. A crash in between leaves the row, and the worker's
    ``sweep_pending`` finishes the move: registered bytes are never lost."""
    if moved:
        target.commit()
    else:
        target.discard()
    with transaction(factory) as session:
        session.execute(delete(PendingUpload).where(PendingUpload.id == pending_id))


@dataclass
class _Registered:
    scope: str
    name: str
    rse: str
    did_id: int
    created: bool
    placed: bool  # the part becomes the replica (else the same bytes were there already)

    def view(self, url: str, stored: storage.Stored) -> UploadResult:
        return UploadResult(
            self.scope,
            self.name,
            self.rse,
            stored.bytes,
            stored.adler32,
            stored.md5 or "",
            url,
            created=self.created,
        )


def _replica(session: Session, did_id: int, rse_id: int) -> Replica | None:
    """The replica, read locked (PostgreSQL): the reaper cannot claim it while we decide."""
    query = select(Replica).where(Replica.did_id == did_id, Replica.rse_id == rse_id)
    return session.scalar(query.with_for_update(key_share=True))


def _register(
    session: Session,
    actor: Account,
    pending_id: int,
    did_name: tuple[str, str],
    rse: tuple[int, str],
    stored: storage.Stored,
    dataset: tuple[str, str] | None,
) -> _Registered:
    """Decide (new, same content already there, conflict) and register; no storage I/O.

    The first statement marks the pending row registered (it commits with the rest), so
    SQLite takes its write lock before we read, and an upload that outlived
    ``VRE_UPLOAD_GRACE`` (the sweeper removed its row and bytes) fails here, registering
    nothing. PostgreSQL serialises uploads into one scope on the scope row."""
    (scope, name), (rse_id, rse_name) = did_name, rse
    marked = session.execute(
        update(PendingUpload)
        .where(PendingUpload.id == pending_id, PendingUpload.registered.is_(False))
        .values(registered=True)
    )
    if marked.rowcount != 1:  # type: ignore[attr-defined]
        raise StorageError(
            f"the upload of {scope}:{name} took longer than VRE_UPLOAD_GRACE and was"
            " abandoned (its bytes are gone): upload it again"
        )
    session.execute(select(Scope).where(Scope.name == scope).with_for_update())
    did = session.scalar(select(DID).where(DID.scope == scope, DID.name == name))
    created = did is None
    if did is not None:
        if did.type != FILE or not same_content(did, stored.bytes, stored.adler32, stored.md5):
            raise Conflict(
                f"{scope}:{name} already exists with other content"
                f" ({did.bytes} bytes, adler32 {did.adler32}); choose another name"
            )
        replica = _replica(session, did.id, rse_id)
        if replica is not None and replica.state == UNAVAILABLE:
            raise Conflict(
                f"{scope}:{name} on {rse_name} is being deleted by the reaper right now:"
                " upload it again in a minute"
            )
        if replica is not None and replica.state == AVAILABLE:
            did.obsolete = False
            if not rules.held_by(session, actor, did.id, rse_id):
                rules.add(session, actor, scope, name, rse_name, comment="upload")
            return _Registered(scope, name, rse_name, did.id, created=False, placed=False)
    else:
        did = DID(
            scope=scope,
            name=name,
            type=FILE,
            account_id=actor.id,
            bytes=stored.bytes,
            adler32=stored.adler32,
            md5=stored.md5,
            is_open=False,
        )
        session.add(did)
        session.flush()
    if dataset is not None:
        catalogue.link(session, _dataset(session, actor, *dataset).id, [did.id])
    replica = _replica(session, did.id, rse_id)
    if replica is None:
        session.add(
            Replica(
                did_id=did.id, rse_id=rse_id, state=AVAILABLE, path=deterministic_path(scope, name)
            )
        )
    else:
        replica.state, replica.updated_at = AVAILABLE, utcnow()
    session.flush()
    # Like `rucio upload`: the uploader's rule keeps the new replica (and counts on quota).
    rules.add(session, actor, scope, name, rse_name, comment="upload")
    return _Registered(scope, name, rse_name, did.id, created=created, placed=True)


def sweep_pending(factory: sessionmaker[Session], older_than: timedelta) -> int:
    """Finish or undo uploads whose writer died; returns how many were swept.

    An unregistered upload's row is deleted first (its writer, if it still lives, then
    fails to register) and its part removed. A registered upload's part is moved into
    place unless the replica's bytes are already there: the catalogue says they are.
    Storage is touched between transactions, never inside one."""
    cutoff = utcnow() - older_than
    with transaction(factory) as session:
        stale = [
            (
                row.id,
                row.registered,
                _Target(storage.join(rse.prefix, row.path), str(row.id), dict(rse.options or {})),
            )
            for row, rse in session.execute(
                select(PendingUpload, RSE)
                .join(RSE, RSE.id == PendingUpload.rse_id)
                .where(PendingUpload.created_at < cutoff)
            )
        ]
    with transaction(factory) as session:
        abandoned = set(
            session.scalars(
                delete(PendingUpload)
                .where(
                    PendingUpload.id.in_([i for i, registered, _ in stale if not registered]),
                    PendingUpload.registered.is_(False),
                )
                .returning(PendingUpload.id)
            )
        )
    finished: list[int] = []
    for row_id, registered, target in stale:
        try:
            if registered and target.has_part() and not target.exists():
                target.commit()
                log.info("finished the interrupted upload of %s", target.url)
            elif registered or row_id in abandoned:
                target.discard()
                log.info("swept the interrupted upload of %s", target.url)
            else:
                continue  # registered meanwhile: its writer finishes it
        except storage.StorageError as exc:
            log.warning("interrupted upload of %s stays: %s", target.url, exc.message)
            continue
        if registered:
            finished.append(row_id)
    if finished:
        with transaction(factory) as session:
            session.execute(delete(PendingUpload).where(PendingUpload.id.in_(finished)))
    return len(abandoned) + len(finished)
