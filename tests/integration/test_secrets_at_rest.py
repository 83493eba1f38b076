"""Secrets at rest and in the environment, against real ``vre serve``, ``vre worker``
and ``vre up`` processes started under umask 000.

The attacks: reading the database file for other accounts' secrets and RSE passwords;
reading ``/proc/PID/environ`` of the server and worker for the root password and the
database URL; files the server made readable by everyone because the umask let it.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.ports import free_port
from tests.fixtures.server import VRE, VREServer, stop_server

SECRET = "alice-plain-secret-4d0c1"
RSE_PASSWORD = "rse-dav-password-93ab2"
ROOT_PASSWORD = "root-env-password-61f0e"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def base_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VRE_")}
    return {**env, "VRE_HOME": str(home), **extra}


def wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()}")
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the server did not answer within 60 s")


def start(command: str, home: Path, log: Path, **extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """``vre serve`` or ``vre up`` under umask 000, answering; returns it and its URL."""
    port = free_port()
    process = subprocess.Popen(
        [VRE, command, "--port", str(port)],
        env=base_env(home, **extra),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        umask=0,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, url, log)
    except RuntimeError:
        process.kill()
        raise
    return process, url


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VREServer, int]]:
    """A server whose home was made 0777 and which runs under umask 000, with no root
    password given (it generates one); yields it and its PID."""
    base = tmp_path_factory.mktemp("at-rest")
    home = base / "home"
    old = os.umask(0)
    try:
        home.mkdir()
    finally:
        os.umask(old)
    process, url = start("serve", home, base / "serve.log")
    try:
        password = (home / "root-password").read_text().strip()
        answer = httpx.post(
            f"{url}/api/v1/auth/login", json={"account": "root", "password": password}
        )
        answer.raise_for_status()
        server = VREServer(url=url, home=home, tokens={"root": answer.json()["token"]})
        server.add_account("alice", "alice-password")
        server.add_account("bob", "bob-password")
        yield server, process.pid
    finally:
        stop_server(process)


def test_home_database_key_and_password_files_are_private_whatever_the_umask(
    served: tuple[VREServer, int],
) -> None:
    server, _ = served
    with server.api("alice") as api:  # a write, so the WAL and shared memory exist
        api.post("/secrets", json={"name": "FIRST", "value": "x" * 10}).raise_for_status()
    home = server.home
    assert mode(home) == 0o700
    assert mode(home / "vre.db") == 0o600
    assert mode(home / "vre.db-wal") == 0o600
    assert mode(home / "vre.db-shm") == 0o600
    assert mode(home / "secret.key") == 0o600
    assert mode(home / "root-password") == 0o600
    wide = [p for p in home.rglob("*") if mode(p) & 0o077]
    assert wide == [], wide


def test_the_database_file_holds_no_secret_and_no_rse_password(
    served: tuple[VREServer, int],
) -> None:
    server, _ = served
    with server.api("alice") as api:
        api.post("/secrets", json={"name": "TOKEN", "value": SECRET}).raise_for_status()
        api.post(
            "/secrets", json={"name": "CERT", "value": f"-----\n{SECRET}-file\n", "kind": "file"}
        ).raise_for_status()
    with server.api() as api:
        created = api.post(
            "/rses",
            json={
                "name": "DAV-AT-REST",
                "prefix": "davs://dav.example.org/data",
                "options": {"username": "vre", "password": RSE_PASSWORD},
            },
        )
        assert created.status_code == 201, created.text
        answers = [created.text, api.get("/rses").text, api.get("/rses/DAV-AT-REST").text]
        answers.append(
            api.put(
                "/rses/DAV-AT-REST/options",
                json={"options": {"username": "vre", "password": RSE_PASSWORD + "2"}},
            ).text
        )
    for answer in answers:  # the API names the options, never shows them
        assert RSE_PASSWORD not in answer and '"options":["password","username"]' in answer
    files = [server.home / n for n in ("vre.db", "vre.db-wal", "vre.db-shm")]
    stored = b"".join(f.read_bytes() for f in files if f.exists())
    assert b"vre-sealed:v1:" in stored
    for plain in (SECRET, RSE_PASSWORD):
        assert plain.encode() not in stored, plain


def test_another_account_cannot_list_read_or_delete_alices_secrets(
    served: tuple[VREServer, int],
) -> None:
    server, _ = served
    with server.api("alice") as api:
        api.post("/secrets", json={"name": "ALICE_ONLY", "value": SECRET}).raise_for_status()
        assert "ALICE_ONLY" in api.get("/secrets").text and SECRET not in api.get("/secrets").text
    with server.api("bob") as api:
        assert "ALICE_ONLY" not in api.get("/secrets").text
        assert api.delete("/secrets/ALICE_ONLY").status_code == 404  # bob has no such secret
    listed = server.cli("secret", "list", "--json", account="bob").out
    assert "ALICE_ONLY" not in listed and SECRET not in listed
    with server.api("alice") as api:
        assert "ALICE_ONLY" in api.get("/secrets").text  # still there


def test_a_multiline_env_secret_is_refused_when_added(served: tuple[VREServer, int]) -> None:
    server, _ = served
    with server.api("alice") as api:
        answer = api.post("/secrets", json={"name": "PEM", "value": "line one\nline two"})
        assert answer.status_code == 400
        assert answer.json()["error"] == "invalid" and "--file" in answer.json()["message"]
        assert "PEM" not in api.get("/secrets").text
    done = server.cli("secret", "add", "PEM", "--value", "one\r\ntwo", account="alice", check=False)
    assert done.code == 2
    assert len(done.err.strip().splitlines()) == 1 and "--file" in done.err, done.err
    pem = server.home.parent / "key.pem"
    pem.write_text("line one\nline two\n")
    server.cli("secret", "add", "PEM", "--file", str(pem), account="alice")  # as a file: fine


def test_the_root_password_and_database_url_leave_the_server_and_worker_environment(
    served: tuple[VREServer, int], tmp_path: Path
) -> None:
    server, server_pid = served
    assert b"VRE_HOME=" in environ(server_pid)  # the server's own environment, readable
    log = tmp_path / "worker.log"
    database = f"sqlite:///{server.home / 'vre.db'}"
    worker = subprocess.Popen(
        [VRE, "worker", "--interval", "0.3"],
        env=base_env(server.home, VRE_ROOT_PASSWORD=ROOT_PASSWORD, VRE_DATABASE_URL=database),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        umask=0,
    )
    try:
        deadline = time.monotonic() + 60
        while "started" not in log.read_text() and time.monotonic() < deadline:
            assert worker.poll() is None, log.read_text()
            time.sleep(0.1)
        assert "started" in log.read_text(), log.read_text()
        seen = environ(worker.pid)
        assert b"VRE_HOME=" in seen
        assert ROOT_PASSWORD.encode() not in seen and b"VRE_ROOT_PASSWORD" not in seen
        assert database.encode() not in seen and b"VRE_DATABASE_URL" not in seen
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


def test_vre_up_forgets_the_root_password_it_was_started_with(tmp_path: Path) -> None:
    home = tmp_path / "home"
    process, url = start("up", home, tmp_path / "up.log", VRE_ROOT_PASSWORD=ROOT_PASSWORD)
    try:
        seen = environ(process.pid)
        assert b"VRE_HOME=" in seen and ROOT_PASSWORD.encode() not in seen
        answer = httpx.post(
            f"{url}/api/v1/auth/login", json={"account": "root", "password": ROOT_PASSWORD}
        )
        assert answer.is_success  # it was used, then forgotten
        assert mode(home) == 0o700 and mode(home / "vre.db") == 0o600
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_a_bad_secret_key_stops_the_start_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [VRE, "serve", "--port", str(free_port())],
        env=base_env(tmp_path / "home", VRE_SECRET_KEY="not-a-key"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "VRE_SECRET_KEY is not a secret key" in done.stderr
