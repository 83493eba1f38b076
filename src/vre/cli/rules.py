"""``vre rule``, ``quota``, ``transfers``, ``reaper`` and ``erase``."""

from __future__ import annotations

import typer

from vre.cli.common import client, did, errors_as_exit
from vre.cli.output import JsonOption, console, emit_json, show, table

rule_app = typer.Typer(
    help="Replication rules: keep N copies on matching RSEs.", no_args_is_help=True
)
quota_app = typer.Typer(help="Quotas per account and RSE.", no_args_is_help=True)
RULE_COLUMNS = [
    "id",
    "did",
    "account",
    "rse_expression",
    "copies",
    "state",
    "locks_ok",
    "locks_replicating",
    "locks_stuck",
    "expires_at",
]


@rule_app.command("add")
def rule_add(
    did_: str = typer.Argument(..., metavar="DID"),
    rse: str = typer.Option(..., "--rse", help="RSE expression, e.g. 'site=CERN&type=disk'."),
    copies: int = typer.Option(1, "--copies", help="How many copies."),
    lifetime: float | None = typer.Option(None, "--lifetime", help="Seconds until it expires."),
    account: str | None = typer.Option(None, "--account", help="Owner (admin only)."),
    comment: str = typer.Option("", "--comment"),
    as_json: bool = JsonOption,
) -> None:
    """Create a rule; transfers start at once (run 'vre worker' or 'vre up')."""
    with errors_as_exit():
        did(did_)
        created = client().add_rule(
            did_, rse, copies=copies, lifetime=lifetime, account=account, comment=comment
        )
    if as_json:
        emit_json(created)
    else:
        console.print(
            f"rule {created['id']} created: {created['state']}"
            f" ({created['locks_ok']} ok, {created['locks_replicating']} replicating)"
        )


@rule_app.command("list")
def rule_list(
    did_: str | None = typer.Option(None, "--did", help="Rules on this DID."),
    account: str | None = typer.Option(None, "--account", help="Rules of this account."),
    as_json: bool = JsonOption,
) -> None:
    """Your rules (everyone's for an admin)."""
    with errors_as_exit():
        show(client().rules(did_, account), as_json, RULE_COLUMNS)


@rule_app.command("show")
def rule_show(rule_id: int, as_json: bool = JsonOption) -> None:
    """A rule and the state of each of its locks (one per file and RSE)."""
    with errors_as_exit():
        detail = client().rule(rule_id)
    if as_json:
        emit_json(detail)
        return
    locks = detail.pop("locks")
    show({k: v for k, v in detail.items() if v not in (None, "")}, False)
    table(locks, ["scope", "name", "rse", "state", "bytes"])


@rule_app.command("delete")
def rule_delete(rule_id: int) -> None:
    """Delete a rule; replicas no other rule holds become reaper candidates."""
    with errors_as_exit():
        client().delete_rule(rule_id)
    console.print(f"rule {rule_id} deleted")


@quota_app.command("set")
def quota_set(account: str, rse: str, limit: int = typer.Argument(..., metavar="BYTES")) -> None:
    """Set ACCOUNT's quota on RSE in bytes (admin)."""
    with errors_as_exit():
        client().set_quota(account, rse, limit)
    console.print(f"quota of {account} on {rse}: {limit} bytes")


@quota_app.command("show")
def quota_show(account: str | None = typer.Argument(None), as_json: bool = JsonOption) -> None:
    """Quotas and usage per RSE (yours unless you name an account, admin)."""
    with errors_as_exit():
        show(client().quotas(account), as_json, ["account", "rse", "limit", "used", "files"])


def transfers_cmd(
    state: str | None = typer.Option(None, "--state", help="queued, submitted, done, failed."),
    rse: str | None = typer.Option(None, "--rse", help="Destination RSE."),
    as_json: bool = JsonOption,
) -> None:
    """Transfers with their state, attempts, rates and last error."""
    with errors_as_exit():
        found = client().transfers(state, rse)
    if as_json:
        emit_json(found)
        return
    for row in found:
        row["rate_mb_s"] = f"{row['rate_mb_s']:.1f}" if row["rate_mb_s"] else ""
    table(
        found,
        ["id", "did", "rse", "state", "attempts", "source", "bytes", "rate_mb_s", "last_error"],
    )


def reaper_cmd(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be deleted."),
    grace: float = typer.Option(0, help="Keep replicas that became free less than this ago (s)."),
    as_json: bool = JsonOption,
) -> None:
    """Delete replicas no rule holds (admin); --dry-run lists them."""
    with errors_as_exit():
        found = client().reaper(dry_run=dry_run, grace=grace)
    if as_json:
        emit_json(found)
        return
    verb = "would delete" if dry_run else "deleted"
    table(found, ["did", "rse", "bytes", "tombstone", "url"])
    console.print(f"{verb} {len(found)} replica(s)")


def erase(
    did_: str = typer.Argument(..., metavar="DID"),
    force: bool = typer.Option(False, "--force", help="Also when it has replicas or content."),
) -> None:
    """Delete a DID; with --force its replicas go through the reaper."""
    with errors_as_exit():
        scope, name = did(did_)
        outcome = client().erase(scope, name, force)
    console.print(f"{did_}: {outcome['status']}")
