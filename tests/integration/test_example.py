"""``examples/dilepton``: the demo loads its data and runs it; ``vre run`` runs it too.

A real ``vre serve`` and a real ``vre worker`` (separate processes, as deployed); the demo is
loaded into the server's database the way ``vre up --demo`` loads it, the worker executes the
queued run on this host, and the results are read back through the API: the workspace, the
summary's physics, and the staged-out summary with its provenance in the catalogue.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.server import ROOT_PASSWORD, VRE, VREServer, start_server, stop_server
from vre.config import Settings
from vre.db import make_engine, make_sessionmaker, transaction
from vre.demo import EXAMPLE, example_dir, generator, load_demo
from vre.errors import NotFound
from vre.lake import meta
from vre.lake.models import DID
from vre.workflows.models import Run

REPO = EXAMPLE.parents[1]
DONE = ("finished", "failed", "stopped", "deleted")
INPUTS = [f"demo:run00{n}/events.root" for n in (1, 2, 3)]


def start_worker(home: Path, log: Path) -> subprocess.Popen[bytes]:
    """``vre worker`` whose PATH finds this venv's ``python`` first, as an activated venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VRE_")}
    venv_bin = str(Path(sys.executable).parent)
    env.update(
        VRE_HOME=str(home),
        VRE_WORKER_INTERVAL="0.3",
        PATH=os.pathsep.join([venv_bin, env.get("PATH", "")]),
    )
    out = open(log, "wb")  # noqa: SIM115 (lives with the process)
    return subprocess.Popen([VRE, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_run(server: VREServer, label: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with server.api() as api:
        while True:
            state = api.get(f"/runs/{label}").raise_for_status().json()
            if state["status"] in DONE:
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{label} still {state['status']} after {timeout:.0f} s")
            time.sleep(0.3)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VREServer]:
    base = tmp_path_factory.mktemp("example")
    home = base / "home"
    home.mkdir()
    process, url = start_server(home)
    worker = None
    try:
        settings = Settings(home=home, database_url=None)
        engine = make_engine(settings.resolved_database_url())
        try:
            summary = load_demo(make_sessionmaker(engine), settings)
        finally:
            engine.dispose()
        assert "run dilepton.1" in summary, summary
        worker = start_worker(home, base / "worker.log")
        answer = httpx.post(
            f"{url}/api/v1/auth/login", json={"account": "root", "password": ROOT_PASSWORD}
        )
        answer.raise_for_status()
        yield VREServer(url=url, home=home, tokens={"root": answer.json()["token"]})
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        stop_server(process)


def test_demo_run_finishes_with_plots_summary_and_provenance(demo: VREServer) -> None:
    began = time.monotonic()
    state = wait_for_run(demo, "dilepton.1")
    print(f"demo run dilepton.1 {state['status']} {time.monotonic() - began:.1f} s after start")
    with demo.api() as api:
        logs = api.get("/runs/dilepton.1/logs").text
        assert state["status"] == "finished", f"{state['error']}\n{logs}"
        assert state["steps_done"] == state["steps_total"] == 2
        assert state["parameters"]["python"] == sys.executable

        names = {f["name"] for f in api.get("/runs/dilepton.1/workspace").json()["files"]}
        assert {
            "code/fit.py",
            "code/plot.py",
            "results/summary.json",
            "results/fit.json",
            "results/mass_spectrum.png",
            "results/limits.png",
            *(f"inputs/{d.replace(':', '/')}" for d in INPUTS),
        } <= names
        assert not any("__pycache__" in n or n.startswith(".cache") for n in names), names
        for plot in ("mass_spectrum", "limits"):
            png = api.get(f"/runs/dilepton.1/workspace/results/{plot}.png").content
            assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000

        summary = api.get("/runs/dilepton.1/workspace/results/summary.json").json()
        check_physics(summary)

        did = "dilepton.1/results/summary.json"
        stored = api.get(f"/dids/demo/{did}").raise_for_status().json()
        assert stored["type"] == "file" and stored["bytes"] > 0
        provenance = api.get(f"/meta/demo/{did}").raise_for_status().json()
        assert provenance["vre_run"] == "dilepton.1"
        assert provenance["vre_spec_digest"] == state["spec_digest"]
        inputs = json.loads(provenance["vre_inputs"])
        assert sorted(i["did"] for i in inputs) == INPUTS
        for entry in inputs:
            scope, name = entry["did"].split(":", 1)
            assert entry["adler32"] == api.get(f"/dids/{scope}/{name}").json()["adler32"]
        dataset = api.get("/dids/demo/dilepton-results").raise_for_status().json()
        assert did in {c["name"] for c in dataset["content"]}


def check_physics(summary: dict[str, Any]) -> None:
    """The fit finds the injected resonance; every limit is a positive, ordered number."""
    truth = generator()
    best = summary["best_fit"]
    assert abs(best["mass_gev"] - truth.SIGNAL_MASS) < 10, best
    low, high = best["mass_interval_gev"]
    assert low < best["mass_gev"] < high
    assert best["local_significance"] > 4, best
    assert 0.3 * truth.SIGNAL_XSEC_FB < best["xsec_fb"] < 2 * truth.SIGNAL_XSEC_FB, best
    assert summary["events"]["total"] == sum(i["events"] for i in summary["inputs"])
    assert len(summary["inputs"]) == 3
    assert summary["events"]["total"] > 3 * truth.EVENTS_PER_RUN
    limits = summary["limits"]
    assert len(limits) > 50
    for point in limits:
        assert 0 < point["expected_minus2_fb"] < point["expected_minus1_fb"]
        assert point["expected_minus1_fb"] < point["expected_fb"] < point["expected_plus1_fb"]
        assert point["expected_plus1_fb"] < point["expected_plus2_fb"]
        assert 0 < point["observed_fb"] < 100
    at_signal = min(limits, key=lambda p: abs(p["mass_gev"] - truth.SIGNAL_MASS))
    assert at_signal["observed_fb"] > at_signal["expected_plus2_fb"]  # the excess shows
    assert at_signal["observed_fb"] > best["xsec_fb"]
    expected = [p["expected_fb"] for p in limits]
    assert expected[0] > expected[-1]  # more sensitive where the background falls


def test_vre_run_of_the_example_from_the_cli(demo: VREServer, tmp_path: Path) -> None:
    """The README's commands: run with --watch, list the results, fetch them."""
    began = time.monotonic()
    done = demo.cli("run", "examples/dilepton/reana.yaml", "--watch", cwd=REPO)
    elapsed = time.monotonic() - began
    label = re.search(r"^(dilepton\.\d+):", done.out, re.M)
    assert label, done.out
    run = label.group(1)
    assert f"{run}: finished 2/2" in done.out
    print(f"vre run examples/dilepton/reana.yaml --watch: {run} finished in {elapsed:.1f} s")

    listing = demo.cli("ls", run, "results").out
    for name in ("summary.json", "mass_spectrum.png", "limits.png"):
        assert f"results/{name}" in listing
    demo.cli("fetch", run, "results/", "--output", str(tmp_path))
    with zipfile.ZipFile(io.BytesIO((tmp_path / "results.zip").read_bytes())) as archive:
        assert {"summary.json", "fit.json", "mass_spectrum.png", "limits.png"} <= set(
            archive.namelist()
        )
        check_physics(json.loads(archive.read("summary.json")))
    with demo.api() as api:
        meta_values = api.get(f"/meta/demo/{run}/results/summary.json").json()
    assert meta_values["vre_run"] == run


def _state(sessions: sessionmaker[Session], settings: Settings) -> Any:
    """Everything the demo writes: DIDs with their metadata, runs, bytes on disk."""
    with transaction(sessions) as session:
        dids = [
            (d.scope, d.name, d.type, d.adler32, sorted(meta.get_all(session, d.id).items()))
            for d in session.scalars(select(DID).order_by(DID.scope, DID.name))
        ]
        runs = [
            (r.name, r.number, r.status, r.spec_digest)
            for r in session.scalars(select(Run).order_by(Run.id))
        ]
    files = sorted(
        (p.relative_to(settings.home).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in settings.home.rglob("*")
        if p.is_file()
    )
    return dids, runs, files


def test_demo_loads_once_and_queues_the_example(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "demo-home", database_url=None)
    first = load_demo(sessions, settings)
    assert "run dilepton.1" in first and "3 ROOT file(s)" in first, first
    before = _state(sessions, settings)
    assert load_demo(sessions, settings).startswith("already loaded")
    assert _state(sessions, settings) == before

    dids = {(d[1], d[2]): dict(d[4]) for d in before[0] if d[0] == "demo"}
    assert {("dilepton", "container"), ("dilepton-2024", "dataset")} <= set(dids)
    for number in (1, 2, 3):
        values = dids[(f"run00{number}/events.root", "file")]
        assert values["run"] == number and values["kind"] == "data" and values["year"] == 2024
        assert values["events"] > 20_000
    with transaction(sessions) as session:
        run = session.scalar(select(Run).where(Run.name == "dilepton"))
        assert run is not None and run.label == "dilepton.1" and run.status == "queued"
        assert run.parameters["python"] == sys.executable
        assert session.scalar(select(func.count()).select_from(Run)) == 1
        workspace = Path(run.workspace)
    written = sorted(p.relative_to(workspace).as_posix() for p in workspace.rglob("*.py"))
    assert written == ["code/fit.py", "code/generate.py", "code/plot.py"]
    assert (workspace / "code" / "fit.py").read_bytes() == (EXAMPLE / "code/fit.py").read_bytes()


def test_demo_without_the_example_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=str(tmp_path)):
        example_dir(tmp_path)
