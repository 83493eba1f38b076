"""``vre upload``, ``download`` and ``replicas``: moving bytes in and out of the lake."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from vre.cli.common import client, errors_as_exit, key_values
from vre.cli.output import JsonOption, console, emit_json, fail, table, transfer_bars
from vre.lake.names import check_scope, parse_did


def upload(
    files: list[Path] = typer.Argument(..., help="Files to upload.", exists=False),
    scope: str = typer.Option(..., "--scope", "-s", help="Scope of the new DIDs."),
    rse: str = typer.Option(..., "--rse", "-r", help="Storage element to write to."),
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="Add the files to this dataset (created if missing)."
    ),
    meta: list[str] | None = typer.Option(None, "--meta", "-m", help="KEY=VALUE on every file."),
    as_json: bool = JsonOption,
) -> None:
    """Upload files, with checksums, and register them in the catalogue."""
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        fail(f"no such file: {missing[0]}")
    with errors_as_exit():
        check_scope(scope)
        if dataset:
            parse_did(dataset, default_scope=scope)
        values = key_values(meta)
        api = client()
        results = []
        with transfer_bars(sum(f.stat().st_size for f in files), "upload") as start:
            for path in files:
                advance = start(path.name, path.stat().st_size)
                results.append(
                    api.upload(path, scope, rse, dataset=dataset, meta=values, progress=advance)
                )
    if as_json:
        emit_json(results)
        return
    for r in results:
        state = "uploaded" if r["created"] else "already there"
        console.print(
            f"{r['scope']}:{r['name']} {state} on {r['rse']} ({r['bytes']} bytes,"
            f" adler32 {r['adler32']})",
            highlight=False,
        )


def download(
    dids: list[str] = typer.Argument(..., help="Files, datasets or containers (SCOPE:NAME)."),
    directory: Path = typer.Option(Path("."), "--dir", help="Where to put SCOPE/NAME."),
    through_api: bool = typer.Option(
        False, "--through-api", help="Stream through the server even if storage is reachable."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Download DIDs (expanding collections), verifying checksums."""
    with errors_as_exit():
        for text in dids:
            parse_did(text)
        api = client()
        listing = api.replicas(dids, available_only=True)
        total = sum(f["bytes"] or 0 for f in listing)
        with transfer_bars(total, "download") as start:
            progress: dict[str, Callable[[int], None] | None] = {"advance": None}

            def on_file(item: dict) -> None:
                progress["advance"] = start(item["name"], item["bytes"] or 0)

            done = api.download(
                dids,
                directory,
                through_api=through_api,
                on_file=on_file,
                progress=lambda n: progress["advance"](n) if progress["advance"] else None,
            )
    if as_json:
        emit_json([{**d.__dict__, "path": str(d.path)} for d in done])
        return
    for d in done:
        how = "direct" if d.direct else "through the API"
        console.print(f"{d.did} → {d.path} ({d.bytes} bytes from {d.rse}, {how})", highlight=False)


def replicas(
    dids: list[str] = typer.Argument(..., help="SCOPE:NAME (collections expand)."),
    as_json: bool = JsonOption,
) -> None:
    """Replicas of files with their storage element, state and URL."""
    with errors_as_exit():
        for text in dids:
            parse_did(text)
        found = client().replicas(dids)
    if as_json:
        emit_json(found)
        return
    rows = [
        {
            "did": f"{f['scope']}:{f['name']}",
            "bytes": f["bytes"],
            "adler32": f["adler32"],
            "rse": r["rse"],
            "state": r["state"],
            "url": r["url"],
        }
        for f in found
        for r in (f["replicas"] or [{"rse": "", "state": "none", "url": ""}])
    ]
    table(rows, ["did", "bytes", "adler32", "rse", "state", "url"])
