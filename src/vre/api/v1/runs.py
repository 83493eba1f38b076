"""Workflow runs, their workspaces and logs, and secrets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from vre.api.deps import Caller, unit
from vre.api.limits import UploadSlot, stream_to_thread
from vre.api.params import RunLabel
from vre.errors import Invalid, shown
from vre.workflows import instances, retention, runs, secrets, workspace, workspace_io
from vre.workflows.models import Run

router = APIRouter(tags=["workflows"])


class RunIn(BaseModel):
    name: str
    specification: str = Field(description="the reana.yaml text")


class StartIn(BaseModel):
    parameters: dict[str, Any] = Field(default_factory=dict)
    restart_from: str | None = Field(default=None, description="restart from this step")
    restart: bool = False


class StepOut(BaseModel):
    index: int
    name: str
    status: str
    environment: str | None
    image: str | None = None  # what the step ran in: an image ID, or "host"
    compute_backend: str | None
    exit_code: int | None
    started_at: datetime | None
    finished_at: datetime | None


class RunOut(BaseModel):
    run: str
    account: str
    name: str
    number: int
    status: str
    steps_total: int
    steps_done: int
    current_step: str | None
    current_command: str | None
    parameters: dict[str, Any]
    exit_code: int | None
    error: str | None
    environment_note: str | None
    spec_digest: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RetentionOut(BaseModel):
    pattern: str
    days: int
    status: str  # created (run not ended), active (dated), applied
    apply_on: datetime | None


class RunDetail(RunOut):
    steps: list[StepOut]
    disk_usage: int
    retention_rules: list[RetentionOut] = Field(default_factory=list)


class SecretIn(BaseModel):
    name: str
    value: str
    kind: str = "env"
    overwrite: bool = False


def run_out(run: Run) -> RunOut:
    return RunOut(
        run=run.label,
        account=run.owner.name,
        name=run.name,
        number=run.number,
        status=run.status,
        steps_total=run.steps_total,
        steps_done=run.steps_done,
        current_step=run.current_step,
        current_command=run.current_command,
        parameters=run.parameters or {},
        exit_code=run.exit_code,
        error=run.error,
        environment_note=run.environment_note,
        spec_digest=run.spec_digest,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def detail(session: Session, run: Run) -> RunDetail:
    steps = [
        StepOut(
            index=s.index,
            name=s.name,
            status=s.status,
            environment=s.environment,
            image=s.image,
            compute_backend=s.compute_backend,
            exit_code=s.exit_code,
            started_at=s.started_at,
            finished_at=s.finished_at,
        )
        for s in runs.steps_of(session, run)
    ]
    usage = workspace_io.disk_usage(Path(run.workspace))
    rules = [
        RetentionOut(pattern=r.pattern, days=r.days, status=r.status, apply_on=r.apply_on)
        for r in retention.rules_of(session, run.id)
    ]
    return RunDetail(
        **run_out(run).model_dump(), steps=steps, disk_usage=usage, retention_rules=rules
    )


@router.post("/runs", status_code=201)
def create_run(body: RunIn, caller: Caller, request: Request) -> RunOut:
    with unit(request) as session:
        home = request.app.state.settings.home
        return run_out(runs.create(session, caller, body.name, body.specification, home))


@router.get("/runs")
def list_runs(caller: Caller, request: Request) -> list[RunOut]:
    with unit(request) as session:
        return [run_out(r) for r in runs.list_runs(session, caller)]


@router.get("/runs/{label}")
def show_run(label: RunLabel, caller: Caller, request: Request) -> RunDetail:
    with unit(request) as session:
        return detail(session, runs.find(session, caller, label))


@router.post("/runs/{label}/start")
def start_run(label: RunLabel, body: StartIn, caller: Caller, request: Request) -> RunOut:
    with unit(request) as session:
        restart_from = (body.restart_from or "") if body.restart else body.restart_from
        configured = instances.load(request.app.state.settings.rucio_instances_file())
        run = runs.start(
            session,
            caller,
            label,
            body.parameters,
            restart_from=restart_from,
            instances={instances.LOCAL, *configured},
        )
        return run_out(run)


@router.post("/runs/{label}/stop")
def stop_run(label: RunLabel, caller: Caller, request: Request) -> RunOut:
    with unit(request) as session:
        return run_out(runs.stop(session, caller, label))


@router.delete("/runs/{label}")
def delete_run(
    label: RunLabel, caller: Caller, request: Request, workspace: bool = False
) -> RunOut:
    with unit(request) as session:
        return run_out(runs.delete(session, caller, label, keep_workspace=not workspace))


@router.get("/runs/{label}/logs", response_class=PlainTextResponse)
def run_logs(
    label: RunLabel, caller: Caller, request: Request, step: str | None = None, full: bool = False
) -> Response:
    """Logs of every step (or one), streamed while running: poll with an offset-free GET.
    Each step's log is cut at VRE_STEP_LOG_LIMIT bytes with a note, unless ``full``."""
    settings = request.app.state.settings
    with unit(request) as session:
        run = runs.find(session, caller, label)
        steps = [(s.index, s.name, s.status) for s in runs.steps_of(session, run)]
        ws, run_label = Path(run.workspace), run.label
    if step is not None and step not in [name for _, name, _ in steps]:
        raise Invalid(f"no step {shown(step)} in run {run_label}")
    chunks = workspace_io.log_chunks(
        ws,
        [s for s in steps if step is None or s[1] == step],
        label=run_label,
        limit=None if full else settings.step_log_limit,
        owned=workspace.server_files(settings),
        block=settings.block_size,
    )
    return StreamingResponse(chunks, media_type="text/plain; charset=utf-8")


