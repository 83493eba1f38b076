"""Accounts: who may act, and the root account created on first start."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from vre import policy
from vre.errors import Conflict, Invalid, NotFound, Unauthorized
from vre.identity.models import Account
from vre.identity.passwords import hash_password, verify_password

ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-.]{0,63}\Z")
KINDS = ("user", "service")


def validate_name(name: str) -> str:
    if not ACCOUNT_NAME.match(name or ""):
        raise Invalid(
            f"invalid account name {name!r}: use lower-case letters, digits, '_', '-' or '.'"
            " (at most 64 characters, starting with a letter or digit)"
        )
    return name


def get(session: Session, name: str) -> Account:
    account = session.scalar(select(Account).where(Account.name == name))
    if account is None:
        raise NotFound(f"account {name!r} does not exist")
    return account


def create(
    session: Session,
    actor: Account | None,
    name: str,
    *,
    password: str | None = None,
    is_admin: bool = False,
    kind: str = "user",
    email: str | None = None,
) -> Account:
    """Only an admin creates accounts (``actor`` None is the bootstrap itself)."""
    if actor is not None:
        policy.require(actor, "account.create", message="only an admin can create accounts")
    validate_name(name)
    if kind not in KINDS:
        raise Invalid(f"invalid account kind {kind!r}: choose one of {', '.join(KINDS)}")
    if password is not None and len(password) < 8:
        raise Invalid("password too short: use at least 8 characters")
    if session.scalar(select(Account.id).where(Account.name == name)) is not None:
        raise Conflict(f"account {name!r} already exists")
    account = Account(
        name=name,
        kind=kind,
        is_admin=is_admin,
        email=email,
        password_hash=hash_password(password) if password else None,
    )
    session.add(account)
    session.flush()
    return account


def list_all(session: Session, actor: Account) -> list[Account]:
    policy.require(actor, "account.list")
    return list(session.scalars(select(Account).order_by(Account.name)))


def authenticate(session: Session, name: str, password: str) -> Account:
    account = session.scalar(select(Account).where(Account.name == name))
    if account is None or not verify_password(account.password_hash, password):
        raise Unauthorized("wrong account name or password")
    return account


def bootstrap_root(session: Session, home: Path, password: str | None) -> str | None:
    """Create ``root`` on first start; returns a generated password to print, once.

    A generated password is also written to ``$VRE_HOME/root-password`` (0600) so an
    operator who missed the console can still log in.
    """
    if session.scalar(select(Account.id).where(Account.name == "root")) is not None:
        return None
    generated = None
    if not password:
        generated = password = secrets.token_urlsafe(18)
    create(session, None, "root", password=password, is_admin=True)
    if generated:
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(home / "root-password", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when an earlier, failed start left the file behind
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
    return generated
