"""Accounts: creation, names, passwords, authentication and the root bootstrap."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from vre.db import make_engine, make_sessionmaker, migrate, transaction
from vre.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from vre.identity import accounts, tokens
from vre.identity.models import Account
from vre.lake import scopes


@pytest.mark.parametrize("name", ["carol", "c", "svc-1", "a.b_c-d", "0day", "x" * 64, "robot.prod"])
def test_valid_names(name: str) -> None:
    assert accounts.validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Carol",  # lower case only
        "-carol",
        ".carol",
        "_carol",
        "x" * 65,
        "car ol",
        "car/ol",
        "car:ol",
        "carøl",
        "carol\n",  # a trailing newline must not slip through '$'
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(Invalid, match="invalid account name"):
        accounts.validate_name(name)


def test_create_and_authenticate(
    sessions: sessionmaker[Session], root: Account, alice: Account
) -> None:
    with transaction(sessions) as session:
        carol = accounts.create(
            session, root, "carol", password="12345678", email="carol@example.org"
        )
        robot = accounts.create(session, root, "robot", kind="service")
        admin2 = accounts.create(session, root, "admin2", password="admin-pass", is_admin=True)
    assert (carol.kind, carol.is_admin, carol.email) == ("user", False, "carol@example.org")
    assert (robot.kind, robot.password_hash) == ("service", None)
    assert admin2.is_admin is True
    assert carol.password_hash and "12345678" not in carol.password_hash  # hashed

    with transaction(sessions) as session:
        assert accounts.authenticate(session, "carol", "12345678").id == carol.id
        assert [a.name for a in accounts.list_all(session, root)] == [
            "admin2",
            "alice",
            "bob",
            "carol",
            "robot",
            "root",
        ]
        for name, password in [
            ("carol", "wrong-password"),
            ("carol", ""),
            ("carol", "12345678 "),
            ("carol", "alice-password"),  # someone else's
            ("nobody", "12345678"),
            ("robot", ""),  # no password: never logs in with one
            ("robot", "anything"),
        ]:
            with pytest.raises(Unauthorized):
                accounts.authenticate(session, name, password)
        with pytest.raises(NotFound):
            accounts.get(session, "nobody")

    # an admin created by an admin can create accounts too
    with transaction(sessions) as session:
        accounts.create(session, admin2, "dave")

    refused: list[tuple[type[Exception], Account, str, dict[str, object]]] = [
        (Forbidden, alice, "eve", {}),
        (Forbidden, alice, "eve", {"is_admin": True}),
        (Forbidden, carol, "eve", {}),
        (Conflict, root, "carol", {}),
        (Conflict, root, "root", {"password": "another-one"}),
        (Invalid, root, "eve", {"password": "1234567"}),  # seven characters
        (Invalid, root, "eve", {"kind": "robot"}),
        (Invalid, root, "Eve", {}),
        (Invalid, root, "../eve", {}),
    ]
    for error, actor, name, options in refused:
        with pytest.raises(error), transaction(sessions) as session:
            accounts.create(session, actor, name, **options)  # type: ignore[arg-type]
    with transaction(sessions) as session:
        names = [a.name for a in accounts.list_all(session, root)]
        assert "eve" not in names and "Eve" not in names
        assert accounts.authenticate(session, "root", "root-password").is_admin


@pytest.fixture
def empty_sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    """A migrated database without any account (``sessions`` already holds root)."""
    engine = make_engine(db_url)
    migrate(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_bootstrap_root_generates_password_once(
    empty_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    home = tmp_path / "home-of-vre"
    with transaction(empty_sessions) as session:
        password = accounts.bootstrap_root(session, home, None)
    assert password and len(password) >= 16
    path = home / "root-password"
    assert path.read_text() == password + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with transaction(empty_sessions) as session:
        root = accounts.authenticate(session, "root", password)
        assert root.is_admin
        assert accounts.bootstrap_root(session, home, None) is None  # second start
        assert accounts.bootstrap_root(session, home, "new-password") is None
        assert [a.name for a in accounts.list_all(session, root)] == ["root"]
        assert accounts.authenticate(session, "root", password).id == root.id
        with pytest.raises(Unauthorized):
            accounts.authenticate(session, "root", "new-password")
    assert path.read_text() == password + "\n"  # never rewritten
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_bootstrap_root_with_given_password(
    empty_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    home = tmp_path / "home-of-vre"
    with pytest.raises(Invalid), transaction(empty_sessions) as session:
        accounts.bootstrap_root(session, home, "short")  # VRE_ROOT_PASSWORD too short
    with transaction(empty_sessions) as session:
        assert list(session.scalars(select(Account))) == []
        assert accounts.bootstrap_root(session, home, "chosen-password") is None
    assert not (home / "root-password").exists()  # nothing to print, nothing written
    with transaction(empty_sessions) as session:
        assert accounts.authenticate(session, "root", "chosen-password").is_admin


def test_change_ones_own_password_needs_the_old_one(
    sessions: sessionmaker[Session], alice: Account
) -> None:
    with transaction(sessions) as session:
        _, used = tokens.issue(session, alice)
        other, _ = tokens.issue(session, alice)
    for old in (None, "", "wrong-password"):
        with pytest.raises(Forbidden, match="old password"), transaction(sessions) as session:
            accounts.change_password(session, alice, "alice", "new-password", old_password=old)
    with pytest.raises(Invalid, match="too short"), transaction(sessions) as session:
        accounts.change_password(session, alice, "alice", "short", old_password="alice-password")
    with transaction(sessions) as session:
        revoked = accounts.change_password(
            session,
            alice,
            "alice",
            "new-password",
            old_password="alice-password",
            keep_token=used.id,
        )
    assert revoked == 1  # every other token: whoever knew the old password is logged out
    with transaction(sessions) as session:
        assert [t.id for t in tokens.list_for(session, alice)] == [used.id]
        with pytest.raises(Unauthorized):
            tokens.resolve(session, other)
        assert accounts.authenticate(session, "alice", "new-password").name == "alice"
        with pytest.raises(Unauthorized):
            accounts.authenticate(session, "alice", "alice-password")


def test_an_admin_sets_anyones_password_and_others_cannot(
    sessions: sessionmaker[Session], root: Account, alice: Account, bob: Account
) -> None:
    with transaction(sessions) as session:
        tokens.issue(session, bob)
        _, roots = tokens.issue(session, root)
    with pytest.raises(Forbidden), transaction(sessions) as session:
        accounts.change_password(session, alice, "bob", "taken-over", old_password="bob-password")
    with pytest.raises(Forbidden), transaction(sessions) as session:
        accounts.change_password(session, alice, "nobody", "taken-over")  # no hint either
    with transaction(sessions) as session:
        assert accounts.change_password(session, root, "bob", "reset-by-admin", keep_token=roots.id)
        assert tokens.list_for(session, root, "bob") == []  # a reset revokes all bob's tokens
        assert accounts.authenticate(session, "bob", "reset-by-admin").name == "bob"
        assert [t.id for t in tokens.list_for(session, root)] == [roots.id]


def test_disable_and_delete_are_an_admins_and_never_ones_own(
    sessions: sessionmaker[Session], root: Account, alice: Account, bob: Account
) -> None:
    for act in (
        lambda s: accounts.set_disabled(s, alice, "bob", True),
        lambda s: accounts.set_disabled(s, alice, "alice", False),
        lambda s: accounts.delete(s, alice, "bob"),
        lambda s: accounts.set_disabled(s, root, "root", True),
        lambda s: accounts.delete(s, root, "root"),
    ):
        with pytest.raises(Forbidden), transaction(sessions) as session:
            act(session)
    with transaction(sessions) as session:
        assert accounts.get(session, "bob").status == "active"
        assert accounts.authenticate(session, "root", "root-password").name == "root"


def test_a_deleted_account_is_gone_but_what_it_owns_stays(
    sessions: sessionmaker[Session], root: Account, alice: Account
) -> None:
    with transaction(sessions) as session:
        scopes.add(session, alice, "user.alice")
        secret, _ = tokens.issue(session, alice)
        _, revoked = accounts.delete(session, root, "alice")
    assert revoked == 1
    with transaction(sessions) as session:
        with pytest.raises(NotFound):
            accounts.get(session, "alice")
        with pytest.raises(Unauthorized, match="wrong account name or password"):
            accounts.authenticate(session, "alice", "alice-password")
        with pytest.raises(Unauthorized):
            tokens.resolve(session, secret)
        assert scopes.get(session, "user.alice").owner_id == alice.id  # the data stays
        listed = {a.name: a.status for a in accounts.list_all(session, root)}
        assert listed["alice"] == "deleted"
        with pytest.raises(NotFound):
            accounts.delete(session, root, "alice")
    with pytest.raises(Conflict, match="not reused"), transaction(sessions) as session:
        accounts.create(session, root, "alice", password="a-new-alice")
