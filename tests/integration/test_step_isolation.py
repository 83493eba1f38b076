# ruff: noqa: E501  (the probes are shell lines a step runs, kept whole to read)
"""A step is a stranger to the host: a real ``vre serve`` and ``vre worker`` (default
backend, the bubblewrap sandbox), and steps that attack what is not theirs."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.server import ROOT_PASSWORD, VREServer
from tests.integration.test_replication import start_worker, stop
from tests.integration.test_runs_cli import wait_status

PROBE = """\
version: 0.9.0
inputs:
  files: ['rucio(local, mallory.pub, pub.txt)']
workflow:
  type: serial
  specification:
    steps:
      - name: probe
        environment: docker.io/library/bash:5
        commands:
          - mkdir -p results
          - (head -c 16 {home}/vre.db >/dev/null 2>&1 && echo db-read || echo db-hidden) >> results/probe.txt
          - ls -A {home} {home}/workspaces > results/home.txt
          - (ls {other} >/dev/null 2>&1 && echo other-read || echo other-hidden) >> results/probe.txt
          - (cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -q {password} && echo env-read || echo env-hidden) >> results/probe.txt
          - (ls /proc | grep -c '^[0-9]' ) > results/processes.txt
          - id -u > results/uid.txt
          - ((exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && echo db-port-open || echo db-port-closed) >> results/probe.txt
          - (echo overwritten > inputs/mallory.pub/pub.txt 2>/dev/null && echo input-written || echo input-read-only) >> results/probe.txt
          - cat inputs/mallory.pub/pub.txt > results/copy.txt
          - cp /usr/bin/true results/sb && chmod 4755 results/sb
"""

LINGER = """\
version: 0.9.0
workflow:
  type: serial
  specification:
    steps:
      - name: linger
        environment: docker.io/library/bash:5
        {timeout}
        commands:
          - (trap '' TERM; setsid sleep {marker} & disown) ; (trap '' TERM; sleep {marker}1 &) ; sleep 600
"""


@pytest.fixture(scope="module")
def sandboxed(vre_server: VREServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    for name in ("mallory", "victim"):
        vre_server.add_account(name, f"{name}-password")
    rse = tmp_path_factory.mktemp("rse")
    vre_server.cli("rse", "add", "ISO-DISK", f"file://{rse}")
    vre_server.cli("scope", "add", "mallory.pub", "--account", "mallory", "--public")
    log = vre_server.home.parent / "isolation-worker.log"
    process = start_worker(vre_server.home, VRE_RUN_POLL="0.05", log=log)
    try:
        yield rse
    finally:
        stop(process)


def submit(server: VREServer, folder: Path, text: str, name: str, account: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reana.yaml").write_text(text)
    server.cli("run", str(folder / "reana.yaml"), "--name", name, account=account)
    return f"{name}.1"


def test_a_step_sees_only_its_workspace_and_inputs(
    vre_server: VREServer, sandboxed: Path, tmp_path: Path
) -> None:
    source = tmp_path / "pub.txt"
    source.write_text("the original bytes\n")
    vre_server.cli(
        "upload", str(source), "--scope", "mallory.pub", "--rse", "ISO-DISK", account="mallory"
    )
    (replica,) = [p for p in sandboxed.rglob("pub.txt") if p.is_file()]
    assert replica.stat().st_mode & 0o222 == 0  # replicas on file:// are stored read-only
    other = submit(
        vre_server, tmp_path / "v", LINGER.format(timeout="", marker=4711), "v", "victim"
    )
    wait_status(vre_server, other, "victim", "running")
    other_ws = next((vre_server.home / "workspaces" / "victim").iterdir())
    spec = PROBE.format(home=vre_server.home, other=other_ws, password=ROOT_PASSWORD)
    run = submit(vre_server, tmp_path / "m", spec, "probe", "mallory")
    state = wait_status(vre_server, run, "mallory", "finished")
    assert "sandbox" in state["environment_note"]
    vre_server.cli("stop", other, account="victim")
    ws = next((vre_server.home / "workspaces" / "mallory").iterdir())
    assert (ws / "results/probe.txt").read_text().split() == [
        "db-hidden",
        "other-hidden",
        "env-hidden",
        "db-port-closed",
        "input-read-only",
    ]
    # Of VRE_HOME, only the way down to its own workspace exists in its sandbox.
    seen = (ws / "results/home.txt").read_text().split()
    assert seen == [
        f"{vre_server.home}:",
        "workspaces",
        f"{vre_server.home}/workspaces:",
        "mallory",
    ]
    assert int((ws / "results/processes.txt").read_text()) < 10  # its own, not the host's
    assert int((ws / "results/uid.txt").read_text()) != 0
    assert (ws / "results/copy.txt").read_text() == "the original bytes\n"
    assert replica.read_text() == "the original bytes\n"
    planted = (ws / "results/sb").stat()
    assert planted.st_uid != 0  # a setuid file a step leaves is never root's


def lingering(marker: int) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True)
    return found.stdout.split()


def wait_gone(marker: int, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while lingering(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    return lingering(marker)


def test_stop_and_timeout_end_every_process_a_step_started(
    vre_server: VREServer, sandboxed: Path, tmp_path: Path
) -> None:
    run = submit(vre_server, tmp_path / "a", LINGER.format(timeout="", marker=4242), "a", "mallory")
    wait_status(vre_server, run, "mallory", "running")
    deadline = time.monotonic() + 20
    while len(lingering(4242)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(lingering(4242)) >= 2
    vre_server.cli("stop", run, account="mallory")
    wait_status(vre_server, run, "mallory", "stopped")
    assert wait_gone(4242) == []
    spec = LINGER.format(timeout="kubernetes_job_timeout: 2", marker=4343)
    run = submit(vre_server, tmp_path / "b", spec, "b", "mallory")
    state = wait_status(vre_server, run, "mallory", "failed")
    assert "timed out" in state["error"]
    assert wait_gone(4343) == []


SWAP = """\
version: 0.9.0
workflow:
  type: serial
  specification:
    steps:
      - name: swap
        environment: docker.io/library/bash:5
        commands:
          - mv .vre .old 2>/dev/null; mkdir -p .vre && ln -s {target} .vre/logs && ln -s {target} logs
          - echo AFTER-THE-SWAP
"""


def test_a_step_cannot_send_the_worker_s_log_writes_elsewhere(
    vre_server: VREServer, sandboxed: Path, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    target.chmod(0o777)
    run = submit(vre_server, tmp_path / "s", SWAP.format(target=target), "swap", "mallory")
    wait_status(vre_server, run, "mallory", "finished")
    assert list(target.iterdir()) == []  # the worker created nothing there
    assert "AFTER-THE-SWAP" in vre_server.cli("logs", run, account="mallory").out
