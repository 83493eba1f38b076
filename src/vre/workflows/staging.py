"""Stage-in and stage-out between the lake and a run's workspace.

Layout: every file staged in lands at ``inputs/<file scope>/<file name>`` in the
workspace, whether it was named directly or reached through a dataset or container
(the same layout as ``rucio download``). A ``file://`` replica on this host is linked,
not copied; anything else is streamed and its adler32 checked against the catalogue.

Stage-out uploads ``PATH`` as the DID ``SCOPE:<run name>.<N>/<PATH>`` (unique per
run, so reruns never collide) with metadata that records its provenance.

An external Rucio instance (``vre.workflows.instances``) gives the same layout through
Rucio's own client; its outputs are named ``<account>.<run name>.<N>.<PATH, / as .>``
and carry ``vre_account`` in their provenance too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from vre.config import get_settings
from vre.db import transaction
from vre.errors import Conflict, Invalid, NotFound, VREError
from vre.identity.models import Account
from vre.lake import catalogue, replicas, rses, storage, upload
from vre.lake.models import RSE
from vre.workflows import instances, workspace
from vre.workflows.spec import RucioInput, RucioOutput

LOCAL = instances.LOCAL


@dataclass
class Staged:
    did: str
    path: str
    adler32: str | None
    linked: bool
    target: str | None = None  # where a link points: a replica's file on this host
    instance: str = LOCAL
    # The run's owner may read the file's whole scope (a container may then see the
    # scope's directory, not just this file): false for a file reached through a
    # dataset in a scope the owner can read, while the file's own scope is private.
    whole_scope: bool = False


def _readable_scopes(session: Session, actor: Account, files: list[Any]) -> set[str]:
    seen = catalogue.rights(session, actor)  # the lake's one read rule
    return {f.scope for f in files if seen(f.scope)}


def _external(configured: Path | None, name: str) -> instances.Instance:
    if configured is None:
        raise Invalid(f"Rucio instance {name!r} is not configured: this VRE knows only 'local'")
    return instances.get(configured, name)


def stage_in(
    sessions: sessionmaker[Session],
    actor: Account,
    ws: Path,
    wanted: list[RucioInput],
    *,
    configured: Path | None = None,
) -> list[Staged]:
    """Bring every wanted DID's files into ``ws/inputs``; the caller's read rights apply
    in this lake, the operator's account's on an external instance (``configured``)."""
    staged: list[Staged] = []
    for entry in wanted:
        if entry.instance != LOCAL:
            staged += _from_external(_external(configured, entry.instance), entry, ws)
            continue
        with transaction(sessions) as session:
            files = replicas.list_for(
                session, actor, [(entry.scope, entry.name)], refuse_unreadable=True
            )
            options = {r.name: dict(r.options or {}) for r in rses.list_all(session)}
            readable = _readable_scopes(session, actor, files)
        for item in files:
            rel = f"inputs/{item.scope}/{item.name}"
            target = workspace.prepare_target(ws, rel)
            fetched = _fetch(item, target, rel, options)
            fetched.whole_scope = item.scope in readable
            staged.append(fetched)
    return staged


def _from_external(instance: instances.Instance, entry: RucioInput, ws: Path) -> list[Staged]:
    """Rucio's own client downloads and verifies into a fresh directory outside the
    workspace (a step may have planted links in ``inputs/``); then each file moves in."""
    holding = Path(tempfile.mkdtemp(prefix=".vre-stage-", dir=ws.parent))
    try:
        answer = instances.call(
            instance,
            {"action": "download", "scope": entry.scope, "name": entry.name, "dest": str(holding)},
        )
        staged = []
        for item in answer:
            arrived = holding / item["path"]
            if arrived.is_symlink() or not arrived.is_file():
                raise Invalid(f"{instance.name}: {item['did']} did not arrive")
            rel = f"inputs/{item['path']}"
            shutil.move(arrived, workspace.prepare_target(ws, rel))
            staged.append(Staged(item["did"], rel, item["adler32"], False, instance=instance.name))
    finally:
        shutil.rmtree(holding, ignore_errors=True)
    if not staged:
        raise Invalid(f"{instance.name}: {entry.scope}:{entry.name} holds no files")
    return staged


def _described_external(instance: instances.Instance, entry: RucioInput) -> list[Staged]:
    answer = instances.call(instance, {"action": "list", "scope": entry.scope, "name": entry.name})
    return [
        Staged(i["did"], f"inputs/{i['path']}", i["adler32"], False, instance=instance.name)
        for i in answer
    ]


def describe(
    sessions: sessionmaker[Session],
    actor: Account,
    wanted: list[RucioInput],
    *,
    configured: Path | None = None,
) -> list[Staged]:
    """What stage-in brought for these DIDs, without moving bytes (a restart's record)."""
    described = []
    for entry in wanted:
        if entry.instance != LOCAL:
            described += _described_external(_external(configured, entry.instance), entry)
            continue
        with transaction(sessions) as session:
            files = replicas.list_for(
                session, actor, [(entry.scope, entry.name)], refuse_unreadable=True
            )
            readable = _readable_scopes(session, actor, files)
        for item in files:
            target = _linkable(item)
            described.append(
                Staged(
                    f"{item.scope}:{item.name}",
                    f"inputs/{item.scope}/{item.name}",
                    item.adler32,
                    linked=target is not None,
                    target=target,
                    whole_scope=item.scope in readable,
                )
            )
    return described


def _linkable(item: replicas.FileReplicas) -> str | None:
    """The path of an available replica's bytes on this host, if there is one."""
    for replica in item.replicas:
        if replica.state != "available":
            continue
        local = storage.local_path(replica.url)
        if local and os.path.isfile(local):
            return str(local)
    return None


def _fetch(
    item: replicas.FileReplicas, target: Path, rel: str, options: dict[str, dict[str, Any]]
) -> Staged:
    did = f"{item.scope}:{item.name}"
    available = [r for r in item.replicas if r.state == "available"]
    if not available:
        raise Invalid(f"{did} has no available replica to stage in")
    local = _linkable(item)
    if local:
        target.symlink_to(local)
        return Staged(did, rel, item.adler32, linked=True, target=local)
    copied = storage.copy_verified(
        [storage.Source(r.rse, r.url, options.get(r.rse)) for r in available],
        "file://" + str(target),
        tag=secrets.token_hex(8),  # unguessable: a step may plant links in inputs/
        expected_adler32=item.adler32 or None,
    )
    if copied.source is None:
        raise Invalid(f"could not stage in {did}: {'; '.join(copied.errors)}")
    return Staged(did, rel, item.adler32, linked=False)


def stage_out(
    sessions: sessionmaker[Session],
    actor: Account,
    ws: Path,
    outputs: list[RucioOutput],
    provenance: dict[str, Any],
    run_label: str,
    *,
    configured: Path | None = None,
) -> list[dict[str, Any]]:
    """Upload each output with its provenance; returns what was registered.

    Each output is opened by ``workspace.open_file``: never through a link, only a
    regular file with one link that is none of the server's own, so a link planted in
    ``results/`` cannot publish another account's file or the database, and staged
    inputs (links to the lake) are never published again."""
    owned = workspace.server_files(get_settings())
    done = []
    for out in outputs:
        with _output(ws, out.path, owned) as source:
            if out.instance != LOCAL:
                done.append(
                    _to_external(
                        _external(configured, out.instance),
                        out,
                        _holding_copy(source, ws),
                        external_name(actor.name, run_label, out.path),
                        {**provenance, "vre_account": actor.name},
                    )
                )
            else:
                done.append(_to_lake(sessions, actor, out, source, provenance, run_label))
    return done


def _output(ws: Path, path: str, owned: workspace.Owned) -> workspace.File:
    try:
        return workspace.open_file(ws, path, owned)
    except NotFound:
        raise Invalid(f"output {path!r} was not produced by the run") from None
    except VREError as exc:
        raise Invalid(f"output {path!r} is not published: {exc.message}") from None


def _to_lake(
    sessions: sessionmaker[Session],
    actor: Account,
    out: RucioOutput,
    source: workspace.File,
    provenance: dict[str, Any],
    run_label: str,
) -> dict[str, Any]:
    rse = out.rse or _only_rse(sessions)
    dataset = (out.scope, out.dataset) if out.dataset else None
    name = f"{run_label}/{out.path}"
    chunks = source.chunks(get_settings().block_size)
    try:
        result = upload.upload(
            sessions, actor, out.scope, name, rse, chunks, dataset=dataset, meta_values=provenance
        )
    except Conflict as exc:
        if "other content" not in exc.message:
            raise
        raise Conflict(
            f"{out.path} differs from {out.scope}:{name}, which an earlier attempt of"
            f" run {run_label} registered; files in the lake never change, so start a"
            " new run ('vre run') to publish new results"
        ) from None
    return {"did": f"{result.scope}:{result.name}", "rse": rse, "adler32": result.adler32}


@contextlib.contextmanager
def _holding_copy(source: workspace.File, ws: Path) -> Iterator[Path]:
    """The output's bytes in a private directory beside the workspace, for Rucio's own
    client, which opens files by name: it never gets a path inside the workspace."""
    holding = Path(tempfile.mkdtemp(prefix=".vre-stage-", dir=ws.parent))
    try:
        copy = holding / source.name.rsplit("/", 1)[-1]
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(copy, flags, 0o600), "wb") as handle:
            for chunk in source.chunks(get_settings().block_size):
                handle.write(chunk)
        yield copy
    finally:
        shutil.rmtree(holding, ignore_errors=True)


