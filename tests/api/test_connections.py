"""Connections that never finish their headers, too many from one client, and forged
forwarded addresses, against a real ``vre serve``."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.fixtures.server import ROOT_PASSWORD, start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("connections") / "home"
    home.mkdir()
    limits = {
        "VRE_HEADER_TIMEOUT": "1",
        "VRE_MAX_CONNECTIONS_PER_ADDRESS": "40",
        "VRE_LOGIN_ADDRESS_FAILURES": "3",
        "VRE_LOGIN_FAILURES": "50",
    }
    process, url = start_server(home, settings=limits)
    try:
        yield url
    finally:
        stop_server(process)


def token(url: str) -> str:
    answer = httpx.post(
        f"{url}/api/v1/auth/login", json={"account": "root", "password": ROOT_PASSWORD}
    )
    answer.raise_for_status()
    return str(answer.json()["token"])


def dribbling(url: str, count: int) -> list[socket.socket]:
    where = urlparse(url)
    opened = []
    for _ in range(count):
        sock = socket.create_connection((where.hostname, where.port))
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")  # never ends its headers
        opened.append(sock)
    return opened


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except (TimeoutError, ConnectionResetError):
        return False


def test_unfinished_headers_are_cut_off_and_others_are_served(server: str) -> None:
    bearer = {"Authorization": f"Bearer {token(server)}"}
    held = dribbling(server, 30)
    try:
        assert httpx.get(f"{server}/api/v1/whoami", headers=bearer).status_code == 200
        time.sleep(1.5)
        assert all(closed_by_server(sock, 3) for sock in held)
    finally:
        for sock in held:
            sock.close()


def test_one_address_cannot_hold_every_connection(server: str) -> None:
    held = dribbling(server, 60)
    try:
        refused = [closed_by_server(sock, 0.5) for sock in held]
        assert sum(refused) >= 20  # beyond VRE_MAX_CONNECTIONS_PER_ADDRESS, closed at once
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(f"{server}/api/v1/health").status_code == 200


def test_a_forged_forwarded_address_does_not_escape_throttling(server: str, tmp_path: Path) -> None:
    answers = [
        httpx.post(
            f"{server}/api/v1/auth/login",
            json={"account": f"nobody{i}", "password": "wrong-password"},
            headers={"X-Forwarded-For": f"203.0.113.{i}"},
        ).status_code
        for i in range(6)
    ]
    assert answers[:3] == [401, 401, 401] and set(answers[3:]) == {429}


def test_connections_still_sending_headers_never_take_every_slot(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Many addresses could each stay under the per-address cap: beyond half of
    VRE_MAX_CONNECTIONS the oldest half-open connection goes, finished requests are served."""
    home = tmp_path_factory.mktemp("half-open") / "home"
    home.mkdir()
    limits = {"VRE_HEADER_TIMEOUT": "60", "VRE_MAX_CONNECTIONS": "40"}
    process, url = start_server(home, settings=limits)
    try:
        bearer = {"Authorization": f"Bearer {token(url)}"}
        held = dribbling(url, 60)
        try:
            answers = [httpx.get(f"{url}/api/v1/whoami", headers=bearer) for _ in range(5)]
            assert [a.status_code for a in answers] == [200] * 5
            assert sum(closed_by_server(sock, 0.2) for sock in held) >= 20  # the oldest went
        finally:
            for sock in held:
                sock.close()
    finally:
        stop_server(process)
