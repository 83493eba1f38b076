"""Secrets per account, handed to steps as environment variables or files."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from vre.errors import Conflict, Invalid, NotFound
from vre.identity.models import Account
from vre.workflows.models import Secret

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
MAX_VALUE = 1024 * 1024


def add(
    session: Session,
    actor: Account,
    name: str,
    value: str,
    *,
    kind: str = "env",
    overwrite: bool = False,
) -> Secret:
    if not NAME.match(name or ""):
        raise Invalid(f"invalid secret name {name!r}: an environment variable name")
    if kind not in ("env", "file"):
        raise Invalid("a secret is given to steps as 'env' or 'file'")
    if len(value) > MAX_VALUE:
        raise Invalid("a secret is at most 1 MiB")
    if kind == "env":
        _check_variable(name, value)
    row = session.get(Secret, (actor.id, name))
    if row is not None and not overwrite:
        raise Conflict(f"secret {name!r} exists: use --overwrite")
    if row is None:
        row = Secret(account_id=actor.id, name=name, kind=kind)
        session.add(row)
    row.kind = kind
    row.seal(value)  # the database never holds the plain text
    return row


def _check_variable(name: str, value: str) -> None:
    """An environment variable holds one line without NUL: refused here, once, rather
    than at every run (a container's env file cannot carry several lines)."""
    if "\n" in value or "\r" in value:
        raise Invalid(
            f"secret {name} holds several lines, which an environment variable cannot"
            f" take: add it as a file secret ('vre secret add {name} --file PATH')"
        )
    if "\0" in value:
        raise Invalid(f"secret {name} holds a NUL character, which an environment cannot take")


def names(session: Session, actor: Account) -> list[tuple[str, str]]:
    query = select(Secret.name, Secret.kind).where(Secret.account_id == actor.id)
    return [(n, k) for n, k in session.execute(query.order_by(Secret.name))]


def remove(session: Session, actor: Account, name: str) -> None:
    row = session.get(Secret, (actor.id, name))
    if row is None:
        raise NotFound(f"secret {name!r} does not exist")
    session.delete(row)
