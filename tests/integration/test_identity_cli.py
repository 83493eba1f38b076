"""``vre account password|disable|enable|delete``, ``vre token list --account`` and a
throttled ``vre login``, against a real ``vre serve``."""

from __future__ import annotations

import json

from tests.fixtures.server import Result, VREServer


def one_line(result: Result, *words: str) -> None:
    """A refusal: exit 2 and one readable line naming the reason."""
    assert result.code == 2, (result.out, result.err)
    assert result.err.strip().count("\n") == 0, result.err
    for word in words:
        assert word in result.err, result.err


def test_password_changes(vre_server: VREServer) -> None:
    first = vre_server.add_account("henry")
    vre_server.add_account_token("henry", "password-123")  # the token the CLI uses now
    changed = vre_server.cli(
        "account", "password", "--old", "password-123", "--new", "henry-new-1", account="henry"
    )
    assert "password of henry changed; 1 other token(s) revoked" in changed.out
    assert json.loads(vre_server.cli("whoami", "--json", account="henry").out)["name"] == "henry"
    vre_server.tokens["henry-old"] = first
    one_line(vre_server.cli("whoami", account="henry-old", check=False), "revoked")
    wrong = vre_server.cli(
        "account",
        "password",
        "--old",
        "nope-nope",
        "--new",
        "henry-new-2",
        account="henry",
        check=False,
    )
    one_line(wrong, "old password is wrong")
    vre_server.add_account("ivan")
    taken = vre_server.cli(
        "account", "password", "henry", "--new", "stolen-pw-1", account="ivan", check=False
    )
    one_line(taken, "only 'henry' itself or an admin")
    reset = vre_server.cli("account", "password", "henry", "--new", "henry-reset-1")
    assert "1 other token(s) revoked" in reset.out
    one_line(vre_server.cli("whoami", account="henry", check=False), "revoked")
    vre_server.add_account_token("henry", "henry-reset-1")


def test_disable_enable_delete_and_others_tokens(vre_server: VREServer) -> None:
    vre_server.add_account("judy")
    vre_server.add_account("karl")
    one_line(vre_server.cli("account", "disable", "judy", account="karl", check=False), "admin")
    one_line(
        vre_server.cli("account", "delete", "judy", "--yes", account="karl", check=False), "admin"
    )
    one_line(
        vre_server.cli("token", "list", "--account", "judy", account="karl", check=False), "admin"
    )
    assert "judy disabled" in vre_server.cli("account", "disable", "judy").out
    one_line(vre_server.cli("whoami", account="judy", check=False), "disabled")
    vre_server.cli("account", "enable", "judy")
    assert json.loads(vre_server.cli("whoami", "--json", account="judy").out)["name"] == "judy"

    listed = json.loads(vre_server.cli("token", "list", "--account", "judy", "--json").out)
    assert len(listed) == 1
    vre_server.cli("token", "revoke", str(listed[0]["id"]))  # an admin revokes anyone's
    one_line(vre_server.cli("whoami", account="judy", check=False), "revoked")

    deleted = vre_server.cli("account", "delete", "karl", "--yes")
    assert "karl deleted; 1 token(s) revoked" in deleted.out
    one_line(vre_server.cli("whoami", account="karl", check=False), "revoked")
    one_line(
        vre_server.cli("account", "add", "karl", "--password", "karl-again-1", check=False),
        "not reused",
    )
    table = vre_server.cli("account", "list").out
    assert any("karl" in row and "deleted" in row for row in table.splitlines())


def test_user_scopes_and_a_throttled_login(vre_server: VREServer) -> None:
    vre_server.add_account("lena")
    one_line(vre_server.cli("scope", "add", "user.root", account="lena", check=False), "reserved")
    vre_server.cli("scope", "add", "user.lena", account="lena")
    wrong = ["login", vre_server.url, "--account", "lena", "--password", "not-lenas"]
    for _ in range(5):  # VRE_LOGIN_FAILURES
        one_line(vre_server.cli(*wrong, check=False), "wrong account name or password")
    one_line(vre_server.cli(*wrong, check=False), "too many failed logins", "try again in")
    right = ["login", vre_server.url, "--account", "lena", "--password", "password-123"]
    one_line(vre_server.cli(*right, check=False), "too many failed logins")
