"""Bulk loading, the catalogue's hot path: one statement per batch, never one per row.

PostgreSQL loads fastest through COPY (about four times a multi-row INSERT here);
SQLite's multi-row INSERT is already close to its floor.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

from sqlalchemy import FromClause, Table, insert, text
from sqlalchemy.orm import Session

from vre.db import is_postgres

CHUNK = 2000  # ids per IN list: well inside SQLite's variable limit


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """Slices of ``items`` small enough for one ``IN (...)``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_rows(session: Session, into: FromClause, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows that all have the same keys (``into``: a model's ``__table__``)."""
    table = cast(Table, into)
    if not rows:
        return
    if not is_postgres(session):
        session.execute(insert(table), list(rows))
        return
    columns = list(rows[0])
    raw = session.connection().connection.driver_connection
    assert raw is not None
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])


def insert_with_ids(
    session: Session, into: FromClause, rows: Sequence[dict[str, Any]], key: Sequence[str]
) -> dict[tuple[Any, ...], int]:
    """Insert rows and map each row's ``key`` columns to its new ``id``."""
    table = cast(Table, into)
    if not rows:
        return {}
    if not is_postgres(session):
        # Unordered RETURNING keeps SQLite on multi-row VALUES; the key maps rows back.
        returning = insert(table).returning(table.c.id, *[table.c[k] for k in key])
        return {tuple(r[1:]): r[0] for r in session.execute(returning, list(rows))}
    ids = list(
        session.scalars(
            text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": table.name, "n": len(rows)},
        )
    )
    insert_rows(session, table, [{"id": i, **row} for i, row in zip(ids, rows, strict=True)])
    return {tuple(row[k] for k in key): i for i, row in zip(ids, rows, strict=True)}