@router.get("/runs/{label}/workspace")
def list_workspace(label: RunLabel, caller: Caller, request: Request, path: str = ".") -> Any:
    """Entries with their own type and size: a link is listed as a link, never followed."""
    with unit(request) as session:
        ws = Path(runs.find(session, caller, label).workspace)
    return {
        "files": [asdict(e) for e in workspace_io.listing(ws, path)],
        "disk_usage": workspace_io.disk_usage(ws),
    }


@router.put("/runs/{label}/workspace/{path:path}", status_code=201)
async def upload_to_workspace(
    label: RunLabel, path: str, caller: Caller, request: Request, _slot: UploadSlot
) -> Any:
    """Streamed to the file by an upload thread: never held in memory, never on the loop.
    The file appears whole or not at all (``workspace_io.Upload``), within the quota."""
    settings = request.app.state.settings

    def find() -> tuple[Path, str]:
        with unit(request) as session:
            run = runs.find(session, caller, label)
            return Path(run.workspace), run.owner.name

    def write(blocks: Iterator[bytes]) -> int:
        declared = request.headers.get("content-length", "")
        upload = workspace_io.Upload(
            ws,
            path,
            room=workspace.room(settings.home, account, settings.workspace_quota),
            expected=int(declared) if declared.isdigit() else 0,
        )
        return workspace_io.finish(upload, blocks)

    ws, account = await anyio.to_thread.run_sync(find)
    size = await stream_to_thread(request, write)
    return {"path": path, "size": size}


@router.get("/runs/{label}/workspace/{path:path}")
def download_from_workspace(
    label: RunLabel, path: str, caller: Caller, request: Request
) -> Response:
    """A file as is, a directory as a zip, both streamed from descriptors opened without
    following links (``workspace.open_entry``): links, FIFOs, hard-linked files and the
    server's own files are refused, or left out of a zip."""
    settings = request.app.state.settings
    with unit(request) as session:
        run = runs.find(session, caller, label)
        ws, run_label = Path(run.workspace), run.label
    owned, block = workspace.server_files(settings), settings.block_size
    opened = workspace.open_entry(ws, path, owned)
    if isinstance(opened, workspace.Directory):
        name = (opened.name.rsplit("/", 1)[-1] or run_label) + ".zip"
        chunks = workspace_io.zip_chunks(opened, owned, block)
        return StreamingResponse(chunks, media_type="application/zip", headers=_attachment(name))
    headers = {**_attachment(opened.name.rsplit("/", 1)[-1]), "Content-Length": str(opened.size)}
    return StreamingResponse(
        opened.chunks(block), media_type="application/octet-stream", headers=headers
    )


def _attachment(name: str) -> dict[str, str]:
    """A download, never shown inline (a workspace's HTML is never run in the API's origin)."""
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return {
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=utf-8''"
        + quote(name, safe=""),
        "X-Content-Type-Options": "nosniff",
    }


@router.post("/secrets", status_code=201)
def add_secret(body: SecretIn, caller: Caller, request: Request) -> dict[str, str]:
    with unit(request) as session:
        secrets.add(
            session, caller, body.name, body.value, kind=body.kind, overwrite=body.overwrite
        )
        return {"name": body.name, "kind": body.kind}


@router.get("/secrets")
def list_secrets(caller: Caller, request: Request) -> list[dict[str, str]]:
    """Names and kinds only: a secret's value never leaves the server."""
    with unit(request) as session:
        return [{"name": n, "kind": k} for n, k in secrets.names(session, caller)]


@router.delete("/secrets/{name}")
def delete_secret(name: str, caller: Caller, request: Request) -> dict[str, str]:
    with unit(request) as session:
        secrets.remove(session, caller, name)
        return {"deleted": name}
