"""``vre login``, ``whoami``, ``account`` and ``token``."""

from __future__ import annotations

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
        show(client().accounts(), as_json, ["name", "kind", "admin", "email", "created_at"])


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
def token_list(as_json: bool = JsonOption) -> None:
    """List your active tokens (never their secrets)."""
    with errors_as_exit():
        show(client().tokens(), as_json, ["id", "label", "created_at", "expires_at"])


@token_app.command("revoke")
def token_revoke(
    token_id: int = typer.Argument(..., help="The token id from 'vre token list'."),
) -> None:
    """Revoke a token at once."""
    with errors_as_exit():
        client().revoke_token(token_id)
    console.print(f"token {token_id} revoked")
