"""``vre scope``, ``dataset``, ``container``, ``attach``, ``detach``, ``ls``, ``show``, ``meta``."""

from __future__ import annotations

import typer

from vre.cli.common import client, did, errors_as_exit, key_values
from vre.cli.output import JsonOption, console, show
from vre.lake.names import parse_pattern

scope_app = typer.Typer(help="Namespaces for DIDs.", no_args_is_help=True)
dataset_app = typer.Typer(help="Datasets: collections of files.", no_args_is_help=True)
container_app = typer.Typer(help="Containers: collections of collections.", no_args_is_help=True)
meta_app = typer.Typer(help="Metadata on DIDs.", no_args_is_help=True)

MetaOption = typer.Option(None, "--meta", "-m", help="KEY=VALUE, repeatable.")
DID_COLUMNS = ["scope", "name", "type", "bytes", "adler32", "open", "length"]


@scope_app.command("add")
def scope_add(
    scope: str,
    account: str | None = typer.Option(None, "--account", help="Owner (admin only)."),
    public: bool = typer.Option(False, "--public", help="Readable by every account."),
    as_json: bool = JsonOption,
) -> None:
    """Create a scope (private to its owner unless --public)."""
    with errors_as_exit():
        show(client().add_scope(scope, account, public), as_json)


@scope_app.command("list")
def scope_list(as_json: bool = JsonOption) -> None:
    """Scopes you can read."""
    with errors_as_exit():
        show(client().scopes(), as_json, ["name", "account", "public", "created_at"])


def _add_collection(kind: str, text: str, meta: list[str] | None, as_json: bool) -> None:
    with errors_as_exit():
        scope, name = did(text)
        show(client().add_collection(scope, name, kind, key_values(meta)), as_json)


@dataset_app.command("add")
def dataset_add(
    did_: str = typer.Argument(..., metavar="DID"),
    meta: list[str] | None = MetaOption,
    as_json: bool = JsonOption,
) -> None:
    """Create an (open) dataset SCOPE:NAME."""
    _add_collection("dataset", did_, meta, as_json)


@dataset_app.command("close")
def dataset_close(did_: str = typer.Argument(..., metavar="DID")) -> None:
    """Close a dataset: nothing more can be attached."""
    with errors_as_exit():
        client().set_open(*did(did_), False)
    console.print(f"{did_} closed")


@dataset_app.command("open")
def dataset_open(did_: str = typer.Argument(..., metavar="DID")) -> None:
    """Reopen a closed dataset."""
    with errors_as_exit():
        client().set_open(*did(did_), True)
    console.print(f"{did_} open")


@container_app.command("add")
def container_add(
    did_: str = typer.Argument(..., metavar="DID"),
    meta: list[str] | None = MetaOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a container SCOPE:NAME."""
    _add_collection("container", did_, meta, as_json)


def attach(
    parent: str = typer.Argument(..., help="Dataset or container."),
    children: list[str] = typer.Argument(..., help="DIDs to attach."),
) -> None:
    """Attach files to a dataset, or collections to a container."""
    with errors_as_exit():
        count = client().attach(*did(parent), children)["attached"]
    console.print(f"attached {count} DID(s) to {parent}")


def detach(
    parent: str = typer.Argument(..., help="Dataset or container."),
    children: list[str] = typer.Argument(..., help="DIDs to detach."),
) -> None:
    """Detach DIDs from a collection (they stay in the catalogue)."""
    with errors_as_exit():
        count = client().detach(*did(parent), children)["detached"]
    console.print(f"detached {count} DID(s) from {parent}")


def ls(
    pattern: str = typer.Argument(
        ..., help="SCOPE:PATTERN (DIDs, with * and ? wildcards), or a RUN (its workspace)."
    ),
    path: str = typer.Argument(".", help="With a RUN: a directory or file in its workspace."),
    type_: str | None = typer.Option(None, "--type", help="file, dataset, container, collection."),
    filter_: str | None = typer.Option(None, "--filter", help="Metadata filter: run>100,kind=mc"),
    recursive: bool = typer.Option(
        False, "--recursive", "-r", help="Also list collection contents."
    ),
    as_json: bool = JsonOption,
) -> None:
    """List DIDs by name pattern and metadata, or the files of a run's workspace."""
    if ":" not in pattern:  # run names never hold a colon, DID patterns always do
        from vre.cli.workflows import ls as run_ls

        run_ls(pattern, path, as_json)
        return
    with errors_as_exit():
        scope, name = parse_pattern(pattern)
        found = client().list_dids(scope, name, type=type_, filter=filter_, recursive=recursive)
    show(found, as_json, DID_COLUMNS)


def show_did(did_: str = typer.Argument(..., metavar="DID"), as_json: bool = JsonOption) -> None:
    """Details of a DID, its metadata, and the content of a collection."""
    with errors_as_exit():
        detail = client().show(*did(did_))
    if as_json:
        show(detail, True)
        return
    content = detail.pop("content")
    show({k: v for k, v in detail.items() if v is not None}, False)
    if content is not None:
        show(content, False, DID_COLUMNS)


@meta_app.command("get")
def meta_get(did_: str = typer.Argument(..., metavar="DID"), as_json: bool = JsonOption) -> None:
    """Show a DID's metadata."""
    with errors_as_exit():
        show(client().get_meta(*did(did_)), as_json)


@meta_app.command("set")
def meta_set(
    did_: str = typer.Argument(..., metavar="DID"),
    pairs: list[str] = typer.Argument(..., metavar="KEY=VALUE..."),
    as_json: bool = JsonOption,
) -> None:
    """Set metadata (numbers are stored as numbers)."""
    with errors_as_exit():
        show(client().set_meta(*did(did_), key_values(pairs)), as_json)


@meta_app.command("unset")
def meta_unset(
    did_: str = typer.Argument(..., metavar="DID"), key: str = typer.Argument(...)
) -> None:
    """Remove one metadata key."""
    with errors_as_exit():
        client().unset_meta(*did(did_), key)
    console.print(f"{key} removed from {did_}")
