"""Secrets at rest: sealed with a key outside the database, opened only where needed.

The attack: a copy of the database (or a step that reads it) showed every account's
secrets and every RSE password in plain text. Now the bytes on disk (the SQLite file
and its WAL) and the PostgreSQL rows hold sealed values only, and the key is a 0600 file
that is not in the database.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from vre import sealing
from vre.config import get_settings
from vre.db import MIGRATIONS, make_engine, migrate, transaction
from vre.errors import Invalid
from vre.identity.models import Account
from vre.lake import protocols, rses
from vre.workflows import secrets
from vre.workflows.models import Secret

SECRET = "alice-plain-secret-7f3a9"
FILE_SECRET = "-----BEGIN KEY-----\nalice-file-secret-81c2\n-----END KEY-----\n"
RSE_PASSWORD = "rse-dav-password-5e1d"
S3_SECRET = "rse-s3-secret-key-0b77"
PLAINTEXTS = (SECRET, "alice-file-secret-81c2", RSE_PASSWORD, S3_SECRET)


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key() -> sealing.Key:
    return sealing.Key.from_bytes(os.urandom(32))


# --- the sealing itself -------------------------------------------------------------


@pytest.mark.parametrize("plain", ["", "x", "ab", SECRET, FILE_SECRET, "é€𝄞\0", "y" * 1_048_576])
def test_sealing_round_trips_and_hides_the_text(plain: str) -> None:
    k = key()
    sealed = sealing.seal(plain, "secret 1 A", key=k)
    assert sealed.startswith("vre-sealed:v1:") and sealing.is_sealed(sealed)
    assert sealing.open(sealed, "secret 1 A", key=k) == plain
    if len(plain) >= 2:
        assert plain not in sealed
    assert sealing.seal(plain, "secret 1 A", key=k) != sealed  # a fresh nonce each time


def test_a_wrong_key_fails_clearly() -> None:
    sealed = sealing.seal(SECRET, key=key())
    with pytest.raises(sealing.SealingError) as caught:
        sealing.open(sealed, key=key())
    assert caught.value.message == sealing.MISMATCH
    assert "does not match the one these secrets were sealed with" in caught.value.message
    assert SECRET not in str(caught.value)


def test_moved_tampered_or_plain_values_do_not_open() -> None:
    k = key()
    sealed = sealing.seal(SECRET, "secret 1 TOKEN", key=k)
    with pytest.raises(sealing.SealingError, match="belongs elsewhere"):
        sealing.open(sealed, "secret 2 TOKEN", key=k)  # copied into bob's row
    head, _, data = sealed.rpartition(":")
    flipped = data[:10] + ("A" if data[10] != "A" else "B") + data[11:]
    with pytest.raises(sealing.SealingError, match="damaged"):
        sealing.open(f"{head}:{flipped}", "secret 1 TOKEN", key=k)
    with pytest.raises(sealing.SealingError, match="not sealed"):
        sealing.open(SECRET, key=k)  # reads accept sealed values only
    with pytest.raises(sealing.SealingError, match="cannot open"):
        sealing.open(sealed.replace(":v1:", ":v9:"), "secret 1 TOKEN", key=k)


def test_the_generated_key_is_0600_from_its_first_byte_whatever_the_umask(
    umask_zero: None, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    keys: list[str] = []
    threads = [
        threading.Thread(target=lambda: keys.append(sealing.generated_key(home))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1  # starting at once, they agree on one key
    assert mode(home / "secret.key") == 0o600
    assert mode(home) == 0o700
    assert [p.name for p in home.iterdir()] == ["secret.key"]  # no temporary left
    (home / "secret.key").chmod(0o644)
    assert sealing.generated_key(home) == keys[0]
    assert mode(home / "secret.key") == 0o600  # narrowed again


def test_an_operator_key_is_used_and_a_bad_one_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    given = sealing.Key.from_text("k" * 43, "test")
    monkeypatch.setenv("VRE_SECRET_KEY", "k" * 43)
    get_settings.cache_clear()
    assert sealing.current_key() == given
    assert not (get_settings().home / "secret.key").exists()
    file = tmp_path / "key"
    file.write_text("k" * 43 + "\n")
    monkeypatch.delenv("VRE_SECRET_KEY")
    monkeypatch.setenv("VRE_SECRET_KEY_FILE", str(file))
    get_settings.cache_clear()
    assert sealing.current_key() == given
    monkeypatch.setenv("VRE_SECRET_KEY", "too short")
    get_settings.cache_clear()
    with pytest.raises(sealing.SealingError, match="VRE_SECRET_KEY is not a secret key"):
        sealing.current_key()
    monkeypatch.delenv("VRE_SECRET_KEY")
    monkeypatch.setenv("VRE_SECRET_KEY_FILE", str(tmp_path / "missing"))
    get_settings.cache_clear()
    with pytest.raises(sealing.SealingError, match="VRE_SECRET_KEY_FILE cannot be read") as err:
        sealing.current_key()
    assert str(tmp_path) not in err.value.message  # no server path in a message


# --- what the database holds ----------------------------------------------------------


def store_everything(sessions: sessionmaker[Session], root: Account, alice: Account) -> None:
    with transaction(sessions) as session:
        secrets.add(session, alice, "TOKEN", SECRET)
        secrets.add(session, alice, "KEY", FILE_SECRET, kind="file")
        rses.add(
            session,
            root,
            "DAV",
            "davs://dav.example.org/data",
            options={"username": "vre", "password": RSE_PASSWORD},
        )
        rses.add(session, root, "S3", "s3://bucket/vre", options={"key": "AK", "secret": "x"})
    with transaction(sessions) as session:  # a replaced option is sealed too
        rses.set_options(session, root, "S3", {"key": "AK", "secret": S3_SECRET})


def database_bytes(db_url: str) -> bytes:
    """Every byte the catalogue keeps: the SQLite files, or the PostgreSQL rows as text."""
    if db_url.startswith("sqlite"):
        path = Path(db_url.split(":///", 1)[1])
        return b"".join(
            p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists()
        )
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute("SELECT value FROM secrets").fetchall()
        rows += conn.execute("SELECT options::text FROM rses").fetchall()
    return "\n".join(str(r[0]) for r in rows).encode()


def test_the_database_never_holds_a_secret_or_an_rse_password(
    sessions: sessionmaker[Session], db_url: str, root: Account, alice: Account
) -> None:
    store_everything(sessions, root, alice)
    stored = database_bytes(db_url)
    assert b"vre-sealed:v1:" in stored
    for plain in PLAINTEXTS:
        assert plain.encode() not in stored, plain
    with transaction(sessions) as session:  # the places that need them open them
        row = session.get(Secret, (alice.id, "KEY"))
        assert row is not None and row.value == FILE_SECRET
        s3 = rses.get(session, "S3")
        assert rses.opened_options(s3) == {"key": "AK", "secret": S3_SECRET}
        assert rses.option_keys(s3) == ["key", "secret"]
        fs, _ = protocols.filesystem("s3://bucket/vre/x", s3.options)  # built from sealed
        assert fs.secret == S3_SECRET


def test_another_account_cannot_list_or_read_alices_secrets(
    sessions: sessionmaker[Session], alice: Account, bob: Account
) -> None:
    with transaction(sessions) as session:
        secrets.add(session, alice, "TOKEN", SECRET)
    with transaction(sessions) as session:
        assert secrets.names(session, bob) == []
        assert secrets.names(session, alice) == [("TOKEN", "env")]
        secrets.add(session, bob, "TOKEN", "bobs-own")  # bob's own TOKEN, not alice's
    with transaction(sessions) as session:
        mine = session.get(Secret, (alice.id, "TOKEN"))
        assert mine is not None and mine.value == SECRET
        # alice's sealed value copied into bob's row does not open there
        theirs = session.get(Secret, (bob.id, "TOKEN"))
        assert theirs is not None
        theirs.sealed = mine.sealed
        with pytest.raises(sealing.SealingError):
            _ = theirs.value
        session.rollback()


@pytest.mark.parametrize("value", ["line one\nline two", "a\rb", "trailing\n", "nul\0byte"])
def test_a_multiline_env_secret_is_refused_when_added(
    sessions: sessionmaker[Session], alice: Account, value: str
) -> None:
    with transaction(sessions) as session, pytest.raises(Invalid) as caught:
        secrets.add(session, alice, "CERT", value)
    if "\0" not in value:
        assert "--file" in caught.value.message
    with transaction(sessions) as session:
        assert secrets.names(session, alice) == []
        secrets.add(session, alice, "CERT", value.replace("\0", ""), kind="file")  # as a file


# --- the migration of existing rows ----------------------------------------------------


def alembic(engine: Engine, target: str, *, down: bool = False) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(cfg, target)


def test_the_migration_seals_what_was_stored_in_plain_text(db_url: str) -> None:
    engine = make_engine(db_url)
    alembic(engine, "0007-1")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO accounts (id, name, kind, is_admin, created_at)"
                " VALUES (7, 'alice', 'user', false, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO secrets (account_id, name, kind, value, created_at)"
                " VALUES (7, 'TOKEN', 'env', :v, CURRENT_TIMESTAMP)"
            ),
            {"v": SECRET},
        )
        conn.execute(
            text(
                "INSERT INTO rses (id, name, prefix, options, created_at)"
                " VALUES (3, 'DAV', 'davs://h/d', :o, CURRENT_TIMESTAMP)"
            ),
            {"o": f'{{"username": "vre", "password": "{RSE_PASSWORD}"}}'},
        )
    migrate(engine)  # as the server does at start
    stored = database_bytes(db_url)
    assert SECRET.encode() not in stored and RSE_PASSWORD.encode() not in stored
    with engine.connect() as conn:
        value = conn.execute(text("SELECT value FROM secrets")).scalar_one()
        options = conn.execute(text("SELECT options FROM rses")).scalar_one()
    assert sealing.open(value, "secret 7 TOKEN") == SECRET
    opened = sealing.open_options(options if isinstance(options, dict) else json.loads(options))
    assert opened == {"username": "vre", "password": RSE_PASSWORD}
    alembic(engine, "0007-1", down=True)  # the code before it reads plain text again
    with engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM secrets")).scalar_one() == SECRET
    engine.dispose()
