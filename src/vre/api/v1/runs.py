"""Workflow runs, their workspaces and logs, and secrets."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from vre.api.deps import Caller, unit
from vre.errors import Invalid, NotFound
from vre.workflows import instances, retention, runs, secrets, workspace
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
    usage = workspace.disk_usage(Path(run.workspace)) if Path(run.workspace).exists() else 0
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
def show_run(label: str, caller: Caller, request: Request) -> RunDetail:
    with unit(request) as session:
        return detail(session, runs.find(session, caller, label))


@router.post("/runs/{label}/start")
def start_run(label: str, body: StartIn, caller: Caller, request: Request) -> RunOut:
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
def stop_run(label: str, caller: Caller, request: Request) -> RunOut:
    with unit(request) as session:
        return run_out(runs.stop(session, caller, label))


@router.delete("/runs/{label}")
def delete_run(label: str, caller: Caller, request: Request, workspace: bool = False) -> RunOut:
    with unit(request) as session:
        return run_out(runs.delete(session, caller, label, keep_workspace=not workspace))


@router.get("/runs/{label}/logs", response_class=PlainTextResponse)
def run_logs(label: str, caller: Caller, request: Request, step: str | None = None) -> str:
    """Logs of every step (or one), streamed while running: poll with an offset-free GET."""
    with unit(request) as session:
        run = runs.find(session, caller, label)
        steps = runs.steps_of(session, run)
    if step is not None and step not in [s.name for s in steps]:
        raise Invalid(f"no step {step!r} in run {run.label}")
    parts = []
    for s in steps:
        if step is not None and s.name != step:
            continue
        path = workspace.log_path(Path(run.workspace), s.index, s.name)
        if path.exists():
            parts.append(f"==> step {s.name} ({s.status})\n{path.read_text(errors='replace')}")
    return "\n".join(parts)


@router.get("/runs/{label}/workspace")
def list_workspace(label: str, caller: Caller, request: Request, path: str = ".") -> Any:
    with unit(request) as session:
        run = runs.find(session, caller, label)
    ws = Path(run.workspace)
    return {
        "files": [asdict(e) for e in workspace.listing(ws, path)],
        "disk_usage": workspace.disk_usage(ws),
    }


@router.put("/runs/{label}/workspace/{path:path}", status_code=201)
async def upload_to_workspace(label: str, path: str, caller: Caller, request: Request) -> Any:
    with unit(request) as session:
        run = runs.find(session, caller, label)
    body = await request.body()
    size = workspace.write(Path(run.workspace), path, body)
    return {"path": path, "size": size}


@router.get("/runs/{label}/workspace/{path:path}")
def download_from_workspace(label: str, path: str, caller: Caller, request: Request) -> Response:
    """A file as is, a directory as a zip."""
    with unit(request) as session:
        run = runs.find(session, caller, label)
    ws = Path(run.workspace)
    target = workspace.resolve(ws, path)
    if target.is_dir():
        name = (target.name or run.label) + ".zip"
        return Response(
            workspace.zip_directory(ws, path),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    if not target.is_file():
        raise NotFound(f"{path!r} does not exist in the workspace of {run.label}")
    return FileResponse(target, filename=target.name)


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
