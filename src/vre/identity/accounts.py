"""Accounts: who may act, and the root account created on first start.

An account is never removed from the database. Deleting one (an admin's act) marks it
deleted, takes its password away and revokes every token it has; what it owns (scopes,
DIDs, replicas, rules, runs) stays where it is, owned by the deleted account, so that
nothing is lost by removing a person and an admin can still reach it all. Its name is
never given to a new account: whoever gets ``alice`` must not inherit alice's scopes
(``user.alice`` above all) or be mistaken for her in old records.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from vre import policy
from vre.config import Settings, get_settings
from vre.db import utcnow
from vre.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from vre.identity import throttle, tokens
from vre.identity.models import Account
from vre.identity.passwords import dummy_hash, hash_password, verify_password

ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-.]{0,63}\Z")
KINDS = ("user", "service")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # Argon2 hashes any length; a login body should not be a megabyte


def validate_name(name: str) -> str:
    if not ACCOUNT_NAME.match(name or ""):
        raise Invalid(
            f"invalid account name {name!r}: use lower-case letters, digits, '_', '-' or '.'"
            " (at most 64 characters, starting with a letter or digit)"
        )
    return name


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"password too short: use at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise Invalid(f"password too long: use at most {MAX_PASSWORD} characters")
    return password


def get(session: Session, name: str) -> Account:
    """A living account (active or disabled); a deleted one does not exist any more."""
    account = session.scalar(
        select(Account).where(Account.name == name, Account.deleted_at.is_(None))
    )
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
    if password is not None:
        validate_password(password)
    existing = session.scalar(select(Account).where(Account.name == name))
    if existing is not None and existing.deleted_at is not None:
        raise Conflict(f"account {name!r} was deleted: the name of a deleted account is not reused")
    if existing is not None:
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
    """Every account, deleted ones included (their status says so)."""
    policy.require(actor, "account.list")
    return list(session.scalars(select(Account).order_by(Account.name)))


def authenticate(
    session: Session,
    name: str,
    password: str,
    *,
    address: str | None = None,
    settings: Settings | None = None,
) -> Account:
    """The account ``name`` logs in to with ``password``, or Unauthorized / LoginThrottled.

    Every way in goes through here, so every one is throttled (``throttle``): the
    attempt is counted and *committed* before the password is checked (which commits
    whatever else ``session`` holds), so a lock-out holds across requests and server
    processes. A missing, deleted or password-less account costs the same Argon2
    verification as a wrong password (``verify_password`` checks a dummy hash) and gets
    the same answer."""
    limits = throttle.Limits.of(settings or get_settings())
    counters = limits.counters(name, address)
    throttle.refuse_if_locked(session, counters)
    try:
        throttle.count_attempt(session, counters, limits)
    except throttle.LoginThrottled:
        session.commit()  # the lock-out outlives this refused request
        raise
    session.commit()
    account = session.scalar(select(Account).where(Account.name == name))
    if account is not None and account.deleted_at is not None:
        account = None  # as good as missing, and just as slow to refuse
    if not verify_password(account.password_hash if account else None, password) or not account:
        raise Unauthorized("wrong account name or password")
    if account.disabled_at is not None:  # said only to whoever knows the password
        raise Unauthorized(f"account {name!r} is disabled: ask an admin to enable it")
    throttle.take_back(session, counters)
    return account


def change_password(
    session: Session,
    actor: Account,
    name: str,
    new_password: str,
    *,
    old_password: str | None = None,
    keep_token: int | None = None,
) -> int:
    """Set ``name``'s password; returns how many of its tokens were revoked.

    An account changes its own password by giving the old one (an admin too: a stolen
    admin token must not be enough to take the admin's password); an admin sets anyone
    else's without it. Either way every token of the account is revoked, except
    ``keep_token`` (the one the account changed its own password with): a password
    changes because someone else may know it, and they may have logged in with it."""
    policy.require(  # before the look-up: others learn nothing of which names exist
        actor,
        "account.password",
        owner_id=actor.id if name == actor.name else None,
        message=f"only {name!r} itself or an admin can change {name!r}'s password",
    )
    target = get(session, name)
    validate_password(new_password)
    if target.id == actor.id and not verify_password(target.password_hash, old_password or ""):
        raise Forbidden("the old password is wrong: give your current password to change it")
    target.password_hash = hash_password(new_password)
    return tokens.revoke_all(session, target, keep=keep_token if target.id == actor.id else None)


def set_disabled(session: Session, actor: Account, name: str, disabled: bool) -> Account:
    """Disable (or enable again) an account; an admin's act, never one's own.

    A disabled account cannot log in and its tokens are refused while it stays
    disabled; they are not revoked, so enabling the account gives them back (revoke
    them with ``vre token revoke`` if they may be stolen). An admin cannot disable
    themself, so the last admin cannot lock everyone out."""
    policy.require(actor, "account.disable", message="only an admin can disable or enable accounts")
    target = get(session, name)
    if target.id == actor.id:
        raise Forbidden("an admin cannot disable their own account: ask another admin")
    if disabled and target.disabled_at is None:
        target.disabled_at = utcnow()
    elif not disabled:
        target.disabled_at = None
    return target


def delete(session: Session, actor: Account, name: str) -> tuple[Account, int]:
    """Delete an account (see the module's docstring); returns it and its revoked tokens."""
    policy.require(actor, "account.delete", message="only an admin can delete accounts")
    target = get(session, name)
    if target.id == actor.id:
        raise Forbidden("an admin cannot delete their own account: ask another admin")
    target.deleted_at = utcnow()
    target.password_hash = None
    return target, tokens.revoke_all(session, target)


def bootstrap_root(session: Session, home: Path, password: str | None) -> str | None:
    """Create ``root`` on first start; returns a generated password to print, once.

    A generated password is also written to ``$VRE_HOME/root-password`` (0600) so an
    operator who missed the console can still log in. Every start also makes the dummy
    password hash, so the first login of an unknown name is no faster than any other.
    """
    dummy_hash()
    if session.scalar(select(Account.id).where(Account.name == "root")) is not None:
        return None
    generated = None
    if not password:
        generated = password = secrets.token_urlsafe(18)
    create(session, None, "root", password=password, is_admin=True)
    if generated:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        fd = os.open(home / "root-password", flags, 0o600)  # 0600 from its first byte
        os.fchmod(fd, 0o600)  # also when an earlier, failed start left the file behind
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
    return generated
