"""An upload killed halfway leaves neither a catalogue entry nor bytes behind.

Two ways to die: the client is killed (the server sees the connection drop and
removes the partial file at once), or the server itself is killed (a pending-upload
row survives, and ``vre worker`` removes the bytes after the grace period).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import ROOT_PASSWORD, VRE, VREServer, start_server, stop_server
from tests.fixtures.xrootd import XRootD

SLOW_UPLOAD = textwrap.dedent(
    """
    import sys, time, httpx
    url, token = sys.argv[1], sys.argv[2]
    def body():
        while True:
            yield b"x" * 65536
            time.sleep(0.01)
    httpx.put(url, content=body(), headers={"Authorization": "Bearer " + token}, timeout=60)
    """
)


def files_under(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


def wait_until(condition, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def start_slow_upload(
    server: VREServer, scope: str, name: str, rse: str
) -> subprocess.Popen[bytes]:
    url = f"{server.url}/api/v1/files/{scope}/{name}?rse={rse}"
    return subprocess.Popen([sys.executable, "-c", SLOW_UPLOAD, url, server.tokens["root"]])


@pytest.fixture(scope="module")
def rses(
    vre_server: VREServer, xrootd_server: XRootD, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    disk = tmp_path_factory.mktemp("kill-disk")
    vre_server.cli("rse", "add", "KILL-DISK", disk.as_uri())
    vre_server.cli("rse", "add", "KILL-XRD", f"{xrootd_server.url}/kill")
    vre_server.cli("scope", "add", "killed")
    return {"KILL-DISK": disk, "KILL-XRD": xrootd_server.local("kill")}


@pytest.mark.parametrize("rse", ["KILL-DISK", "KILL-XRD"])
def test_client_killed_mid_upload(vre_server: VREServer, rses: dict[str, Path], rse: str) -> None:
    directory = rses[rse]
    client = start_slow_upload(vre_server, "killed", f"half-{rse}.bin", rse)
    assert wait_until(lambda: directory.exists() and len(files_under(directory)) == 1), (
        "the partial file never appeared"
    )
    (part,) = files_under(directory)
    assert ".vre-part-" in part.name
    time.sleep(0.5)
    client.send_signal(signal.SIGKILL)
    client.wait()
    assert wait_until(lambda: not files_under(directory)), files_under(directory)
    with vre_server.api() as api:
        assert api.get(f"/dids/killed/half-{rse}.bin").status_code == 404
        assert api.get("/dids/killed").json() == []


def test_server_killed_mid_upload_is_swept_by_the_worker(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    disk = tmp_path / "disk"
    process, url = start_server(home)
    token = httpx.post(
        f"{url}/api/v1/auth/login", json={"account": "root", "password": ROOT_PASSWORD}
    ).json()["token"]
    server = VREServer(url=url, home=home, tokens={"root": token})
    server.cli("rse", "add", "SWEEP-DISK", disk.as_uri())
    server.cli("scope", "add", "swept")
    client = start_slow_upload(server, "swept", "orphan.bin", "SWEEP-DISK")
    try:
        assert wait_until(lambda: disk.exists() and len(files_under(disk)) == 1)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        client.kill()
        client.wait()
    assert len(files_under(disk)) == 1  # the server died before it could clean up
    env = {k: v for k, v in os.environ.items() if not k.startswith("VRE_")}
    env["VRE_HOME"] = str(home)
    done = subprocess.run(
        [VRE, "worker", "--once", "--upload-grace", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "interrupted upload" in done.stderr
    assert files_under(disk) == []
    process, url = start_server(home)
    try:
        with httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}
        ) as api:
            assert api.get("/dids/swept").json() == []
    finally:
        stop_server(process)