def external_name(account: str, run_label: str, path: str) -> str:
    """On an external instance all of this VRE's accounts publish as one service account,
    so the name carries the account; Rucio's usual schema allows no '/' in names:
    alice's ``fit.3/results/x.json`` is ``alice.fit.3.results.x.json``."""
    return f"{account}.{run_label}.{path}".replace("/", ".")


def _to_external(
    instance: instances.Instance,
    out: RucioOutput,
    source: contextlib.AbstractContextManager[Path],
    name: str,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    if not out.rse:
        raise Invalid(f"an output to Rucio instance {instance.name!r} needs rse=NAME")
    with source as copy:
        return _upload_external(instance, out, copy, name, provenance)


def _upload_external(
    instance: instances.Instance,
    out: RucioOutput,
    copy: Path,
    name: str,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    request = {
        "action": "upload",
        "path": str(copy),
        "scope": out.scope,
        "name": name,
        "rse": out.rse,
        "dataset": out.dataset,
        "meta": provenance,
    }
    answer = instances.call(instance, request)
    return {
        "did": answer["did"],
        "rse": out.rse,
        "adler32": answer["adler32"],
        "instance": instance.name,
    }


def _only_rse(sessions: sessionmaker[Session]) -> str:
    with transaction(sessions) as session:
        names = [r.name for r in session.query(RSE).order_by(RSE.name)]
    if len(names) != 1:
        raise Invalid("an output needs rse=NAME when the lake has more than one RSE")
    return names[0]


def provenance(run_label: str, digest: str, inputs: list[Staged]) -> dict[str, Any]:
    entries = []
    for s in inputs:
        entry = {"did": s.did, "adler32": s.adler32}
        if s.instance != LOCAL:
            entry["instance"] = s.instance
        entries.append(entry)
    listed = json.dumps(entries)
    if len(listed) > get_settings().max_meta_value_length:  # keep the full list's digest
        listed = "sha256:" + hashlib.sha256(listed.encode()).hexdigest()
    return {"vre_run": run_label, "vre_spec_digest": digest, "vre_inputs": listed}
