"""``vre run``, ``runs``, ``status``, ``logs``, ``ls``, ``fetch``, ``stop``, ``restart``,
``delete`` and ``secret``: reana.yaml workflows from the command line."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import typer
import yaml

from vre.cli.common import client, errors_as_exit, key_values
from vre.cli.output import JsonOption, console, emit_json, fail, show, table
from vre.client import Client

secret_app = typer.Typer(
    help="Secrets given to workflow steps (never shown).", no_args_is_help=True
)
RUN_COLUMNS = ["run", "status", "steps_done", "steps_total", "current_step", "created_at"]
DONE = ("finished", "failed", "stopped", "deleted")


def _inputs(spec_path: Path) -> list[tuple[str, Path]]:
    """Plain input files and directories of a spec, relative to its directory."""
    document = yaml.safe_load(spec_path.read_text()) or {}
    inputs = document.get("inputs") or {}
    base = spec_path.parent
    found: list[tuple[str, Path]] = []
    for entry in inputs.get("files") or []:
        if isinstance(entry, str) and not entry.strip().startswith("rucio("):
            found.append((entry, base / entry))
    for directory in inputs.get("directories") or []:
        for item in sorted((base / directory).rglob("*")):
            if item.is_file() and "__pycache__" not in item.parts and item.suffix != ".pyc":
                found.append((item.relative_to(base).as_posix(), item))
    return found


def _watch(run: str) -> dict:
    api = client()
    seen = ""
    while True:
        state = api.run_status(run)
        line = f"{state['run']}: {state['status']} {state['steps_done']}/{state['steps_total']}"
        if state.get("current_step") and state["status"] == "running":
            line += f" — {state['current_step']}: {state.get('current_command') or ''}"
        if line != seen:
            console.print(line, highlight=False)
            seen = line
        if state["status"] in DONE:
            return state
        time.sleep(0.3)


def run(
    spec: Path = typer.Argument(Path("reana.yaml"), help="The reana.yaml to run."),
    parameter: list[str] | None = typer.Option(None, "--parameter", "-p", help="KEY=VALUE."),
    name: str | None = typer.Option(None, "--name", "-n", help="Run name (default: folder)."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Follow the steps until the end."),
    as_json: bool = JsonOption,
) -> None:
    """Create a run, upload its inputs and start it."""
    if not spec.is_file():
        fail(f"no such specification: {spec}")
    run_name = name or spec.resolve().parent.name.replace(".", "-") or "run"
    with errors_as_exit():
        values = key_values(parameter, "parameter")
        api = client()
        created = api.create_run(run_name, spec.read_text())
        label = created["run"]
        try:
            for relative, path in _inputs(spec):
                if not path.is_file():
                    fail(f"input file {relative} does not exist next to {spec}")
                api.upload_to_run(label, relative, path.read_bytes())
            started = api.start_run(label, values)
        except BaseException:  # a run that could not start is not left behind
            with contextlib.suppress(Exception):
                api.delete_run(label, workspace=True)
            raise
    if not watch:
        show(started, as_json) if as_json else console.print(f"{label} {started['status']}")
        return
    with errors_as_exit():
        final = _watch(label)
    if final["status"] != "finished":
        fail(f"{label} {final['status']}: {final.get('error') or ''}".strip(), 1)


def runs_cmd(as_json: bool = JsonOption) -> None:
    """Your runs, newest first."""
    with errors_as_exit():
        listed = client().runs()
    # An admin sees every account's runs: then say whose each one is.
    several = len({r.get("account") for r in listed}) > 1
    show(listed, as_json, [RUN_COLUMNS[0], "account", *RUN_COLUMNS[1:]] if several else RUN_COLUMNS)


def status(run_: str = typer.Argument(..., metavar="RUN"), as_json: bool = JsonOption) -> None:
    """Status of a run: steps, current command, timings, error."""
    with errors_as_exit():
        state = client().run_status(run_)
    if as_json:
        emit_json(state)
        return
    steps = state.pop("steps")
    kept = state.pop("retention_rules", [])
    for step in steps:  # an image ID reads like docker's: its first 12 digits
        step["image"] = (step.get("image") or "")[:12]
    show({k: v for k, v in state.items() if v not in (None, "", {})}, False)
    columns = ["index", "name", "status", "environment", "image", "exit_code"]
    table(steps, [*columns, "started_at", "finished_at"])
    if kept:
        table(kept, ["pattern", "days", "status", "apply_on"], title="workspace retention")


def logs(
    run_: str = typer.Argument(..., metavar="RUN"),
    step: str | None = typer.Option(None, "--step", "-s", help="Only this step."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until it ends."),
    full: bool = typer.Option(False, "--full", help="Whole logs, past the server's limit."),
) -> None:
    """Logs of a run's steps (secrets masked), streamed."""
    with errors_as_exit():
        api = client()
        printed = 0
        while True:
            printed = _print_logs(api, run_, step, full, printed)
            if not follow or api.run_status(run_)["status"] in DONE:
                break
            time.sleep(0.5)
        if follow:
            _print_logs(api, run_, step, full, printed)


