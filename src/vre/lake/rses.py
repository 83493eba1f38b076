"""Storage elements: a name, a URL prefix and attributes, chosen by expressions."""

from __future__ import annotations

import re

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vre import policy, sealing
from vre.errors import Conflict, Invalid, NotFound
from vre.identity.models import Account
from vre.lake import expressions, storage
from vre.lake.models import RSE, RSEAttribute

RSE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}\Z")
ATTR_KEY = re.compile(r"^[A-Za-z0-9_\-.]{1,64}\Z")
ATTR_VALUE = re.compile(r"^[A-Za-z0-9_\-.:]{1,255}\Z")


def _check_attributes(attributes: dict[str, str]) -> dict[str, str]:
    for key, value in attributes.items():
        if not ATTR_KEY.match(key):
            raise Invalid(f"invalid RSE attribute key {key!r}")
        if not ATTR_VALUE.match(str(value)):
            raise Invalid(
                f"invalid value {value!r} for RSE attribute {key!r}:"
                " letters, digits, '_', '-', '.' or ':'"
            )
    return {k: str(v) for k, v in attributes.items()}


def add(
    session: Session,
    actor: Account,
    name: str,
    prefix: str,
    attributes: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
) -> RSE:
    """A new storage element; ``options`` are protocol settings (endpoint, credentials).

    Options may hold secrets: they are stored sealed (``vre.sealing``), opened only
    where a storage filesystem is built, and never shown (``option_keys`` tells which
    are set).
    """
    policy.require(actor, "rse.manage", message="only an admin can manage RSEs")
    if not RSE_NAME.match(name or ""):
        raise Invalid(
            f"invalid RSE name {name!r}: letters, digits, '_' or '-', starting with a letter"
            " or digit"
        )
    prefix = storage.check_prefix(prefix)
    checked = storage.check_options(prefix, options)
    attrs = _check_attributes(attributes or {})
    if session.scalar(select(RSE.id).where(RSE.name == name)) is not None:
        raise Conflict(f"RSE {name!r} already exists")
    rse = RSE(name=name, prefix=prefix, options=sealing.seal_options(checked))
    session.add(rse)
    session.flush()
    session.add_all(RSEAttribute(rse_id=rse.id, key=k, value=v) for k, v in attrs.items())
    return rse


def get(session: Session, name: str) -> RSE:
    rse = session.scalar(select(RSE).where(RSE.name == name))
    if rse is None:
        raise NotFound(f"RSE {name!r} does not exist")
    return rse


def attributes(session: Session, rse: RSE) -> dict[str, str]:
    query = select(RSEAttribute.key, RSEAttribute.value).where(RSEAttribute.rse_id == rse.id)
    return dict(session.execute(query.order_by(RSEAttribute.key)).all())


def all_with_attributes(session: Session) -> dict[str, dict[str, str]]:
    result: dict[str, dict[str, str]] = {
        name: {} for name in session.scalars(select(RSE.name).order_by(RSE.name))
    }
    query = select(RSE.name, RSEAttribute.key, RSEAttribute.value).join(
        RSEAttribute, RSEAttribute.rse_id == RSE.id
    )
    for name, key, value in session.execute(query):
        result[name][key] = value
    return result


def list_all(session: Session) -> list[RSE]:
    return list(session.scalars(select(RSE).order_by(RSE.name)))


def option_keys(rse: RSE) -> list[str]:
    """Which protocol options an RSE has; their values are never shown."""
    return sorted(rse.options or {})


def opened_options(rse: RSE) -> dict[str, object]:
    """An RSE's protocol options in plain text: for the storage layer (which opens them
    itself when handed the stored ones) and for checks, never for an answer."""
    return sealing.open_options(rse.options or {})


def set_options(session: Session, actor: Account, name: str, options: dict[str, str]) -> RSE:
    """Replace all protocol options of an RSE (``{}`` clears them); admin only."""
    policy.require(actor, "rse.manage", message="only an admin can manage RSEs")
    rse = get(session, name)
    checked = storage.check_options(rse.prefix, options)
    rse.options = sealing.seal_options(checked)  # a new dict: the JSON changes
    return rse


def set_attribute(session: Session, actor: Account, name: str, key: str, value: str) -> None:
    policy.require(actor, "rse.manage", message="only an admin can manage RSEs")
    rse = get(session, name)
    attrs = _check_attributes({key: value})
    session.execute(
        delete(RSEAttribute).where(RSEAttribute.rse_id == rse.id, RSEAttribute.key == key)
    )
    session.add(RSEAttribute(rse_id=rse.id, key=key, value=attrs[key]))


def delete_attribute(session: Session, actor: Account, name: str, key: str) -> None:
    policy.require(actor, "rse.manage", message="only an admin can manage RSEs")
    rse = get(session, name)
    result = session.execute(
        delete(RSEAttribute).where(RSEAttribute.rse_id == rse.id, RSEAttribute.key == key)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"RSE {name!r} has no attribute {key!r}")


def resolve(session: Session, expression: str) -> list[str]:
    """The RSE names an expression selects; a bad expression is ``Invalid`` with its position."""
    try:
        return sorted(expressions.evaluate(expression, all_with_attributes(session)))
    except expressions.ExpressionError as exc:
        raise Invalid(str(exc).splitlines()[0]) from exc  # one line: the position is in it
