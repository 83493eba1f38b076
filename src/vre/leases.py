"""Claims and leases: how workers take work that is state in the database.

Work (transfers, runs, collection updates, replicas to reap) is rows; a worker
*claims* rows so that no other worker takes them (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; SQLite serialises writers, so the first statement of a claim writes), and
holds long work under a *lease*: its name and an expiry on the row, renewed in the
background while it works. A worker that dies stops renewing; once the lease has run
out another worker may take the row over. A worker whose renewal finds the row no
longer its own has *lost* the lease and must not report on that row any more.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import ColumnElement, Select, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from vre.db import is_postgres, transaction, utcnow

log = logging.getLogger(__name__)
S = TypeVar("S")


def claimable(session: Session, query: S, *, of: Any = None) -> S:
    """``query`` as a claim: rows another worker's transaction holds are skipped.

    ``of`` names the table whose rows are taken when the query joins others (their rows
    are only read, never locked)."""
    if is_postgres(session):
        return cast(S, cast(Select[Any], query).with_for_update(skip_locked=True, of=of))
    return query


@dataclass(frozen=True)
class Lease:
    """One worker's lease on rows of a table with ``id``, ``worker`` and ``lease_until``.

    ``held`` narrows which rows still count as held (a run that ended is not)."""

    model: Any
    worker: str
    seconds: float
    held: ColumnElement[bool] | None = None

    def until(self) -> datetime:
        return utcnow() + timedelta(seconds=self.seconds)

    def held_where(self, ids: Collection[int]) -> list[ColumnElement[bool]]:
        """The condition "still ours": every write about held rows carries it."""
        m, listed = self.model, list(ids)
        held = self.held if self.held is not None else true()
        which = m.id == listed[0] if len(listed) == 1 else m.id.in_(listed)
        return [which, m.worker == self.worker, held]

    def for_claim(self) -> Lease:
        """This lease under a name of its own for one claim: a worker that lost a row and
        then claims it again holds it under a new name, so its old execution is told."""
        return replace(self, worker=f"{self.worker}/{secrets.token_hex(4)}")

    def take(self, session: Session, pick: Select[Any], **values: Any) -> list[int]:
        """Claim the rows ``pick`` (a select of ids) finds: one UPDATE, so on SQLite the
        claim's first act is a write, and on PostgreSQL rows others hold are skipped."""
        m = self.model
        chosen = claimable(session, pick).scalar_subquery()
        taken = session.scalars(
            update(m)
            .where(m.id.in_(chosen))
            .values(worker=self.worker, lease_until=self.until(), **values)
            .returning(m.id),
            execution_options={"synchronize_session": False},
        )
        return sorted(taken)

    def renew(self, session: Session, ids: Collection[int]) -> set[int]:
        """Extend the lease on ``ids``; returns those that are no longer ours (lost)."""
        if not ids:
            return set()
        kept = session.scalars(
            update(self.model)
            .where(*self.held_where(ids))
            .values(lease_until=self.until())
            .returning(self.model.id),
            execution_options={"synchronize_session": False},
        )
        return set(ids) - set(kept)

    def release(self, session: Session, ids: Collection[int]) -> None:
        """Give the rows back (their work ended): they keep the worker's name, for the record."""
        if ids:
            m = self.model
            session.execute(
                update(m)
                .where(m.id.in_(list(ids)), m.worker == self.worker)
                .values(lease_until=None),
                execution_options={"synchronize_session": False},
            )

    def holds(self, session: Session, ids: Collection[int]) -> set[int]:
        """Which of ``ids`` this worker still holds (read before reporting on them)."""
        if not ids:
            return set()
        return set(session.scalars(select(self.model.id).where(*self.held_where(ids))))


class Heartbeat:
    """Renews a lease in the background while work runs; records what was lost.

    One thread per batch, renewing every third of the lease: a renewal that fails
    (the database restarting, say) is retried at the next beat, well before expiry."""

    def __init__(self, sessions: sessionmaker[Session], lease: Lease, ids: Collection[int]) -> None:
        self.sessions, self.lease, self.ids = sessions, lease, set(ids)
        self.lost: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="vre-lease")

    def _beat(self) -> None:
        while not self._stop.wait(self.lease.seconds / 3):
            try:
                with transaction(self.sessions) as session:
                    lost = self.lease.renew(session, self.ids - self.lost)
            except Exception:
                log.exception("could not renew the lease on %s", sorted(self.ids))
                continue
            if lost:
                log.warning("lease lost on %s %s", self.lease.model.__tablename__, sorted(lost))
                self.lost |= lost

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@contextmanager
def held(
    sessions: sessionmaker[Session], lease: Lease, ids: Collection[int]
) -> Iterator[Heartbeat]:
    """Keep the lease on ``ids`` for as long as the ``with`` block works on them."""
    heart = Heartbeat(sessions, lease, ids).start()
    try:
        yield heart
    finally:
        heart.stop()
