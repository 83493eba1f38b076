"""The permission policy: its documented table, and every restricted action probed.

Each restricted action in ``vre.policy.POLICY`` has a probe here: an HTTP call made
by ``eve``, an ordinary account that owns nothing of alice's. A new restricted action
without a probe fails the test, so the policy, the docs and the routes cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.test_http import login
from vre import policy
from vre.api.app import create_app
from vre.config import Settings

DOCS = Path(__file__).parents[2] / "docs" / "permissions.md"
SPEC = """version: 0.9.0
workflow:
  type: serial
  specification:
    steps:
      - name: hello
        environment: bash
        commands: [echo hi]
"""

Probe = tuple[str, str, dict | None]


def test_the_documented_table_is_the_policy() -> None:
    assert policy.table() in DOCS.read_text(), "regenerate docs/permissions.md from the policy"


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """alice owns a private scope, a dataset, a rule, a token and a run; eve owns a scope."""
    settings = Settings(home=tmp_path / "home", database_url=db_url, root_password="root-pass-1")
    with TestClient(create_app(settings)) as client:
        root = login(client)
        for name in ("alice", "eve"):
            made = client.post(
                "/api/v1/accounts",
                json={"name": name, "password": f"{name}-password"},
                headers=root,
            )
            assert made.status_code == 201, made.text
        rse = {"name": "LOCAL", "prefix": (tmp_path / "rse").as_uri()}
        assert client.post("/api/v1/rses", json=rse, headers=root).status_code == 201
        alice, eve = login(client, "alice", "alice-password"), login(client, "eve", "eve-password")
        ids = {"alice": alice["Authorization"], "eve": eve["Authorization"]}
        for headers, scope in ((alice, "user.alice"), (eve, "user.eve")):
            assert client.post("/api/v1/scopes", json={"name": scope}, headers=headers).is_success
            dataset = {"scope": scope, "name": "ds", "type": "dataset"}
            assert client.post("/api/v1/dids", json=dataset, headers=headers).is_success
        rule = client.post(
            "/api/v1/rules", json={"did": "user.alice:ds", "rse_expression": "LOCAL"}, headers=alice
        )
        assert rule.status_code == 201, rule.text
        ids["rule"] = str(rule.json()["id"])
        ids["token"] = str(client.post("/api/v1/tokens", json={}, headers=alice).json()["id"])
        run = client.post(
            "/api/v1/runs", json={"name": "fit", "specification": SPEC}, headers=alice
        )
        assert run.status_code == 201, run.text
        yield client, ids


def probes(ids: dict[str, str]) -> dict[str, list[Probe]]:
    rule, token = ids["rule"], ids["token"]
    return {
        "account.create": [("POST", "/api/v1/accounts", {"name": "mallory", "admin": True})],
        "account.list": [("GET", "/api/v1/accounts", None)],
        "account.password": [
            ("PUT", "/api/v1/accounts/alice/password", {"password": "taken-over-1"}),
            ("PUT", "/api/v1/accounts/nobody/password", {"password": "taken-over-1"}),
        ],
        "account.disable": [
            ("POST", "/api/v1/accounts/alice/disable", None),
            ("POST", "/api/v1/accounts/alice/enable", None),
        ],
        "account.delete": [("DELETE", "/api/v1/accounts/alice", None)],
        "token.list_other": [("GET", "/api/v1/tokens?account=alice", None)],
        "token.revoke": [("DELETE", f"/api/v1/tokens/{token}", None)],
        "scope.create_for_other": [("POST", "/api/v1/scopes", {"name": "x", "account": "alice"})],
        "scope.read": [
            ("GET", "/api/v1/dids/user.alice/ds", None),
            ("GET", "/api/v1/dids/user.alice", None),
            ("GET", "/api/v1/meta/user.alice/ds", None),
            ("GET", "/api/v1/replicas/user.alice/ds", None),
        ],
        "scope.write": [
            ("POST", "/api/v1/dids", {"scope": "user.alice", "name": "evil", "type": "dataset"}),
            ("POST", "/api/v1/meta/user.alice/ds", {"meta": {"k": "v"}}),
            ("PUT", "/api/v1/status/user.alice/ds", {"open": False}),
            ("DELETE", "/api/v1/dids/user.alice/ds", None),
        ],
        "rse.manage": [
            ("POST", "/api/v1/rses", {"name": "EVIL", "prefix": "file:///"}),
            ("PUT", "/api/v1/rses/LOCAL/attributes/k", {"value": "v"}),
            ("PUT", "/api/v1/rses/LOCAL/options", {"options": {}}),
            ("DELETE", "/api/v1/rses/LOCAL/attributes/k", None),
        ],
        "rule.create": [
            ("POST", "/api/v1/rules", {"did": "user.alice:ds", "rse_expression": "LOCAL"})
        ],
        "rule.create_for_other": [
            (
                "POST",
                "/api/v1/rules",
                {"did": "user.eve:ds", "rse_expression": "LOCAL", "account": "alice"},
            )
        ],
        "rule.read": [("GET", f"/api/v1/rules/{rule}", None)],
        "rule.delete": [("DELETE", f"/api/v1/rules/{rule}", None)],
        "rule.list_all": [("GET", "/api/v1/rules", None)],
        "quota.set": [("PUT", "/api/v1/quotas/eve/LOCAL", {"bytes": 10**12})],
        "quota.show_other": [("GET", "/api/v1/quotas?account=alice", None)],
        "transfer.list_all": [("GET", "/api/v1/transfers", None)],
        "reaper.run": [("GET", "/api/v1/reaper", None), ("POST", "/api/v1/reaper", None)],
        "metrics.read": [("GET", "/metrics", None)],
        "run.manage": [
            ("GET", "/api/v1/runs/fit.1", None),
            ("POST", "/api/v1/runs/fit.1/start", {}),
            ("POST", "/api/v1/runs/fit.1/stop", None),
            ("GET", "/api/v1/runs/fit.1/logs", None),
            ("GET", "/api/v1/runs/fit.1/workspace", None),
            ("DELETE", "/api/v1/runs/fit.1", None),
        ],
        "run.list_all": [("GET", "/api/v1/runs", None)],
    }


def expected(permission: policy.Permission) -> Callable[[object], bool]:
    if permission.filtered:
        return lambda answer: answer.status_code == 200 and answer.json() == []  # type: ignore[attr-defined]
    status = 404 if permission.hidden else 403
    code = "not_found" if permission.hidden else "forbidden"
    return lambda answer: answer.status_code == status and answer.json()["error"] == code  # type: ignore[attr-defined]


def test_another_account_cannot_do_any_restricted_action(
    world: tuple[TestClient, dict[str, str]],
) -> None:
    client, ids = world
    restricted = {
        name
        for name, p in policy.POLICY.items()
        if p.who not in (policy.Who.ANYONE, policy.Who.SELF)
    }
    table = probes(ids)
    assert set(table) == restricted, "every restricted action needs a probe"
    eve = {"Authorization": ids["eve"]}
    for action, calls in table.items():
        check = expected(policy.POLICY[action])
        for method, path, body in calls:
            answer = client.request(method, path, json=body, headers=eve)
            assert check(answer), (action, method, path, answer.status_code, answer.text)
    alice = {"Authorization": ids["alice"]}  # and nothing of alice's moved
    assert client.get(f"/api/v1/rules/{ids['rule']}", headers=alice).status_code == 200
    assert client.get("/api/v1/runs/fit.1", headers=alice).json()["status"] == "created"
    assert client.get("/api/v1/dids/user.alice/ds", headers=alice).status_code == 200


def test_the_owner_and_an_admin_may(world: tuple[TestClient, dict[str, str]]) -> None:
    client, ids = world
    root = login(client)
    alice = {"Authorization": ids["alice"]}
    for headers, method, path in [
        (root, "GET", "/api/v1/accounts"),
        (root, "GET", "/api/v1/reaper"),
        (root, "GET", "/metrics"),
        (root, "GET", "/api/v1/quotas?account=alice"),
        (root, "GET", f"/api/v1/rules/{ids['rule']}"),
        (root, "GET", "/api/v1/dids/user.alice/ds"),
        (alice, "GET", f"/api/v1/rules/{ids['rule']}"),
        (alice, "GET", "/api/v1/runs/fit.1"),
    ]:
        answer = client.request(method, path, headers=headers)
        assert answer.status_code == 200, (method, path, answer.text)
    assert len(client.get("/api/v1/rules", headers=root).json()) == 1  # admins see every row
    assert len(client.get("/api/v1/runs", headers=root).json()) == 1
    assert client.put("/api/v1/quotas/alice/LOCAL", json={"bytes": 5}, headers=root).is_success
