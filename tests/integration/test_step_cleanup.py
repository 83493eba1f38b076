"""A worker killed mid-step leaves nothing running: the sandbox's PID namespace dies with
the worker (its own server and worker, so no other worker takes the run meanwhile)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.fixtures.server import VREServer
from tests.integration.test_replication import start_worker, stop
from tests.integration.test_runs_cli import wait_status
from tests.integration.test_step_isolation import LINGER, lingering, submit, wait_gone


def test_a_killed_worker_leaves_no_step_processes(vre_server: VREServer, tmp_path: Path) -> None:
    vre_server.add_account("kim", "kim-password")
    process = start_worker(vre_server.home, VRE_RUN_POLL="0.05")
    try:
        spec = LINGER.format(timeout="", marker=4545)
        run = submit(vre_server, tmp_path / "k", spec, "k", "kim")
        wait_status(vre_server, run, "kim", "running")
        deadline = time.monotonic() + 20
        while not lingering(4545) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lingering(4545)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert wait_gone(4545) == []
    finally:
        if process.poll() is None:
            stop(process)
    state = json.loads(vre_server.cli("status", "k.1", "--json", account="kim").out)
    assert state["status"] in ("running", "queued", "failed", "stopped")
