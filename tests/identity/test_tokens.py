"""API tokens: issued once, stored hashed, expiring, revocable only by their owner."""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from vre.db import transaction, utcnow
from vre.errors import Forbidden, Invalid, NotFound, Unauthorized
from vre.identity import accounts, tokens
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
        longest, _ = tokens.issue(session, alice, lifetime_days=tokens.max_days())
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


def test_a_child_token_never_outlives_its_parent(
    sessions: sessionmaker[Session], alice: Account
) -> None:
    """The attack: a 0.001-day token minted a 366-day one."""
    with transaction(sessions) as session:
        _, short = tokens.issue(session, alice, lifetime_days=0.001)
        _, child = tokens.issue(session, alice, lifetime_days=366, parent=short)
        _, grandchild = tokens.issue(session, alice, lifetime_days=30, parent=child)
    assert child.parent_id == short.id and grandchild.parent_id == child.id
    assert child.expires_at == short.expires_at == grandchild.expires_at
    with transaction(sessions) as session:
        _, long = tokens.issue(session, alice, lifetime_days=300)
        _, shorter = tokens.issue(session, alice, lifetime_days=1, parent=long)
    assert shorter.expires_at < long.expires_at  # a shorter child keeps its own lifetime
    assert shorter.expires_at - utcnow() <= timedelta(days=1)


def test_the_operators_longest_lifetime(sessions: sessionmaker[Session], alice: Account) -> None:
    with transaction(sessions) as session:
        tokens.issue(session, alice, lifetime_days=7, longest_days=7)
        with pytest.raises(Invalid, match="between 0 and 7 days"):
            tokens.issue(session, alice, lifetime_days=7.5, longest_days=7)
    assert tokens.max_days() == 366  # VRE_TOKEN_MAX_DAYS's default


def test_revoking_a_token_revokes_every_token_made_with_it(
    sessions: sessionmaker[Session], alice: Account, bob: Account
) -> None:
    with transaction(sessions) as session:
        parent_secret, parent = tokens.issue(session, alice)
        child_secret, child = tokens.issue(session, alice, parent=parent)
        grand_secret, _ = tokens.issue(session, alice, parent=child)
        sibling_secret, _ = tokens.issue(session, alice)
        bobs, _ = tokens.issue(session, bob)
    with transaction(sessions) as session:
        tokens.revoke(session, alice, parent.id)
    with transaction(sessions) as session:
        for secret in (parent_secret, child_secret, grand_secret):
            with pytest.raises(Unauthorized):
                tokens.resolve(session, secret)
        assert tokens.resolve(session, sibling_secret).name == "alice"
        assert tokens.resolve(session, bobs).name == "bob"
        # and a revoked token cannot make new ones
        with pytest.raises(Unauthorized):
            tokens.issue(session, alice, parent=child)


def test_revoking_the_middle_of_a_chain_keeps_its_parent(
    sessions: sessionmaker[Session], alice: Account
) -> None:
    with transaction(sessions) as session:
        top_secret, top = tokens.issue(session, alice)
        _, middle = tokens.issue(session, alice, parent=top)
        low_secret, _ = tokens.issue(session, alice, parent=middle)
        tokens.revoke(session, alice, middle.id)
    with transaction(sessions) as session:
        assert tokens.resolve(session, top_secret).name == "alice"
        with pytest.raises(Unauthorized):
            tokens.resolve(session, low_secret)


def test_revoke_all_keeps_only_the_one_asked(
    sessions: sessionmaker[Session], alice: Account, bob: Account
) -> None:
    with transaction(sessions) as session:
        kept_secret, kept = tokens.issue(session, alice)
        others = [tokens.issue(session, alice)[0] for _ in range(3)]
        others.append(tokens.issue(session, alice, parent=kept)[0])  # a child of the kept one
        bobs, _ = tokens.issue(session, bob)
        assert tokens.revoke_all(session, alice, keep=kept.id) == 4
    with transaction(sessions) as session:
        assert tokens.resolve(session, kept_secret).name == "alice"
        assert tokens.resolve(session, bobs).name == "bob"
        for secret in others:
            with pytest.raises(Unauthorized):
                tokens.resolve(session, secret)
        assert [t.id for t in tokens.list_for(session, alice)] == [kept.id]


def test_an_admin_lists_any_accounts_tokens_and_others_cannot(
    sessions: sessionmaker[Session], root: Account, alice: Account, bob: Account
) -> None:
    with transaction(sessions) as session:
        _, row = tokens.issue(session, bob)
    with transaction(sessions) as session:
        assert [t.id for t in tokens.list_for(session, root, "bob")] == [row.id]
        assert [t.id for t in tokens.list_for(session, bob, "bob")] == [row.id]
        with pytest.raises(Forbidden):
            tokens.list_for(session, alice, "bob")
        with pytest.raises(Forbidden):
            tokens.list_for(session, alice, "nobody")  # no hint of which names exist
        with pytest.raises(NotFound):
            tokens.list_for(session, root, "nobody")


def test_tokens_of_disabled_and_deleted_accounts_are_refused(
    sessions: sessionmaker[Session], root: Account, alice: Account, bob: Account
) -> None:
    with transaction(sessions) as session:
        alices, _ = tokens.issue(session, alice)
        bobs, _ = tokens.issue(session, bob)
        accounts.set_disabled(session, root, "alice", True)
        accounts.delete(session, root, "bob")
    with transaction(sessions) as session:
        with pytest.raises(Unauthorized, match="disabled"):
            tokens.resolve(session, alices)
        with pytest.raises(Unauthorized, match="revoked"):
            tokens.resolve(session, bobs)
        accounts.set_disabled(session, root, "alice", False)
    with transaction(sessions) as session:
        assert tokens.resolve(session, alices).name == "alice"  # enabled: they work again


def test_a_child_made_while_its_parent_is_revoked_is_revoked_too(
    sessions: sessionmaker[Session], alice: Account
) -> None:
    """The child's transaction holds its parent; the revocation waits, then sees it."""
    with transaction(sessions) as session:
        _, parent = tokens.issue(session, alice)
    made, release = threading.Event(), threading.Event()

    def make_child() -> str:
        with transaction(sessions) as session:
            secret, _ = tokens.issue(session, alice, parent=parent)
            made.set()
            release.wait(30)
        return secret

    def revoke_parent() -> None:
        with transaction(sessions) as session:
            tokens.revoke(session, alice, parent.id)

    with ThreadPoolExecutor(2) as pool:
        child = pool.submit(make_child)
        assert made.wait(30)
        revoking = pool.submit(revoke_parent)
        time.sleep(0.3)  # let the revocation reach the parent's lock (either order is fine)
        release.set()
        secret = child.result()
        revoking.result()
    with transaction(sessions) as session, pytest.raises(Unauthorized):
        tokens.resolve(session, secret)
