"""A real ``vre serve`` for the benchmarks: started on a free port, stopped after."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from vre.client import Client

ROOT_PASSWORD = "bench-root-password"
VRE = str(Path(sys.executable).parent / "vre")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(home: Path, database_url: str | None = None) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VRE_")}
    env.update(VRE_HOME=str(home), VRE_ROOT_PASSWORD=ROOT_PASSWORD)
    if database_url:
        env["VRE_DATABASE_URL"] = database_url
    log = home.parent / f"server-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [VRE, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vre serve exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/api/v1/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"vre serve did not answer within 60 s:\n{log.read_text()[-3000:]}")


def login(url: str) -> Client:
    answer = httpx.post(
        f"{url}/api/v1/auth/login", json={"account": "root", "password": ROOT_PASSWORD}
    )
    answer.raise_for_status()
    return Client(url, answer.json()["token"])


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path
    started_in: float

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_worker(
    home: Path, log: Path, *args: str, settle: float = 0.3, **env_vars: str
) -> WorkerProcess:
    """``vre worker ARGS`` on ``home``, returned once it logged its start (and ``settle``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VRE_")}
    env.update(VRE_HOME=str(home), **env_vars)
    start = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [VRE, "worker", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    worker = WorkerProcess(process, log, 0.0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"vre worker exited:\n{log.read_text()[-3000:]}")
        if " started" in log.read_text():
            worker.started_in = time.perf_counter() - start
            time.sleep(settle)
            return worker
        time.sleep(0.05)
    worker.stop()
    raise SystemExit(f"vre worker did not start within 60 s:\n{log.read_text()[-3000:]}")
