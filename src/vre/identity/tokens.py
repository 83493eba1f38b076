"""API tokens: random, shown once, stored as a SHA-256 digest, with expiry.

A token carries 256 bits of randomness, so a fast digest is enough to store it
(unlike passwords, which need a memory-hard hash).

Tokens form trees: a token made with a token (``POST /tokens``) records its parent.
A child acts for the same account as its parent (tokens carry no narrower rights yet,
so "never outranks" means exactly that), never expires after it, and is revoked with
it. Revocation cascades when it happens, not when a token is used: resolving a token
on every request stays one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vre import policy
from vre.config import get_settings
from vre.db import take_write_lock, utcnow
from vre.errors import Invalid, NotFound, Unauthorized
from vre.identity.models import Account, Token

PREFIX = "vre_"
REFUSED = "invalid, expired or revoked token"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def max_days() -> float:
    """The operator's longest token lifetime (``VRE_TOKEN_MAX_DAYS``)."""
    return get_settings().token_max_days


def issue(
    session: Session,
    account: Account,
    *,
    lifetime_days: float = 30,
    label: str = "",
    parent: Token | None = None,
    longest_days: float | None = None,
) -> tuple[str, Token]:
    """A new token for ``account``; made with ``parent``, it lives no longer than it.

    The parent is locked and read again first: a parent revoked meanwhile refuses the
    child, and a revocation that runs now waits for the child and then revokes it too."""
    longest = longest_days if longest_days is not None else max_days()
    if not 0 < lifetime_days <= longest:
        raise Invalid(f"token lifetime must be between 0 and {longest:g} days")
    expires_at = utcnow() + timedelta(days=lifetime_days)
    if parent is not None:
        held = _locked(session, parent.id)
        if held is None or held.account_id != account.id or not is_active(held):
            raise Unauthorized(REFUSED)
        expires_at = min(expires_at, held.expires_at)
    secret = PREFIX + secrets.token_urlsafe(32)
    row = Token(
        account_id=account.id,
        parent_id=parent.id if parent is not None else None,
        token_hash=_digest(secret),
        label=label[:128],
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return secret, row


def _locked(session: Session, token_id: int) -> Token | None:
    """The token row, locked against revocation until this transaction ends."""
    take_write_lock(session)  # SQLite: one writer at a time; PostgreSQL: the row lock below
    return session.scalar(
        select(Token)
        .where(Token.id == token_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def resolve_token(session: Session, secret: str) -> tuple[Account, Token]:
    """The account behind a bearer token and the token itself, or Unauthorized.

    One query: the token must be live and its account neither disabled nor deleted."""
    found = session.execute(
        select(Token, Account)
        .join(Account, Account.id == Token.account_id)
        .where(Token.token_hash == _digest(secret))
    ).first()
    if found is None or not is_active(found[0]) or found[1].deleted_at is not None:
        raise Unauthorized(REFUSED)
    row, account = found
    if account.disabled_at is not None:
        raise Unauthorized(f"account {account.name!r} is disabled: ask an admin to enable it")
    return account, row


def resolve(session: Session, secret: str) -> Account:
    """The account behind a bearer token, or Unauthorized."""
    return resolve_token(session, secret)[0]


def list_for(session: Session, actor: Account, account: str | None = None) -> list[Token]:
    """The live tokens of ``account`` (the actor's own by default; others' for an admin)."""
    owner = actor
    if account is not None and account != actor.name:
        policy.require(actor, "token.list_other", message="only an admin can list others' tokens")
        found = session.scalar(
            select(Account).where(Account.name == account, Account.deleted_at.is_(None))
        )
        if found is None:
            raise NotFound(f"account {account!r} does not exist")
        owner = found
    return list(
        session.scalars(
            select(Token)
            .where(
                Token.account_id == owner.id,
                Token.revoked_at.is_(None),
                Token.expires_at > utcnow(),
            )
            .order_by(Token.id)
        )
    )


def revoke(session: Session, actor: Account, token_id: int) -> Token:
    """Revoke a token and every token made from it, at once."""
    row = session.get(Token, token_id)
    missing = f"token {token_id} does not exist"
    if row is None:
        raise NotFound(missing)
    policy.require(actor, "token.revoke", owner_id=row.account_id, missing=missing)
    now = utcnow()
    if row.revoked_at is None:
        row.revoked_at = now
    session.flush()  # PostgreSQL: waits for a child being made from it right now
    _revoke_below(session, [row.id], now)
    return row


def revoke_all(session: Session, account: Account, keep: int | None = None) -> int:
    """Revoke every live token of ``account`` but ``keep``; returns how many."""
    now = utcnow()
    query = update(Token).where(Token.account_id == account.id, Token.revoked_at.is_(None))
    if keep is not None:
        query = query.where(Token.id != keep)
    ids = list(
        session.scalars(
            query.values(revoked_at=now).returning(Token.id),
            execution_options={"synchronize_session": False},
        )
    )
    return len(ids) + _revoke_below(session, ids, now)


def _revoke_below(session: Session, ids: Sequence[int], now: datetime) -> int:
    """Revoke the live descendants of ``ids``, one generation per statement.

    Each statement sees children committed while the one before waited for their
    parents' row locks (``issue`` holds its parent's), so a child made during the
    revocation is revoked too. A live token's parent is always live, so revoked
    branches need not be walked."""
    count, frontier = 0, list(ids)
    while frontier:
        frontier = list(
            session.scalars(
                update(Token)
                .where(Token.parent_id.in_(frontier), Token.revoked_at.is_(None))
                .values(revoked_at=now)
                .returning(Token.id),
                execution_options={"synchronize_session": False},
            )
        )
        count += len(frontier)
    return count


def is_active(row: Token, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return row.revoked_at is None and row.expires_at > now
