"""``vre run`` and friends against a real server and worker, as a user meets them."""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.server import VREServer
from tests.integration.test_replication import start_worker, stop

SPEC = """\
version: 0.9.0
inputs:
  files: [code/count.sh]
  parameters:
    n: 3
workflow:
  type: serial
  specification:
    steps:
      - name: count
        environment: docker.io/library/bash:5
        commands:
          - mkdir -p results
          - bash code/count.sh ${n} > results/numbers.txt
      - name: report
        environment: docker.io/library/bash:5
        commands:
          - echo "secret is $VRE_DEMO_SECRET"
          - wc -l results/numbers.txt | tee results/report.txt
outputs:
  files: [results/report.txt]
"""


@pytest.fixture(scope="module")
def worker(vre_server: VREServer) -> Iterator[None]:
    vre_server.add_account("erin", "erin-password")
    vre_server.add_account("frank", "frank-password")
    process = start_worker(vre_server.home, VRE_RUN_POLL="0.05")
    try:
        yield
    finally:
        stop(process)


@pytest.fixture
def analysis(tmp_path: Path) -> Path:
    (tmp_path / "code").mkdir()
    (tmp_path / "code/count.sh").write_text('seq 1 "$1"\n')
    (tmp_path / "reana.yaml").write_text(SPEC)
    return tmp_path / "reana.yaml"


def wait_status(server: VREServer, run: str, account: str, wanted: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = json.loads(server.cli("status", run, "--json", account=account).out)
        if state["status"] == wanted:
            return state
        time.sleep(0.2)
    raise AssertionError(f"{run} never became {wanted}: {state}")


def test_run_watch_logs_ls_fetch(
    vre_server: VREServer, worker: None, analysis: Path, tmp_path: Path
) -> None:
    cli = vre_server.cli
    cli("secret", "add", "VRE_DEMO_SECRET", "--value", "hunter2-xyz", account="erin")
    done = cli("run", str(analysis), "-p", "n=4", "--name", "count", "--watch", account="erin")
    assert "count.1: finished 2/2" in done.out
    state = json.loads(cli("status", "count.1", "--json", account="erin").out)
    assert state["parameters"] == {"n": 4} and [s["status"] for s in state["steps"]] == [
        "finished",
        "finished",
    ]
    assert "hunter2" not in json.dumps(state)
    logs = cli("logs", "count.1", account="erin").out
    assert "secret is ***" in logs and "hunter2" not in logs and "4 results/numbers.txt" in logs
    assert "==> step count" in cli("logs", "count.1", "--step", "count", account="erin").out
    listing = json.loads(cli("ls", "count.1", "--json", account="erin").out)
    names = {f["name"]: f["size"] for f in listing["files"]}
    assert names["results/numbers.txt"] == len("1\n2\n3\n4\n") and listing["disk_usage"] > 0
    cli("fetch", "count.1", "results/numbers.txt", "-o", str(tmp_path / "out"), account="erin")
    assert (tmp_path / "out/numbers.txt").read_text() == "1\n2\n3\n4\n"
    cli("fetch", "count.1", "results", "-o", str(tmp_path / "out"), account="erin")
    with zipfile.ZipFile(tmp_path / "out/results.zip") as archive:
        assert sorted(archive.namelist()) == ["numbers.txt", "report.txt"]
    assert "secret" in cli("secret", "list", account="erin").out.lower()
    assert "hunter2" not in cli("secret", "list", "--json", account="erin").out


def test_failure_restart_stop_delete(vre_server: VREServer, worker: None, analysis: Path) -> None:
    cli = vre_server.cli
    (analysis.parent / "code/count.sh").write_text("echo 'no input' >&2; exit 3\n")
    failed = cli("run", str(analysis), "--name", "broken", "--watch", account="erin", check=False)
    assert failed.code == 1 and "exit code 3" in failed.err
    assert "no input" in failed.err  # the tail of stderr is in the status
    ws = vre_server.home / "workspaces/erin/broken.1"
    (ws / "code/count.sh").write_text("seq 1 $1\n")  # fixed in the run's workspace
    restarted = cli("restart", "broken.1", "--from", "count", account="erin")
    assert "from count" in restarted.out
    wait_status(vre_server, "broken.1", "erin", "finished")
    assert (ws / "results/numbers.txt").read_text() == "1\n2\n3\n"
    analysis.write_text(SPEC.replace("mkdir -p results", "sleep 60"))
    cli("run", str(analysis), "--name", "sleeper", account="erin")
    wait_status(vre_server, "sleeper.1", "erin", "running")
    cli("stop", "sleeper.1", account="erin")
    wait_status(vre_server, "sleeper.1", "erin", "stopped")
    ws = vre_server.home / "workspaces/erin/sleeper.1"
    assert ws.exists()
    cli("delete", "sleeper.1", "--workspace", account="erin")
    assert not ws.exists()
    assert "sleeper" not in cli("runs", account="erin").out


def test_an_unconfigured_rucio_instance_is_refused_at_submit(
    vre_server: VREServer, worker: None, analysis: Path
) -> None:
    text = SPEC.replace("files: [code/count.sh]", "files: [code/count.sh, 'rucio(cern, data, x)']")
    analysis.write_text(text)
    refused = vre_server.cli("run", str(analysis), "--name", "far", account="erin", check=False)
    assert refused.code == 2
    assert "Rucio instance(s) cern not configured on this VRE (known: local)" in refused.err
    assert len(refused.err.strip().splitlines()) == 1
    assert "far" not in vre_server.cli("runs", account="erin").out  # nothing left behind
    assert not (vre_server.home / "workspaces/erin/far.1").exists()


def test_another_account_cannot_touch_my_runs(
    vre_server: VREServer, worker: None, analysis: Path, tmp_path: Path
) -> None:
    cli = vre_server.cli
    cli("run", str(analysis), "--name", "private", "--watch", account="erin")
    for args in (
        ["status", "private.1"],
        ["logs", "private.1"],
        ["ls", "private.1"],
        ["fetch", "private.1", "results", "-o", str(tmp_path)],
        ["stop", "private.1"],
        ["restart", "private.1"],
        ["delete", "private.1"],
    ):
        result = cli(*args, account="frank", check=False)
        assert result.code == 2 and "does not exist" in result.err, args
    assert json.loads(cli("runs", "--json", account="frank").out) == []
    escape = cli("fetch", "private.1", "../../../etc/passwd", account="erin", check=False)
    assert escape.code == 2 and "outside the workspace" in escape.err
    bad = cli("run", str(analysis), "-p", "nope=1", account="erin", check=False)
    assert bad.code == 2 and "unknown parameter" in bad.err
