"""API tokens: issued once, stored hashed, expiring, revocable only by their owner."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from vre.db import transaction, utcnow
from vre.errors import Invalid, NotFound, Unauthorized
from vre.identity import tokens
from vre.identity.models import Account, Token


def test_issue_resolve_and_store_hashed(
    sessions: sessionmaker[Session], alice: Account, bob: Account
) -> None:
    with transaction(sessions) as session:
        secret, row = tokens.issue(session, alice, lifetime_days=2, label="laptop")
        other, _ = tokens.issue(session, bob)
    assert secret.startswith(tokens.PREFIX) and len(secret) > 40
    assert secret != other
    assert row.label == "laptop" and row.account_id == alice.id
    lifetime = row.expires_at - utcnow()
    assert timedelta(days=2) - timedelta(minutes=5) < lifetime <= timedelta(days=2)

    with transaction(sessions) as session:
        assert tokens.resolve(session, secret).name == "alice"
        assert tokens.resolve(session, other).name == "bob"
        assert [t.id for t in tokens.list_for(session, alice)] == [row.id]
        for wrong in ("", secret[:-1], secret + "x", secret.upper(), "vre_nonsense"):
            with pytest.raises(Unauthorized):
                tokens.resolve(session, wrong)
        # the database never holds the secret, only its SHA-256 digest
        stored = session.execute(text("SELECT * FROM tokens")).all()
        assert len(stored) == 2
        for values in stored:
            for value in values:
                assert secret not in str(value) and secret[len(tokens.PREFIX) :] not in str(value)
        digest = session.get(Token, row.id).token_hash  # type: ignore[union-attr]
        assert digest == hashlib.sha256(secret.encode()).hexdigest()


@pytest.mark.parametrize("days", [0, -1, 366.5, 10_000])
def test_lifetime_bounds(days: float) -> None:
    with pytest.raises(Invalid):
        tokens.issue(None, None, lifetime_days=days)  # type: ignore[arg-type]


def test_expired_and_revoked_tokens_are_refused(
    sessions: sessionmaker[Session], root: Account, alice: Account, bob: Account
) -> None:
    with transaction(sessions) as session:
        expired, expired_row = tokens.issue(session, alice)
        revoked, revoked_row = tokens.issue(session, alice)
        by_admin, by_admin_row = tokens.issue(session, alice)
        longest, _ = tokens.issue(session, alice, lifetime_days=tokens.MAX_LIFETIME_DAYS)
        tiny, _ = tokens.issue(session, alice, lifetime_days=0.001)
    with transaction(sessions) as session:
        row = session.get(Token, expired_row.id)
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
    with transaction(sessions) as session:
        assert tokens.revoke(session, alice, revoked_row.id).revoked_at is not None
        tokens.revoke(session, alice, revoked_row.id)  # revoking twice is harmless
    with transaction(sessions) as session:
        for secret in (expired, revoked):
            with pytest.raises(Unauthorized):
                tokens.resolve(session, secret)
        assert tokens.resolve(session, longest).id == alice.id
        assert tokens.resolve(session, tiny).id == alice.id
        assert tokens.resolve(session, by_admin).id == alice.id
        listed = {t.id for t in tokens.list_for(session, alice)}
        assert revoked_row.id not in listed and by_admin_row.id in listed
        active = {t.id: tokens.is_active(t) for t in session.scalars(select(Token))}
        assert active[expired_row.id] is False and active[revoked_row.id] is False
        assert active[by_admin_row.id] is True

    # another account cannot revoke alice's token, nor learn that it exists
    with pytest.raises(NotFound), transaction(sessions) as session:
        tokens.revoke(session, bob, by_admin_row.id)
    with pytest.raises(NotFound), transaction(sessions) as session:
        tokens.revoke(session, bob, 999_999)
    with transaction(sessions) as session:
        assert tokens.resolve(session, by_admin).id == alice.id
        tokens.revoke(session, root, by_admin_row.id)  # the admin can
    with transaction(sessions) as session, pytest.raises(Unauthorized):
        tokens.resolve(session, by_admin)
