"""``vre up --demo`` and ``vre serve`` on PostgreSQL, as an operator starts them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import drop_postgres_database, postgres_database
from tests.fixtures.ports import free_port
from tests.fixtures.server import ROOT_PASSWORD, VRE, start_server, stop_server
from vre.client import Client


def test_up_with_demo_then_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VRE_")}
    env.update(VRE_HOME=str(tmp_path / "home"), HOME=str(tmp_path))
    process = subprocess.Popen(
        [VRE, "up", "--demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        password_file = tmp_path / "home" / "root-password"
        assert oct(password_file.stat().st_mode & 0o777) == "0o600"
        password = password_file.read_text().strip()
        api = Client(url=url, token="")
        api.login("root", password)
        names = {d["name"] for d in api.list_dids("demo", "*")}
        assert {"dilepton", "dilepton-2024", "run001/events.root"} <= names
        files = api.replicas(["demo:dilepton"])
        assert len(files) == 3 and all(f["replicas"] for f in files)
        # the demo queued a run of examples/dilepton; the worker thread runs it to the end
        deadline = time.monotonic() + 60
        while True:
            state = api.run_status("dilepton.1")
            if state["status"] in ("finished", "failed", "stopped") or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert state["status"] == "finished", state
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert password in output  # printed once, on first start
    assert "VRE stopped" in output


def test_serve_on_postgresql(tmp_path: Path) -> None:
    url, name = postgres_database()
    home = tmp_path / "home"
    home.mkdir()
    process, server = start_server(home, database_url=url)
    try:
        api = Client(url=server, token="")
        api.login("root", ROOT_PASSWORD)
        disk = tmp_path / "disk"
        api.add_rse("PG-DISK", disk.as_uri(), {"type": "disk"})
        api.add_scope("pg")
        source = tmp_path / "data.bin"
        source.write_bytes(os.urandom(300_000))
        api.upload(source, "pg", "PG-DISK", dataset="pg-ds", meta={"run": 3})
        assert [d["name"] for d in api.list_dids("pg", "*", filter="run=3")] == ["data.bin"]
        done = api.download(["pg:pg-ds"], tmp_path / "out", through_api=True)
        assert done[0].path.read_bytes() == source.read_bytes()
        assert not (home / "vre.db").exists()  # the catalogue really lives in PostgreSQL
    finally:
        stop_server(process)
        drop_postgres_database(name)
