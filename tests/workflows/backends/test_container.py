"""Steps in podman containers: the real podman, runc and an image built for the tests."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.podman import PodmanStore
from tests.workflows.test_runs import execute_next, new_run, state
from vre.config import Settings
from vre.db import transaction
from vre.errors import Invalid
from vre.identity.models import Account
from vre.lake import rses, scopes, upload
from vre.workflows import run_logs, runs, secrets
from vre.workflows.backends import runner
from vre.workflows.backends.container import image_reference, input_binds
from vre.workflows.models import FAILED, FINISHED, STOPPED, Run, RunStep


def spec(commands: list[str], image: str, inputs: str = "") -> str:
    listed = "\n".join(f"          - {json.dumps(c)}" for c in commands)
    return f"""
version: 0.9.0
inputs:
  parameters: {{who: world}}{inputs}
workflow:
  type: serial
  specification:
    steps:
      - name: inside
        environment: {image}
        commands:
{listed}
"""


def run_spec(
    sessions: sessionmaker[Session], actor: Account, settings: Settings, text: str
) -> tuple[str, Run]:
    label = new_run(sessions, actor, settings.home, text, name="boxed")
    with transaction(sessions) as session:
        runs.start(session, actor, label)
    execute_next(sessions, settings)
    return label, state(sessions, actor, label)


def steps(sessions: sessionmaker[Session], run: Run) -> list[RunStep]:
    with transaction(sessions) as session:
        found = session.scalars(select(RunStep).where(RunStep.run_id == run.id))
        return list(found)


def log_of(run: Run) -> str:
    return "".join(p.read_text() for p in sorted(run_logs.logs_of(Path(run.workspace)).glob("*")))


def test_input_binds_cover_a_scope_directory_or_a_single_file() -> None:
    links = [
        ("inputs/user.a/x.dat", "/rse/a/user.a/ab/cd/x.dat", True),
        ("inputs/user.a/run.1/out/y.json", "/rse/a/user.a/12/34/run.1/out/y.json", True),
        ("inputs/user.b/z", "/rse/a/user.b/ef/01/z", False),  # only via a shared dataset
        ("inputs/user.c/odd", "/elsewhere/odd", True),
    ]
    assert input_binds(links) == [
        Path("/elsewhere/odd"),
        Path("/rse/a/user.a"),
        Path("/rse/a/user.b/ef/01/z"),
    ]
    assert input_binds([("inputs/s/f", "/r/s/f", True), ("inputs/s/g", "/r/s/aa/bb/g", True)]) == [
        Path("/r/s"),  # the lone file inside the bound scope directory is not bound twice
    ]


def test_unknown_runtime_is_refused(tmp_path: Path) -> None:
    env = runner.StepEnvironment(tmp_path, {}, {}, tmp_path / "private")
    assert isinstance(runner.for_settings(Settings(), env), runner.SandboxRunner)
    unisolated = Settings(step_isolation="unisolated-host")
    assert isinstance(runner.for_settings(unisolated, env), runner.HostRunner)
    with pytest.raises(Invalid, match="'apptainer' is not supported"):
        runner.for_settings(Settings(container_runtime="apptainer"), env)


def test_steps_run_in_their_image_with_the_workspace_bound(  # type: ignore[no-untyped-def]
    sessions, alice, podman_store: PodmanStore, tmp_path
) -> None:
    settings = podman_store.settings(home=tmp_path / "home", step_timeout=60)
    commands = [
        "test -x /bin/busybox && test ! -e /usr/bin/python3",  # the image, not the host
        'test "$(ls /sys/class/net)" = lo',  # no network but loopback
        'test "$PWD" = "$REANA_WORKSPACE" && test -f code/hello.sh',
        "mkdir -p results && echo hello ${who} > results/out.txt",
        "echo to-stderr >&2",
    ]
    _label, run = run_spec(sessions, alice, settings, spec(commands, podman_store.image))
    assert run.status == FINISHED, run.error
    assert "podman" in (run.environment_note or "")
    (step,) = steps(sessions, run)
    assert step.environment == podman_store.image and step.image == podman_store.image_id
    assert (Path(run.workspace) / "results/out.txt").read_text() == "hello world\n"
    assert "to-stderr" in log_of(run)
    assert podman_store.containers() == []  # --rm: nothing left behind


def test_a_container_step_is_unprivileged_and_leaves_no_setuid_root_file(  # type: ignore[no-untyped-def]
    sessions, alice, podman_store: PodmanStore, tmp_path
) -> None:
    settings = podman_store.settings(home=tmp_path / "home", step_timeout=60)
    commands = [
        'test "$(id -u)" != 0',  # rootful podman, yet the step is not root
        "mkdir -p results && cp /bin/busybox results/sb && chmod 4755 results/sb",
        "! touch /bin/planted 2>/dev/null",  # the image's files are not its to change
    ]
    _, run = run_spec(sessions, alice, settings, spec(commands, podman_store.image))
    assert run.status == FINISHED, run.error
    planted = (Path(run.workspace) / "results/sb").stat()
    assert planted.st_uid != 0 and planted.st_gid != 0  # setuid, but never root's


def test_a_failing_command_in_a_container_fails_the_run(  # type: ignore[no-untyped-def]
    sessions, alice, podman_store: PodmanStore, tmp_path
) -> None:
    settings = podman_store.settings(home=tmp_path / "home", step_timeout=60)
    commands = ["echo about to fail >&2; exit 7", "echo never"]
    _, run = run_spec(sessions, alice, settings, spec(commands, podman_store.image))
    assert run.status == FAILED and run.exit_code == 7
    assert "exit code 7" in (run.error or "") and "about to fail" in (run.error or "")
    assert "never" not in log_of(run)


def test_missing_image_fails_the_run_with_advice(  # type: ignore[no-untyped-def]
    sessions, alice, podman_store: PodmanStore, tmp_path
) -> None:
    settings = podman_store.settings(home=tmp_path / "home", step_timeout=60)
    image = "registry.invalid/nobody/nothing:1"
    _, run = run_spec(sessions, alice, settings, spec(["echo hi"], image))
    assert run.status == FAILED
    assert f"environment image {image!r} is not on this host" in (run.error or "")
    assert "podman load" in (run.error or "")


def test_secrets_reach_the_container_but_not_its_command_line(  # type: ignore[no-untyped-def]
    sessions, alice, podman_store: PodmanStore, tmp_path
) -> None:
    token, key = "s3cr3t-t0ken-value", "-----KEY-----\nprivate-key-line\n"
    with transaction(sessions) as session:
        secrets.add(session, alice, "API_TOKEN", token)
        secrets.add(session, alice, "KEY_FILE", key, kind="file")
    settings = podman_store.settings(home=tmp_path / "home", step_timeout=60)
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:  # what any user of the host sees in the process table
        while not done.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    with contextlib.suppress(OSError):
                        seen.append(
                            Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                        )
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    commands = [
        f'test "${{#API_TOKEN}}" -eq {len(token)} && test "${{API_TOKEN#s3cr3t}}" = -t0ken-value',
        'grep -q "private-key-l[i]ne" "$KEY_FILE"',
        "echo token is $API_TOKEN; cat $KEY_FILE; sleep 0.3",
    ]
    try:
        _, run = run_spec(sessions, alice, settings, spec(commands, podman_store.image))
    finally:
        done.set()
        watcher.join()
    assert run.status == FINISHED, run.error
    assert token not in log_of(run) and "private-key-line" not in log_of(run)
    assert "token is ***" in log_of(run)
    assert any("podman" in line and "vre-run" in line for line in seen)  # it was watched
    leaked = [line for line in seen if token in line or "private-key-line" in line]
    assert not leaked, leaked[0].replace("\x00", " ")[-300:]


def test_stop_kills_the_container(  # type: ignore[no-untyped-def]
    sessions, alice, podman_store: PodmanStore, tmp_path
) -> None:
    settings = podman_store.settings(home=tmp_path / "home", step_timeout=60)
    label = new_run(sessions, alice, settings.home, spec(["sleep 60"], podman_store.image))
    with transaction(sessions) as session:
        runs.start(session, alice, label)

    def stop_soon() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not podman_store.containers():
            time.sleep(0.1)
        with transaction(sessions) as session:
            session.execute(update(Run).values(stop_requested=True))

    stopper = threading.Thread(target=stop_soon)
    stopper.start()
    started = time.monotonic()
    execute_next(sessions, settings)
    stopper.join()
    assert state(sessions, alice, label).status == STOPPED
    assert time.monotonic() - started < 30
    assert podman_store.containers() == []


def test_staged_inputs_are_readable_and_read_only_and_nothing_else_is_bound(  # type: ignore[no-untyped-def]
    sessions, root, alice, bob, podman_store: PodmanStore, tmp_path
) -> None:
    rse_root = tmp_path / "posix"
    with transaction(sessions) as session:
        rses.add(session, root, "POSIX", rse_root.as_uri())
        scopes.add(session, alice, "user.alice")
        scopes.add(session, bob, "user.bob")
        scopes.add(session, bob, "pub.bob")
        scopes.set_public(session, bob, "pub.bob", True)
    upload.upload(sessions, alice, "user.alice", "events.dat", "POSIX", [b"alice's events\n"])
    upload.upload(sessions, bob, "user.bob", "private.dat", "POSIX", [b"bob's secret data\n"])
    settings = podman_store.settings(home=tmp_path / "home", step_timeout=60)
    inputs = "\n  files:\n    - rucio(local, user.alice, events.dat)"
    commands = [
        "test -L inputs/user.alice/events.dat",  # linked, not copied...
        'grep -q "alice\'s events" inputs/user.alice/events.dat',  # ...and it resolves
        "! echo tampered >> inputs/user.alice/events.dat",  # but the lake is read-only
        f"test ! -e {rse_root}/user.bob",  # another account's scope is not there at all
        f"mkdir -p out && ls -R {tmp_path} > out/everything.txt",
    ]
    _, run = run_spec(sessions, alice, settings, spec(commands, podman_store.image, inputs))
    assert run.status == FINISHED, f"{run.error}\n{log_of(run)}"
    (stored,) = rse_root.rglob("events.dat")
    # bob attaches one file of his private scope to a dataset in a public scope: its own
    # scope decides, so alice's run is refused, naming how many files, not which.
    upload.upload(
        sessions, bob, "user.bob", "shared.dat", "POSIX", [b"shared\n"], dataset=("pub.bob", "ds")
    )
    inputs = "\n  files:\n    - rucio(local, pub.bob, ds)"
    _, shared = run_spec(sessions, alice, settings, spec(["true"], podman_store.image, inputs))
    assert shared.status == FAILED and "1 file(s) that account 'alice' may not read" in (
        shared.error or ""
    )
    assert "shared.dat" not in (shared.error or "")
    assert stored.read_bytes() == b"alice's events\n"
    assert "private.dat" not in (Path(run.workspace) / "out/everything.txt").read_text()


def test_containers_of_runs_no_worker_executes_are_removed(  # type: ignore[no-untyped-def]
    sessions, alice, podman_store: PodmanStore, tmp_path
) -> None:
    settings = podman_store.settings(home=tmp_path / "home")
    ours = runner.deployment(settings)

    def start(name: str, worker: str, deployment: str = ours) -> None:
        defaults = Settings()  # the options the worker runs containers with
        argv = [podman_store.executable, *shlex.split(defaults.podman_options), "run", "-d"]
        argv += ["--name", name, "--label", f"vre.deployment={deployment}"]
        argv += ["--label", f"vre.worker={worker}", *shlex.split(defaults.container_options)]
        argv += [podman_store.image, "sleep", "60"]
        subprocess.run(argv, check=True, capture_output=True)

    ended = new_run(sessions, alice, settings.home, spec(["true"], podman_store.image), "a")
    again = new_run(sessions, alice, settings.home, spec(["true"], podman_store.image), "b")
    going = new_run(sessions, alice, settings.home, spec(["true"], podman_store.image), "c")
    with transaction(sessions) as session:
        ids = {label: runs.find(session, alice, label).id for label in (ended, again, going)}
        session.execute(update(Run).where(Run.id == ids[ended]).values(status=FAILED))
        session.execute(  # restarted after its worker died: now another worker runs it
            update(Run).where(Run.id == ids[again]).values(status="running", worker="w2")
        )
        session.execute(
            update(Run).where(Run.id == ids[going]).values(status="pending", worker="w1")
        )
    start(f"vre-run{ids[ended]}-s0-c0-aaaaaa", "w1")  # its run failed when w1 was killed
    start(f"vre-run{ids[again]}-s0-c0-bbbbbb", "w1")  # w1's, but w2 executes the run now
    start(f"vre-run{ids[going]}-s1-c0-cccccc", "w1")  # just claimed, still executing
    start(f"vre-run{ids[ended]}-s0-c0-dddddd", "w1", "another-vre")  # not this VRE's
    start("someone-elses-container", "w1")
    try:

        def executing(wanted: set[int]) -> dict[int, str]:
            with transaction(sessions) as session:
                return runs.executing(session, wanted)

        assert runner.remove_orphans(settings, executing) == 2
        assert sorted(podman_store.containers()) == sorted(
            [
                "someone-elses-container",
                f"vre-run{ids[going]}-s1-c0-cccccc",
                f"vre-run{ids[ended]}-s0-c0-dddddd",
            ]
        )
        assert runner.remove_orphans(Settings(home=tmp_path), executing) == 0  # no runtime
    finally:
        subprocess.run(
            [podman_store.executable, "--runtime", "runc", "rm", "-f", "-t", "0", "--all"],
            capture_output=True,
            check=False,
        )


def test_a_secret_cannot_reconfigure_podman(  # type: ignore[no-untyped-def]
    sessions, alice, podman_store: PodmanStore, tmp_path
) -> None:
    host_dir = tmp_path / "host-only"
    host_dir.mkdir()
    (host_dir / "flag").write_text("host secret\n")
    evil = tmp_path / "evil.conf"
    evil.write_text(f'[containers]\nvolumes = ["{host_dir}:/hostsecret:ro"]\n')
    with transaction(sessions) as session:
        secrets.add(session, alice, "CONTAINERS_CONF", str(evil))
        secrets.add(session, alice, "LD_PRELOAD", "/nonexistent/evil.so")
    settings = podman_store.settings(home=tmp_path / "home", step_timeout=60)
    commands = [
        "test ! -e /hostsecret/flag",  # podman did not read the user's configuration
        f'test "$CONTAINERS_CONF" = {evil}',  # the step still has its secret as a variable
    ]
    _, run = run_spec(sessions, alice, settings, spec(commands, podman_store.image))
    assert run.status == FINISHED, f"{run.error}\n{log_of(run)}"


def test_a_multi_line_secret_variable_is_refused_in_containers(  # type: ignore[no-untyped-def]
    sessions, alice, podman_store: PodmanStore, tmp_path
) -> None:
    """Refused when it is added (a container's environment cannot take it), not at each run."""
    with transaction(sessions) as session, pytest.raises(Invalid, match="--file"):
        secrets.add(session, alice, "PEM", "line one\nline two")


@pytest.mark.parametrize(
    "image",
    [
        "docker-archive:/srv/vre/workspaces/bob/up.1/evil.tar",
        "oci-archive:evil.tar",
        "containers-storage:localhost/vre-test/bash:1",
        "dir:/tmp",
        "docker://busybox",
        "--help",
        "bash:5 --privileged",
    ],
)
def test_only_registry_references_are_taken_as_images(image: str) -> None:
    """Another transport would make podman, as the worker, read a path a user chose and
    retag the image store every account's steps run from."""
    with pytest.raises(Invalid, match="is not an image reference"):
        image_reference(image)


def test_registry_references_are_taken_as_they_are() -> None:
    for image in (
        "bash",
        "localhost/vre-test/bash:1",
        "localhost:5000/a/b:c",
        "docker.io/x@sha256:" + "0" * 64,
    ):
        assert image_reference(image) == image
