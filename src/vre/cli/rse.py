"""``vre rse``: storage elements and expressions."""

from __future__ import annotations

import typer

from vre.cli.common import client, errors_as_exit, key_values
from vre.cli.output import JsonOption, console, emit_json, fail, show

rse_app = typer.Typer(help="Storage elements (RSEs).", no_args_is_help=True)


def _flat(rse: dict) -> dict:
    attrs = ",".join(f"{k}={v}" for k, v in rse["attributes"].items())
    return {**rse, "attributes": attrs, "options": ",".join(rse.get("options", []))}


def _options(items: list[str] | None) -> dict[str, str]:
    """KEY=VALUE protocol options, values kept as strings (the server checks them)."""
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"invalid option {item!r}: expected KEY=VALUE")
        result[key.strip()] = value
    return result


@rse_app.command("add")
def rse_add(
    name: str,
    url: str = typer.Argument(
        ...,
        help="URL prefix: file:///path, root://host:port//path, davs://host:port/path"
        " (or https://, dav://, http://), s3://bucket/path",
    ),
    attr: list[str] | None = typer.Option(None, "--attr", help="KEY=VALUE, repeatable."),
    option: list[str] | None = typer.Option(
        None,
        "--option",
        help="Protocol setting KEY=VALUE, repeatable: S3 endpoint_url, key, secret, region;"
        " WebDAV username, password, token, verify (true, false or a CA file). Never shown.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Add a storage element (admin only)."""
    with errors_as_exit():
        attrs = {k: str(v) for k, v in key_values(attr, "attribute").items()}
        added = client().add_rse(name, url, attrs, _options(option))
    show(added if as_json else _flat(added), as_json)


@rse_app.command("set-options")
def rse_set_options(
    name: str,
    option: list[str] | None = typer.Option(
        None, "--option", help="KEY=VALUE, repeatable; replaces all options (none clears them)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Replace a storage element's protocol options (admin only)."""
    with errors_as_exit():
        changed = client().set_rse_options(name, _options(option))
    show(changed if as_json else _flat(changed), as_json)


@rse_app.command("list")
def rse_list(as_json: bool = JsonOption) -> None:
    """All storage elements."""
    with errors_as_exit():
        found = client().rses()
    if as_json:
        emit_json(found)
    else:
        show([_flat(r) for r in found], False, ["name", "prefix", "attributes", "options"])


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
