"""API tokens: random, shown once, stored as a SHA-256 digest, with expiry.

A token carries 256 bits of randomness, so a fast digest is enough to store it
(unlike passwords, which need a memory-hard hash).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from vre import policy
from vre.db import utcnow
from vre.errors import Invalid, NotFound, Unauthorized
from vre.identity.models import Account, Token

PREFIX = "vre_"
MAX_LIFETIME_DAYS = 366


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(
    session: Session, account: Account, *, lifetime_days: float = 30, label: str = ""
) -> tuple[str, Token]:
    if not 0 < lifetime_days <= MAX_LIFETIME_DAYS:
        raise Invalid(f"token lifetime must be between 0 and {MAX_LIFETIME_DAYS} days")
    secret = PREFIX + secrets.token_urlsafe(32)
    row = Token(
        account_id=account.id,
        token_hash=_digest(secret),
        label=label[:128],
        expires_at=utcnow() + timedelta(days=lifetime_days),
    )
    session.add(row)
    session.flush()
    return secret, row


def resolve(session: Session, secret: str) -> Account:
    """The account behind a bearer token, or Unauthorized."""
    row = session.scalar(select(Token).where(Token.token_hash == _digest(secret)))
    now = utcnow()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise Unauthorized("invalid, expired or revoked token")
    account = session.get(Account, row.account_id)
    if account is None:
        raise Unauthorized("invalid, expired or revoked token")
    return account


def list_for(session: Session, account: Account) -> list[Token]:
    return list(
        session.scalars(
            select(Token)
            .where(Token.account_id == account.id, Token.revoked_at.is_(None))
            .order_by(Token.id)
        )
    )


def revoke(session: Session, actor: Account, token_id: int) -> Token:
    row = session.get(Token, token_id)
    missing = f"token {token_id} does not exist"
    if row is None:
        raise NotFound(missing)
    policy.require(actor, "token.revoke", owner_id=row.account_id, missing=missing)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def is_active(row: Token, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return row.revoked_at is None and row.expires_at > now