def _print_logs(api: Client, run_: str, step: str | None, full: bool, skip: int) -> int:
    """Stream the logs to stdout past their first ``skip`` bytes (printed by an earlier
    poll); returns how many bytes they hold now. Nothing is held in memory."""
    sys.stdout.flush()
    out, seen = sys.stdout.buffer, 0
    for chunk in api.run_log_chunks(run_, step, full=full):
        if seen + len(chunk) > skip:
            out.write(chunk[max(skip - seen, 0) :])
            out.flush()
        seen += len(chunk)
    return seen


def ls(
    run_: str = typer.Argument(..., metavar="RUN"),
    path: str = typer.Argument(".", help="A directory or file in the workspace."),
    as_json: bool = JsonOption,
) -> None:
    """Files in a run's workspace, with sizes."""
    with errors_as_exit():
        listing = client().run_files(run_, path)
    if as_json:
        emit_json(listing)
        return
    table(listing["files"], ["name", "type", "size"])
    console.print(f"disk usage: {listing['disk_usage']} bytes", style="dim")


def fetch(
    run_: str = typer.Argument(..., metavar="RUN"),
    path: str = typer.Argument(..., help="File, or directory (fetched as a zip)."),
    output: Path = typer.Option(Path("."), "--output", "-o", help="Directory to write into."),
) -> None:
    """Download a file or directory from a run's workspace (streamed; a plain new file,
    never setuid or executable; a zip's entries carry no setuid bits either)."""
    with errors_as_exit():
        try:
            output.mkdir(parents=True, exist_ok=True)
            target = client().save_run_file(run_, path, output)
        except OSError as exc:
            fail(f"cannot write into {output}: {exc.strerror}")
    console.print(f"{path} → {target}", highlight=False)


def stop(run_: str = typer.Argument(..., metavar="RUN")) -> None:
    """Stop a queued or running run."""
    with errors_as_exit():
        state = client().stop_run(run_)
    console.print(f"{state['run']}: stop requested ({state['status']})")


def restart(
    run_: str = typer.Argument(..., metavar="RUN"),
    from_: str | None = typer.Option(None, "--from", help="Restart from this step."),
    parameter: list[str] | None = typer.Option(None, "--parameter", "-p", help="KEY=VALUE."),
) -> None:
    """Run a finished, failed or stopped run again in its workspace."""
    with errors_as_exit():
        state = client().start_run(
            run_, key_values(parameter, "parameter"), restart=True, restart_from=from_
        )
    console.print(f"{state['run']} {state['status']}" + (f" from {from_}" if from_ else ""))


def delete(
    run_: str = typer.Argument(..., metavar="RUN"),
    workspace: bool = typer.Option(False, "--workspace", help="Also remove its workspace."),
) -> None:
    """Delete a run (its workspace stays unless --workspace)."""
    with errors_as_exit():
        state = client().delete_run(run_, workspace)
    console.print(f"{state['run']} deleted" + (" with its workspace" if workspace else ""))


@secret_app.command("add")
def secret_add(
    name: str,
    value: str | None = typer.Option(None, "--value", help="The secret (visible in history)."),
    file: Path | None = typer.Option(None, "--file", help="Read it from a file; given as a file."),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Add a secret: an environment variable (--value) or a file (--file) in every step."""
    if (value is None) == (file is None):
        fail("give exactly one of --value or --file")
    with errors_as_exit():
        if file is not None:
            client().add_secret(name, file.read_text(), "file", overwrite)
        else:
            client().add_secret(name, value or "", "env", overwrite)
    console.print(f"secret {name} stored")


@secret_app.command("list")
def secret_list(as_json: bool = JsonOption) -> None:
    """Names of your secrets (never their values)."""
    with errors_as_exit():
        show(client().secrets(), as_json, ["name", "kind"])


@secret_app.command("delete")
def secret_delete(name: str) -> None:
    with errors_as_exit():
        client().delete_secret(name)
    console.print(f"secret {name} deleted")
