"""The identity attacks of issue 14, each made against a real ``vre serve``.

Brute force (per account and per address, counted by two server processes sharing one
database), enumeration, tokens outliving their parent, tokens of disabled and deleted
accounts, and another account's ``user.`` scope, tokens and account.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.conftest import drop_postgres_database, postgres_database
from tests.fixtures.server import ROOT_PASSWORD, VREServer, start_server, stop_server

LOCKOUT = 15  # seconds: long enough to outlast 300 quick refusals on a busy machine


def login(url: str, name: str, password: str, **extra: object) -> httpx.Response:
    body = {"account": name, "password": password, **extra}
    return httpx.post(f"{url}/api/v1/auth/login", json=body, timeout=60)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def servers(
    base: Path, settings: dict[str, str], count: int, database_url: str | None = None
) -> Iterator[list[VREServer]]:
    """``count`` server processes on one VRE_HOME and one database."""
    home = base / "home"
    home.mkdir()
    started = []
    try:
        for _ in range(count):  # one after the other: the first one migrates
            started.append(start_server(home, database_url, settings))
        token = login(started[0][1], "root", ROOT_PASSWORD).json()["token"]
        yield [VREServer(url=url, home=home, tokens={"root": token}) for _, url in started]
    finally:
        for process, _ in started:
            stop_server(process)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def two_servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[VREServer]]:
    settings = {
        "VRE_LOGIN_FAILURES": "5",
        "VRE_LOGIN_ADDRESS_FAILURES": "10000",
        "VRE_LOGIN_LOCKOUT": str(LOCKOUT),
        "VRE_LOGIN_LOCKOUT_MAX": "600",
    }
    base = tmp_path_factory.mktemp("guarded")
    if request.param == "sqlite":
        yield from servers(base, settings, 2)
        return
    url, name = postgres_database()
    try:
        yield from servers(base, settings, 2, url)
    finally:
        drop_postgres_database(name)


def add_account(server: VREServer, name: str, password: str) -> None:
    with server.api() as api:
        assert api.post("/accounts", json={"name": name, "password": password}).status_code == 201


def guess(urls: list[str], name: str, count: int) -> list[httpx.Response]:
    """``count`` wrong passwords for ``name``, sent to the servers in turn."""
    clients = [httpx.Client(base_url=u, timeout=60) for u in urls]
    try:
        return [
            clients[i % len(clients)].post(
                "/api/v1/auth/login", json={"account": name, "password": f"guess-{i:04d}"}
            )
            for i in range(count)
        ]
    finally:
        for client in clients:
            client.close()


def assert_throttled(answer: httpx.Response) -> int:
    assert answer.status_code == 429, answer.text
    body = answer.json()
    assert body["error"] == "too_many_requests"
    assert body["message"].startswith("too many failed logins from this account: try again in")
    wait = int(answer.headers["Retry-After"])
    assert 1 <= wait <= LOCKOUT
    return wait


def test_300_wrong_passwords_lock_the_account_out_on_every_server(
    two_servers: list[VREServer],
) -> None:
    first, second = two_servers
    add_account(first, "alice", "alice-password")
    answers = guess([first.url, second.url], "alice", 300)
    assert [a.status_code for a in answers[:5]] == [401] * 5
    for answer in answers[5:]:
        assert_throttled(answer)
    # the right password waits out the lock-out too, on either server process
    assert_throttled(login(first.url, "alice", "alice-password"))
    wait = assert_throttled(login(second.url, "alice", "alice-password"))
    time.sleep(wait + 1)
    assert login(second.url, "alice", "alice-password").status_code == 201
    assert login(first.url, "alice", "guess").status_code == 401  # counting starts again


def test_a_missing_account_is_answered_like_an_existing_one(
    two_servers: list[VREServer],
) -> None:
    first, second = two_servers
    add_account(first, "bob", "bob-password")
    real = guess([first.url, second.url], "bob", 30)
    missing = guess([first.url, second.url], "nobody-at-all", 30)
    assert [a.status_code for a in real] == [a.status_code for a in missing]
    assert [a.json()["error"] for a in real] == [a.json()["error"] for a in missing]
    assert real[0].json() == missing[0].json()  # "wrong account name or password"
    for answer in missing[5:]:
        assert_throttled(answer)


@pytest.fixture(scope="module")
def one_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VREServer]:
    settings = {"VRE_LOGIN_ADDRESS_FAILURES": "10", "VRE_LOGIN_LOCKOUT": "600"}
    for found in servers(tmp_path_factory.mktemp("spray"), settings, 1):
        yield found[0]


def test_one_address_guessing_many_accounts_is_locked_out(one_address: VREServer) -> None:
    add_account(one_address, "carol", "carol-password")
    sprayed = [login(one_address.url, f"user{i}", "Summer2024!") for i in range(12)]
    assert [a.status_code for a in sprayed] == [401] * 10 + [429] * 2
    locked = login(one_address.url, "carol", "carol-password")
    assert locked.status_code == 429, locked.text
    assert "from this address" in locked.json()["message"] and locked.headers["Retry-After"]


def test_a_child_token_never_outlives_its_parent_and_dies_with_it(vre_server: VREServer) -> None:
    """The attack: a 0.001-day token minted a 366-day one that survived its revocation."""
    vre_server.add_account("dora")
    parent = login(vre_server.url, "dora", "password-123", lifetime_days=0.001).json()
    with httpx.Client(base_url=vre_server.url + "/api/v1", timeout=60) as api:
        child = api.post("/tokens", json={"lifetime_days": 366}, headers=bearer(parent["token"]))
        assert child.status_code == 201, child.text
        child = child.json()
        assert child["parent"] == parent["id"]
        assert datetime.fromisoformat(child["expires_at"]) <= datetime.fromisoformat(
            parent["expires_at"]
        )
        grandchild = api.post("/tokens", json={}, headers=bearer(child["token"])).json()
        too_long = api.post("/tokens", json={"lifetime_days": 367}, headers=bearer(child["token"]))
        assert too_long.status_code == 400 and too_long.json()["error"] == "invalid"
        assert api.delete(f"/tokens/{parent['id']}", headers=bearer(parent["token"])).is_success
        for token in (parent, child, grandchild):
            refused = api.get("/whoami", headers=bearer(token["token"]))
            assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
            made = api.post("/tokens", json={}, headers=bearer(token["token"]))
            assert made.status_code == 401


def test_disabled_and_deleted_accounts_tokens_stop_working(vre_server: VREServer) -> None:
    erin, fred = vre_server.add_account("erin"), vre_server.add_account("fred")
    with vre_server.api() as root, httpx.Client(base_url=vre_server.url + "/api/v1") as api:
        assert root.post("/accounts/erin/disable").json()["status"] == "disabled"
        refused = api.get("/whoami", headers=bearer(erin))
        assert refused.status_code == 401 and "disabled" in refused.json()["message"]
        assert login(vre_server.url, "erin", "password-123").status_code == 401
        assert root.post("/accounts/erin/enable").json()["status"] == "active"
        assert api.get("/whoami", headers=bearer(erin)).json()["name"] == "erin"

        assert root.delete("/accounts/fred").json() == {"account": "fred", "revoked_tokens": 1}
        assert api.get("/whoami", headers=bearer(fred)).status_code == 401
        assert login(vre_server.url, "fred", "password-123").status_code == 401
        again = root.post("/accounts", json={"name": "fred", "password": "password-456"})
        assert again.status_code == 409 and "not reused" in again.json()["message"]
        listed = {a["name"]: a["status"] for a in root.get("/accounts").json()}
        assert listed["fred"] == "deleted" and listed["erin"] == "active"


def test_another_account_cannot_touch_mine(vre_server: VREServer) -> None:
    """alice cannot take user.root, list or revoke bob's tokens, disable or delete bob."""
    vre_server.add_account("alice2")
    vre_server.add_account("bob2")
    with vre_server.api("bob2") as as_bob:
        bobs_token = as_bob.get("/tokens").json()[0]["id"]
    with vre_server.api("alice2") as api:
        taken = api.post("/scopes", json={"name": "user.root"})
        assert taken.status_code == 403 and taken.json()["error"] == "forbidden"
        assert "'user.root' is reserved" in taken.json()["message"]
        assert api.post("/scopes", json={"name": "user.alice2"}).status_code == 201
        for method, path, body, status in [
            ("GET", "/tokens?account=bob2", None, 403),
            ("DELETE", f"/tokens/{bobs_token}", None, 404),
            ("POST", "/accounts/bob2/disable", None, 403),
            ("DELETE", "/accounts/bob2", None, 403),
            ("PUT", "/accounts/bob2/password", {"password": "taken-over-1"}, 403),
        ]:
            answer = api.request(method, path, json=body)
            assert answer.status_code == status, (method, path, answer.text)
    with vre_server.api("bob2") as as_bob:
        assert as_bob.get("/whoami").json()["status"] == "active"
        assert [t["id"] for t in as_bob.get("/tokens").json()] == [bobs_token]
    with vre_server.api() as root:  # an admin may
        assert [t["id"] for t in root.get("/tokens?account=bob2").json()] == [bobs_token]
        assert root.delete(f"/tokens/{bobs_token}").is_success
    with vre_server.api("bob2") as as_bob:
        assert as_bob.get("/whoami").status_code == 401


def test_a_password_change_logs_out_everyone_else(vre_server: VREServer) -> None:
    vre_server.add_account("gina")
    stolen = login(vre_server.url, "gina", "password-123").json()["token"]
    with vre_server.api("gina") as api:
        wrong = api.put("/accounts/gina/password", json={"password": "new-pass-1"})
        assert wrong.status_code == 403 and "old password" in wrong.json()["message"]
        body = {"password": "new-pass-1", "old_password": "password-123"}
        assert api.put("/accounts/gina/password", json=body).json()["revoked_tokens"] == 1
        assert api.get("/whoami").json()["name"] == "gina"  # the token it was changed with
        assert api.get("/whoami", headers=bearer(stolen)).status_code == 401
    assert login(vre_server.url, "gina", "password-123").status_code == 401
    assert login(vre_server.url, "gina", "new-pass-1").status_code == 201
    with vre_server.api() as root:  # an admin's reset revokes every token of the account
        reset = root.put("/accounts/gina/password", json={"password": "reset-pass-1"})
        assert reset.json()["revoked_tokens"] == 2
    with vre_server.api("gina") as api:
        assert api.get("/whoami").status_code == 401
