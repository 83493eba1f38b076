"""Database engine, sessions and schema migrations.

SQLite (WAL) is the embedded default and PostgreSQL the production database; the
same Alembic migrations serve both, and the server applies them when it starts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, create_engine, event, text
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware timestamps on both back ends (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _private_sqlite_file(path: Path) -> None:
    """The database file exists, 0600, before SQLite opens it: SQLite gives its -wal and
    -shm files the database's own mode, so all three are the owner's alone from their
    first byte, whatever the umask (a file left wider by an older version is narrowed)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        info = os.fstat(fd)
        if info.st_mode & 0o077 and info.st_uid == os.geteuid():
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if side.stat().st_mode & 0o077 and side.stat().st_uid == os.geteuid():
                side.chmod(0o600)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        _, sep, path = url.partition(":///")
        if sep and path and path != ":memory:" and not path.startswith("file:"):
            _private_sqlite_file(Path(path))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No server-side prepared statements: bulk lookups vary their IN lists, and psycopg's
    # automatic preparation made them slower round after round.
    return create_engine(
        url,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        connect_args={"prepare_threshold": None},
    )


def is_postgres(session: Session) -> bool:
    """The one dialect question services ask: row locks and COPY exist on PostgreSQL only."""
    return session.get_bind().dialect.name == "postgresql"


def take_write_lock(session: Session) -> None:
    """On SQLite, make this transaction a writer before it reads what it decides on.

    pysqlite opens the transaction only at the first INSERT/UPDATE/DELETE, so reads made
    before it see whatever another writer commits in between; an UPDATE of no row starts
    the write transaction and takes SQLite's one write lock. PostgreSQL needs row locks
    instead (the callers take them), so this does nothing there."""
    if not is_postgres(session):
        session.execute(text("UPDATE accounts SET id = id WHERE 1 = 0"))


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def migrate(engine: Engine) -> None:
    """Bring the schema up to date (idempotent; called by the server at start)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
    if engine.dialect.name == "sqlite":
        # Empty the WAL: no page image an older revision wrote (plain-text secrets before
        # 0007) stays in it. Cheap at start; readers in the way just make it partial.
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
