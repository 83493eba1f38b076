"""The HTTP layer: every endpoint checks the caller, errors have one shape."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from vre.api.app import create_app
from vre.config import Settings


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path / "home", database_url=db_url, root_password="root-pass-1")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def login(client: TestClient, account: str = "root", password: str = "root-pass-1") -> dict:
    answer = client.post("/api/v1/auth/login", json={"account": account, "password": password})
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def test_health_and_openapi_need_no_token(client: TestClient) -> None:
    assert client.get("/api/v1/health").json()["status"] == "ok"
    spec = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/replicas/bulk" in spec["paths"]


def test_every_endpoint_but_health_and_login_needs_a_token(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    checked = 0
    for path, methods in spec["paths"].items():
        if path in ("/api/v1/health", "/api/v1/auth/login"):
            continue
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method in methods:
            for headers in ({}, {"Authorization": "Bearer vre_not-a-real-token"}):
                answer = client.request(method.upper(), concrete, headers=headers)
                assert answer.status_code == 401, (method, path, answer.text)
                assert answer.json()["error"] == "unauthorized"
                checked += 1
    assert checked >= 40


def test_errors_have_error_and_message(client: TestClient) -> None:
    headers = login(client)
    cases = [
        (client.post("/api/v1/scopes", json={"name": "../evil"}, headers=headers), 400, "invalid"),
        (client.post("/api/v1/scopes", json={}, headers=headers), 400, "invalid"),
        (client.get("/api/v1/dids/nope/x", headers=headers), 404, "not_found"),
        (client.get("/api/v1/rses?expression=(A", headers=headers), 400, "invalid"),
        (
            client.post("/api/v1/auth/login", json={"account": "root", "password": "no"}),
            401,
            "unauthorized",
        ),
    ]
    for answer, status, code in cases:
        assert answer.status_code == status, answer.text
        body = answer.json()
        assert body["error"] == code and body["message"]
    client.post("/api/v1/scopes", json={"name": "dup"}, headers=headers)
    again = client.post("/api/v1/scopes", json={"name": "dup"}, headers=headers)
    assert again.status_code == 409 and again.json()["error"] == "conflict"


def test_non_admin_cannot_manage_accounts_or_rses(client: TestClient) -> None:
    root = login(client)
    client.post("/api/v1/accounts", json={"name": "eve", "password": "eve-password"}, headers=root)
    eve = login(client, "eve", "eve-password")
    for method, path, body in [
        ("POST", "/api/v1/accounts", {"name": "mallory", "password": "x" * 10, "admin": True}),
        ("GET", "/api/v1/accounts", None),
        ("POST", "/api/v1/rses", {"name": "EVIL", "prefix": "file:///"}),
        ("PUT", "/api/v1/rses/ANY/attributes/k", {"value": "v"}),
        ("POST", "/api/v1/scopes", {"name": "other", "account": "root"}),
    ]:
        answer = client.request(method, path, json=body, headers=eve)
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json()["error"] == "forbidden"


def test_another_account_cannot_revoke_my_token(client: TestClient) -> None:
    root = login(client)
    client.post("/api/v1/accounts", json={"name": "eve", "password": "eve-password"}, headers=root)
    eve = login(client, "eve", "eve-password")
    mine = client.post("/api/v1/tokens", json={"label": "mine"}, headers=root).json()
    assert client.delete(f"/api/v1/tokens/{mine['id']}", headers=eve).status_code == 404
    assert (
        client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {mine['token']}"}).json()[
            "name"
        ]
        == "root"
    )
