"""``user.ACCOUNT`` scopes belong to ACCOUNT only (Rucio's convention)."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from vre.db import transaction
from vre.errors import Forbidden
from vre.identity.models import Account
from vre.lake import scopes


@pytest.mark.parametrize("name", ["user.root", "user.bob", "user.carol", "User.Root", "USER.alice"])
def test_an_account_cannot_take_another_accounts_user_scope(
    sessions: sessionmaker[Session], alice: Account, name: str
) -> None:
    """Also names of no account yet (carol), and the prefix in any case."""
    refused = pytest.raises(Forbidden, match="belongs to that account only")
    with refused, transaction(sessions) as session:
        scopes.add(session, alice, name)
    with transaction(sessions) as session:
        assert name not in [s.name for s, _ in scopes.list_visible(session, alice)]


def test_an_admin_creates_a_user_scope_only_for_its_account(
    sessions: sessionmaker[Session], root: Account, alice: Account, bob: Account
) -> None:
    with pytest.raises(Forbidden, match="reserved"), transaction(sessions) as session:
        scopes.add(session, root, "user.bob")  # for root itself: no
    with pytest.raises(Forbidden, match="reserved"), transaction(sessions) as session:
        scopes.add(session, root, "user.bob", owner="alice")
    with transaction(sessions) as session:
        assert scopes.add(session, root, "user.bob", owner="bob").owner_id == bob.id
        assert scopes.add(session, alice, "user.alice").owner_id == alice.id
        assert scopes.add(session, root, "user.root").owner_id == root.id
        assert scopes.add(session, alice, "users.root").owner_id == alice.id  # another prefix
        assert scopes.add(session, alice, "alice.user.root").owner_id == alice.id
