"""``vre rse``: storage elements and expressions."""

from __future__ import annotations

import typer

from vre.cli.common import client, errors_as_exit, key_values
from vre.cli.output import JsonOption, console, emit_json, show

rse_app = typer.Typer(help="Storage elements (RSEs).", no_args_is_help=True)


def _flat(rse: dict) -> dict:
    attrs = ",".join(f"{k}={v}" for k, v in rse["attributes"].items())
    return {**rse, "attributes": attrs}


@rse_app.command("add")
def rse_add(
    name: str,
    url: str = typer.Argument(..., help="URL prefix: file:///path or root://host:port//path"),
    attr: list[str] | None = typer.Option(None, "--attr", help="KEY=VALUE, repeatable."),
    as_json: bool = JsonOption,
) -> None:
    """Add a storage element (admin only)."""
    with errors_as_exit():
        attrs = {k: str(v) for k, v in key_values(attr, "attribute").items()}
        show(_flat(client().add_rse(name, url, attrs)), as_json)


@rse_app.command("list")
def rse_list(as_json: bool = JsonOption) -> None:
    """All storage elements."""
    with errors_as_exit():
        found = client().rses()
    if as_json:
        emit_json(found)
    else:
        show([_flat(r) for r in found], False, ["name", "prefix", "attributes"])


@rse_app.command("show")
def rse_show(name: str, as_json: bool = JsonOption) -> None:
    """One storage element with its attributes."""
    with errors_as_exit():
        found = client().rse(name)
    show(found if as_json else _flat(found), as_json)


@rse_app.command("resolve")
def rse_resolve(expression: str, as_json: bool = JsonOption) -> None:
    """The RSEs an expression selects, e.g. 'site=CERN&type=disk'."""
    with errors_as_exit():
        names = [r["name"] for r in client().rses(expression)]
    if as_json:
        emit_json(names)
    else:
        for name in names:
            console.print(name, highlight=False)
