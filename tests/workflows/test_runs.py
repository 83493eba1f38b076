"""Runs of serial workflows with the local backend, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from vre.config import Settings
from vre.db import transaction, utcnow
from vre.errors import Conflict, Invalid, NotFound
from vre.identity import accounts
from vre.identity.models import Account
from vre.workflows import engines, run_logs, runs, secrets, workspace
from vre.workflows.models import FAILED, FINISHED, RUNNING, STOPPED, Run, RunStep

SPEC = """
version: 0.9.0
inputs:
  files: [code/hello.sh]
  parameters:
    greeting: hello
    count: 3
workflow:
  type: serial
  specification:
    steps:
      - name: prepare
        environment: docker.io/library/python:3.11
        commands:
          - mkdir -p results
          - bash code/hello.sh "${greeting}" ${count} > results/greeting.txt
      - name: check
        environment: docker.io/library/python:3.11
        commands:
          - test "$(wc -l < results/greeting.txt)" -eq ${count}
          - echo checked >> results/greeting.txt
outputs:
  files: [results/greeting.txt]
"""

HELLO = b'for i in $(seq "$2"); do echo "$1 $i"; done\n'


def execute_next(sessions: sessionmaker[Session], settings: Settings) -> str:
    with transaction(sessions) as session:
        held = runs.lease("test-worker", settings.run_lease)
        (run_id,) = runs.claim(session, held, settings.max_runs_per_account, 1)
    return engines.execute(sessions, run_id, settings)


def new_run(
    sessions: sessionmaker[Session],
    actor: Account,
    home: Path,
    text: str = SPEC,
    name: str = "hello",
) -> str:
    with transaction(sessions) as session:
        run = runs.create(session, actor, name, text, home)
        label, ws = run.label, Path(run.workspace)
    workspace.write(ws, "code/hello.sh", HELLO)
    return label


def state(sessions: sessionmaker[Session], actor: Account, label: str) -> Run:
    with transaction(sessions) as session:
        return runs.find(session, actor, label)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", step_timeout=30)


def test_serial_run_with_parameter_override(sessions, alice, settings) -> None:  # type: ignore[no-untyped-def]
    label = new_run(sessions, alice, settings.home)
    assert label == "hello.1"
    assert new_run(sessions, alice, settings.home) == "hello.2"
    with transaction(sessions) as session:
        runs.start(session, alice, label, {"count": 5})
    assert execute_next(sessions, settings) == FINISHED
    run = state(sessions, alice, label)
    assert (run.status, run.steps_done, run.steps_total) == (FINISHED, 2, 2)
    assert "host environment" in (run.environment_note or "")
    lines = (Path(run.workspace) / "results/greeting.txt").read_text().splitlines()
    assert lines == ["hello 1", "hello 2", "hello 3", "hello 4", "hello 5", "checked"]
    with transaction(sessions) as session:
        steps = runs.steps_of(session, run)
    assert [(s.name, s.status, s.environment) for s in steps] == [
        ("prepare", FINISHED, "docker.io/library/python:3.11"),
        ("check", FINISHED, "docker.io/library/python:3.11"),
    ]
    log = run_logs.log_path(Path(run.workspace), 0, "prepare").read_text()
    assert "$ mkdir -p results" in log and 'hello.sh "hello" 5' in log


def test_failure_then_restart_from_a_step(sessions, alice, settings) -> None:  # type: ignore[no-untyped-def]
    text = SPEC.replace("echo checked >> results/greeting.txt", "echo broken >&2; exit 7")
    label = new_run(sessions, alice, settings.home, text, name="flaky")
    with transaction(sessions) as session:
        runs.start(session, alice, label)
    assert execute_next(sessions, settings) == FAILED
    run = state(sessions, alice, label)
    assert run.exit_code == 7 and "broken" in (run.error or "") and "check" in (run.error or "")
    assert run.steps_done == 1
    with pytest.raises(Conflict), transaction(sessions) as session:
        runs.start(session, alice, label)  # a run that ran is restarted, not started
    ws = Path(run.workspace)
    (ws / "results/greeting.txt").write_text("fixed by hand\n" * 3)
    with transaction(sessions) as session:  # the fix: a step that passes
        runs.start(session, alice, label, restart_from="check")
    # the spec still exits 7: restarting runs only from 'check', so prepare's output stays
    assert execute_next(sessions, settings) == FAILED
    assert (ws / "results/greeting.txt").read_text().startswith("fixed by hand")
    with pytest.raises(Invalid), transaction(sessions) as session:
        runs.start(session, alice, label, restart_from="nope")


def test_stop_a_running_run(sessions, alice, settings) -> None:  # type: ignore[no-untyped-def]
    text = SPEC.replace("mkdir -p results", "sleep 30")
    label = new_run(sessions, alice, settings.home, text, name="sleepy")
    with transaction(sessions) as session:
        runs.start(session, alice, label)
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(execute_next(sessions, settings)))
    started = time.monotonic()
    thread.start()
    while state(sessions, alice, label).status != "running":
        time.sleep(0.05)
    with transaction(sessions) as session:
        runs.stop(session, alice, label)
    thread.join(timeout=20)
    assert result == [STOPPED] and time.monotonic() - started < 10


def test_step_timeout(sessions, alice, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(home=tmp_path / "home", step_timeout=1)
    label = new_run(
        sessions, alice, settings.home, SPEC.replace("mkdir -p results", "sleep 20"), name="slow"
    )
    with transaction(sessions) as session:
        runs.start(session, alice, label)
    assert execute_next(sessions, settings) == FAILED
    assert "timed out" in (state(sessions, alice, label).error or "")


def test_secrets_reach_steps_but_never_logs_or_status(sessions, alice, settings) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        secrets.add(session, alice, "API_TOKEN", "s3cr3t-value-42")
        secrets.add(session, alice, "CERT", "-----BEGIN-----", kind="file")
    text = SPEC.replace(
        "mkdir -p results",
        'mkdir -p results && echo "token=$API_TOKEN"'
        ' && test "$(cat $CERT)" = "-----BEGIN-----"'
        " && echo $API_TOKEN > results/t.txt",
    )
    label = new_run(sessions, alice, settings.home, text, name="secret")
    with transaction(sessions) as session:
        runs.start(session, alice, label)
    assert execute_next(sessions, settings) == FINISHED
    run = state(sessions, alice, label)
    log = run_logs.log_path(Path(run.workspace), 0, "prepare").read_text()
    assert "token=***" in log and "s3cr3t-value-42" not in log
    assert "s3cr3t" not in (run.current_command or "") + (run.error or "")
    assert (Path(run.workspace) / "results/t.txt").read_text().strip() == "s3cr3t-value-42"
    with transaction(sessions) as session:
        assert secrets.names(session, alice) == [("API_TOKEN", "env"), ("CERT", "file")]


def test_engines_not_available_yet(sessions, alice, settings) -> None:  # type: ignore[no-untyped-def]
    text = "workflow:\n  type: cwl\n  file: workflow.cwl\n"
    label = new_run(sessions, alice, settings.home, text, name="cwl")
    with (
        pytest.raises(Invalid, match="cwl engine is not available yet"),
        transaction(sessions) as session,
    ):
        runs.start(session, alice, label)


def test_another_account_cannot_see_stop_or_delete(sessions, alice, bob, settings) -> None:  # type: ignore[no-untyped-def]
    label = new_run(sessions, alice, settings.home, name="mine")
    for action in (
        lambda s: runs.find(s, bob, label),
        lambda s: runs.start(s, bob, label),
        lambda s: runs.stop(s, bob, label),
        lambda s: runs.delete(s, bob, label),
    ):
        with pytest.raises(NotFound), transaction(sessions) as session:
            action(session)
    with transaction(sessions) as session:
        assert runs.list_runs(session, bob) == []


def test_an_admin_reaches_other_accounts_runs_only_unambiguously(  # type: ignore[no-untyped-def]
    sessions, root, alice, bob, settings
) -> None:
    new_run(sessions, alice, settings.home, name="fit")
    new_run(sessions, bob, settings.home, name="fit")
    new_run(sessions, bob, settings.home, name="scan")
    with transaction(sessions) as session:
        assert runs.find(session, root, "scan.1").owner.name == "bob"
        with pytest.raises(Conflict, match=r"several accounts \(alice, bob\)"):
            runs.find(session, root, "fit.1")
        assert sorted(r.owner.name for r in runs.list_runs(session, root)) == [
            "alice",
            "bob",
            "bob",
        ]
    new_run(sessions, root, settings.home, name="fit")
    with transaction(sessions) as session:
        assert runs.find(session, root, "fit.1").owner.name == "root"  # their own first
        assert runs.find(session, alice, "fit").owner.name == "alice"


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", "code/../../escape"])
def test_workspace_paths_cannot_escape(tmp_path: Path, path: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    with pytest.raises(Invalid, match="outside the workspace"):
        workspace.write(ws, path, b"x")
    (ws / "link").symlink_to("/etc")
    with pytest.raises(Invalid):
        workspace.resolve(ws, "link/passwd")


def test_concurrency_limit_per_account(sessions, alice, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(home=tmp_path / "home", max_runs_per_account=1)
    labels = [new_run(sessions, alice, settings.home, name=f"limited{i}") for i in range(2)]
    for label in labels:
        with transaction(sessions) as session:
            runs.start(session, alice, label)
    with transaction(sessions) as session:
        first = runs.claim(session, runs.lease("w", 300), 1, 5)
    with transaction(sessions) as session:
        second = runs.claim(session, runs.lease("w", 300), 1, 5)
    assert len(first) == 1 and second == []


def test_a_run_whose_worker_died_fails_and_can_be_restarted(sessions, alice, settings) -> None:  # type: ignore[no-untyped-def]
    label = new_run(sessions, alice, settings.home, name="orphan")
    with transaction(sessions) as session:
        runs.start(session, alice, label)
    with transaction(sessions) as session:
        assert runs.claim(session, runs.lease("dead-worker", 300), 4, 1)  # ... and the worker died
    with transaction(sessions) as session:
        session.execute(update(Run).values(lease_until=utcnow() - timedelta(seconds=1)))
    with transaction(sessions) as session:
        assert runs.claim(session, runs.lease("next-worker", 300), 4, 1) == []
    run = state(sessions, alice, label)
    assert run.status == FAILED and "vre restart" in (run.error or "")
    with transaction(sessions) as session:
        runs.start(session, alice, label, restart_from="")
    assert execute_next(sessions, settings) == FINISHED


def test_an_internal_error_fails_the_run_and_its_step(sessions, alice, settings) -> None:  # type: ignore[no-untyped-def]
    label = new_run(sessions, alice, settings.home)
    ws = Path(state(sessions, alice, label).workspace)
    (run_logs.log_path(ws, 0, "prepare") / "in-the-way").mkdir(parents=True)  # not a file
    with transaction(sessions) as session:
        runs.start(session, alice, label)
    assert execute_next(sessions, settings) == FAILED
    run = state(sessions, alice, label)
    assert run.status == FAILED and "internal error" in (run.error or "")
    assert str(settings.home) not in (run.error or "")  # no server path in what users see
    with transaction(sessions) as session:
        statuses = session.scalars(
            select(RunStep.status).where(RunStep.run_id == run.id).order_by(RunStep.index)
        ).all()
    assert statuses[0] == FAILED and RUNNING not in statuses  # nothing is left running


def test_a_run_keeps_its_specification_as_it_was_sent(sessions, alice, settings) -> None:  # type: ignore[no-untyped-def]
    text = SPEC.replace("version: 0.9.0", "# my analysis, as I wrote it\nversion: 0.9.0")
    label = new_run(sessions, alice, settings.home, text)
    assert state(sessions, alice, label).spec_text == text


def test_a_step_that_fills_the_workspace_quota_fails_the_run(sessions, alice, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(home=tmp_path / "home", step_timeout=30, workspace_quota=100_000)
    text = SPEC.replace(
        "- mkdir -p results", "- mkdir -p results && head -c 200000 /dev/zero > results/big"
    )
    label = new_run(sessions, alice, settings.home, text)
    with transaction(sessions) as session:
        runs.start(session, alice, label)
    assert execute_next(sessions, settings) == FAILED
    run = state(sessions, alice, label)
    assert "quota of 100000 bytes" in (run.error or "") and "prepare" in (run.error or "")


def test_a_disabled_account_runs_nothing(sessions, alice, root, settings) -> None:  # type: ignore[no-untyped-def]
    sleepy = new_run(sessions, alice, settings.home, SPEC.replace("mkdir -p results", "sleep 30"))
    waiting = new_run(sessions, alice, settings.home, name="waiting")
    with transaction(sessions) as session:
        runs.start(session, alice, sleepy)
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(execute_next(sessions, settings)))
    thread.start()
    while state(sessions, alice, sleepy).status != "running":
        time.sleep(0.05)
    with transaction(sessions) as session:
        runs.start(session, alice, waiting)
        accounts.set_disabled(session, root, "alice", True)
    thread.join(timeout=20)
    assert result == [STOPPED]  # the running one stops
    with transaction(sessions) as session:
        held = runs.lease("test-worker", settings.run_lease)
        assert runs.claim(session, held, settings.max_runs_per_account, 1) == []  # none taken
    with transaction(sessions) as session:
        accounts.set_disabled(session, root, "alice", False)
    assert execute_next(sessions, settings) == FINISHED
    assert state(sessions, alice, waiting).status == FINISHED


def test_a_command_filling_the_quota_is_stopped_while_it_runs(sessions, alice, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(home=tmp_path / "home", step_timeout=60, workspace_quota=1_000_000)
    text = SPEC.replace(
        "- mkdir -p results", "- mkdir -p results && head -c 5000000 /dev/zero > big && sleep 120"
    )
    label = new_run(sessions, alice, settings.home, text)
    with transaction(sessions) as session:
        runs.start(session, alice, label)
    assert execute_next(sessions, settings) == FAILED
    error = state(sessions, alice, label).error or ""
    assert "quota of 1000000 bytes" in error and "timed out" not in error
