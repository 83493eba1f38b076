"""``vre login``, ``whoami``, ``account`` and ``token``."""

from __future__ import annotations

from urllib.parse import quote

import typer

from vre.cli.common import client, errors_as_exit
from vre.cli.output import JsonOption, console, emit_json, show
from vre.client import Client, save_login

account_app = typer.Typer(help="Manage accounts (admin).", no_args_is_help=True)
token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


def login(
    url: str = typer.Argument(..., help="The VRE server, e.g. http://127.0.0.1:8080"),
    account: str = typer.Option(..., "--account", "-a", help="Account name."),
    password: str | None = typer.Option(None, "--password", "-p", help="Prompted if omitted."),
    lifetime_days: float = typer.Option(30, help="How long the stored token lives."),
) -> None:
    """Log in and store a token in your config (~/.config/vre/config.json)."""
    if password is None:
        password = typer.prompt("Password", hide_input=True)
    with errors_as_exit():
        api = Client(url=url, token="")
        answer = api.login(account, password, lifetime_days)
        path = save_login(url.rstrip("/"), answer["token"], account)
    console.print(f"Logged in to {url} as [bold]{account}[/bold]; token stored in {path}")


def whoami(as_json: bool = JsonOption) -> None:
    """Show the account you are acting as."""
    with errors_as_exit():
        show(client().whoami(), as_json)


@account_app.command("add")
def account_add(
    name: str,
    admin: bool = typer.Option(False, "--admin", help="Give the account admin rights."),
    password: str | None = typer.Option(None, "--password", "-p"),
    service: bool = typer.Option(False, "--service", help="A service account, not a user."),
    email: str | None = typer.Option(None, "--email"),
    as_json: bool = JsonOption,
) -> None:
    """Create an account (admin only)."""
    with errors_as_exit():
        created = client().add_account(
            name, password=password, admin=admin, kind="service" if service else "user", email=email
        )
    show(created, as_json)


@account_app.command("list")
def account_list(as_json: bool = JsonOption) -> None:
    """List accounts (admin only)."""
    with errors_as_exit():
        show(
            client().accounts(),
            as_json,
            ["name", "kind", "admin", "status", "email", "created_at"],
        )


def _account_path(name: str) -> str:
    return f"/accounts/{quote(name, safe='')}"


@account_app.command("password")
def account_password(
    name: str | None = typer.Argument(
        None, help="Whose password (admin only for another account); yours if omitted."
    ),
    old: str | None = typer.Option(None, "--old", help="Your current password (prompted)."),
    new: str | None = typer.Option(None, "--new", help="The new password (prompted)."),
) -> None:
    """Change your password, or (admin) set another account's.

    Every other token of the account is revoked: your own change keeps only the token
    you run this with, an admin's change revokes all of the account's tokens."""
    with errors_as_exit():
        api = client()
        me = api.whoami()["name"]
        target = name or me
        own = target == me
        if own and old is None:
            old = typer.prompt("Current password", hide_input=True)
        if new is None:
            new = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
        body = {"password": new, "old_password": old if own else None}
        done = api.call("PUT", f"{_account_path(target)}/password", json=body)
    console.print(
        f"password of {target} changed; {done['revoked_tokens']} other token(s) revoked",
        highlight=False,
    )


@account_app.command("disable")
def account_disable(name: str) -> None:
    """Disable an account (admin only): it cannot log in, its tokens are refused."""
    with errors_as_exit():
        client().call("POST", f"{_account_path(name)}/disable")
    console.print(f"account {name} disabled (its tokens are refused until it is enabled)")


@account_app.command("enable")
def account_enable(name: str) -> None:
    """Enable a disabled account again (admin only); its tokens work again."""
    with errors_as_exit():
        client().call("POST", f"{_account_path(name)}/enable")
    console.print(f"account {name} enabled")


@account_app.command("delete")
def account_delete(
    name: str,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete an account (admin only): its tokens are revoked, its name is never reused.

    What it owns (scopes, data, rules, runs) stays, still owned by the deleted account."""
    if not yes:
        typer.confirm(f"Delete account {name} and revoke all its tokens?", abort=True)
    with errors_as_exit():
        done = client().call("DELETE", _account_path(name))
    console.print(f"account {name} deleted; {done['revoked_tokens']} token(s) revoked")


@token_app.command("create")
def token_create(
    lifetime_days: float = typer.Option(30, help="Days until the token expires."),
    label: str = typer.Option("", help="A note to recognise the token by."),
    as_json: bool = JsonOption,
) -> None:
    """Create a token; it is shown once and never again."""
    with errors_as_exit():
        created = client().create_token(lifetime_days, label)
    if as_json:
        emit_json(
            {"token": created["token"], "expires_at": created["expires_at"], "id": created["id"]}
        )
    else:
        console.print(created["token"], highlight=False)
        console.print(f"id {created['id']}, expires {created['expires_at']}", style="dim")


@token_app.command("list")
def token_list(
    account: str | None = typer.Option(
        None, "--account", "-a", help="Another account's tokens (admin only)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """List your live tokens, or an account's (admin); never their secrets."""
    with errors_as_exit():
        rows = client().call("GET", "/tokens", params={"account": account} if account else {})
        show(rows, as_json, ["id", "label", "parent", "created_at", "expires_at"])


@token_app.command("revoke")
def token_revoke(
    token_id: int = typer.Argument(..., help="The token id from 'vre token list'."),
) -> None:
    """Revoke a token at once, and every token made with it (an admin: anyone's)."""
    with errors_as_exit():
        client().revoke_token(token_id)
    console.print(f"token {token_id} revoked, with the tokens made with it")
