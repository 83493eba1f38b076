"""Shared fixtures: real databases (SQLite and PostgreSQL), accounts and RSEs.

``db_url`` is parametrised over both back ends, so every service test that uses
``sessions`` runs twice. PostgreSQL must be up at 127.0.0.1:5432 (``make test``
starts it if it is not): a missing server fails the tests, it never skips them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.orm import Session, sessionmaker

from vre.config import get_settings
from vre.db import make_engine, make_sessionmaker, migrate, transaction
from vre.identity import accounts
from vre.identity.models import Account
from vre.lake import rses, scopes

pytest_plugins = [
    "tests.fixtures.xrootd",
    "tests.fixtures.webdav",
    "tests.fixtures.s3",
    "tests.fixtures.server",
    "tests.fixtures.podman",
    "tests.fixtures.rucio",
]

PG_ADMIN = os.environ.get("VRE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the developer's real ~/.vre or ~/.config/vre."""
    monkeypatch.setenv("VRE_HOME", str(tmp_path / "vre-home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VRE_URL", raising=False)
    monkeypatch.delenv("VRE_TOKEN", raising=False)
    get_settings.cache_clear()


def postgres_database() -> tuple[str, str]:
    """Create a throw-away database; returns (sqlalchemy url, name)."""
    name = f"vre_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}", name


def drop_postgres_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vre.db'}"
        return
    url, name = postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(name)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    migrate(engine)
    factory = make_sessionmaker(engine)
    with transaction(factory) as session:
        accounts.create(session, None, "root", password="root-password", is_admin=True)
        accounts.create(session, None, "alice", password="alice-password")
        accounts.create(session, None, "bob", password="bob-password")
    yield factory
    engine.dispose()


def account(sessions: sessionmaker[Session], name: str) -> Account:
    with transaction(sessions) as session:
        return accounts.get(session, name)


@pytest.fixture
def root(sessions: sessionmaker[Session]) -> Account:
    return account(sessions, "root")


@pytest.fixture
def alice(sessions: sessionmaker[Session]) -> Account:
    return account(sessions, "alice")


@pytest.fixture
def bob(sessions: sessionmaker[Session]) -> Account:
    return account(sessions, "bob")


@pytest.fixture
def local_rse(sessions: sessionmaker[Session], root: Account, tmp_path: Path) -> Path:
    """A ``file://`` RSE named LOCAL-DISK; returns its directory."""
    directory = tmp_path / "rse-local"
    directory.mkdir()
    with transaction(sessions) as session:
        rses.add(session, root, "LOCAL-DISK", directory.as_uri(), {"type": "disk", "site": "HERE"})
    return directory


@pytest.fixture
def alice_scope(sessions: sessionmaker[Session], alice: Account) -> str:
    """A private scope owned by alice."""
    with transaction(sessions) as session:
        scopes.add(session, alice, "user.alice")
    return "user.alice"
