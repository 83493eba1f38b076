"""Failed logins, counted per account name and per client address, with back-off.

Every login attempt is counted *before* its password is checked and the count is
committed at once: parallel guesses see each other's attempts (no burst slips past the
limit), and the slow password hash runs without holding a write lock. A successful
login takes its attempt back. When a count passes its limit the name (or the address)
is locked out for a while, doubled for each further lock-out; locked-out attempts are
refused before any password is checked. Names of no account are counted exactly like
real ones, so neither a lock-out nor its absence tells whether an account exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from vre.config import Settings
from vre.db import is_postgres, utcnow
from vre.errors import TooManyRequests
from vre.identity.models import LoginFailure

KEY_LENGTH = 128  # the width of login_failures.key


class LoginThrottled(TooManyRequests):
    """Too many failed logins: HTTP 429, with the seconds to wait (``Retry-After``)."""


@dataclass(frozen=True)
class Counter:
    """One thing whose failed logins are counted: ``what`` names it in messages."""

    key: str
    limit: int
    what: str


@dataclass(frozen=True)
class Limits:
    account_failures: int
    address_failures: int
    lockout: float
    lockout_max: float

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.login_failures,
            settings.login_address_failures,
            settings.login_lockout,
            settings.login_lockout_max,
        )

    def counters(self, name: str, address: str | None) -> list[Counter]:
        """The account name's counter and, when known, the client address's."""
        found = [Counter(f"account:{name}"[:KEY_LENGTH], self.account_failures, "this account")]
        if address:
            where = f"address:{address}"[:KEY_LENGTH]
            found.append(Counter(where, self.address_failures, "this address"))
        return found

    def backoff(self, lockouts: int) -> timedelta:
        """The ``lockouts``-th lock-out (from 1) lasts twice as long as the one before."""
        return timedelta(seconds=min(self.lockout * 2 ** min(lockouts - 1, 40), self.lockout_max))


def _refuse(until: datetime, what: str, now: datetime) -> LoginThrottled:
    wait = max(1, math.ceil((until - now).total_seconds()))
    return LoginThrottled(f"too many failed logins from {what}: try again in {wait} s", wait)


def refuse_if_locked(session: Session, counters: Sequence[Counter]) -> None:
    """Raise ``LoginThrottled`` while any counter is locked out: no password is checked."""
    now = utcnow()
    by_key = {c.key: c for c in counters}
    rows = session.execute(
        select(LoginFailure.key, LoginFailure.locked_until).where(
            LoginFailure.key.in_(by_key), LoginFailure.locked_until > now
        )
    ).all()
    locked = [(until, by_key[key].what) for key, until in rows if until is not None]
    if locked:
        until, what = max(locked)
        raise _refuse(until, what, now)


def count_attempt(session: Session, counters: Sequence[Counter], limits: Limits) -> None:
    """Count one attempt on every counter; lock out those past their limit and raise.

    One upsert per call (``INSERT … ON CONFLICT``), so concurrent attempts from several
    server processes add up instead of overwriting each other. The caller commits,
    also when this raises: the lock-out must outlive the refused request."""
    now = utcnow()
    forget = now - 2 * timedelta(seconds=limits.lockout_max)
    insert = pg_insert if is_postgres(session) else sqlite_insert
    statement = insert(LoginFailure).values(
        [
            {"key": c.key, "failures": 1, "lockouts": 0, "locked_until": None, "updated_at": now}
            for c in counters
        ]
    )
    stale = LoginFailure.updated_at < forget
    counted = session.execute(
        statement.on_conflict_do_update(
            index_elements=[LoginFailure.key],
            set_={
                "failures": case((stale, 1), else_=LoginFailure.failures + 1),
                "lockouts": case((stale, 0), else_=LoginFailure.lockouts),
                "updated_at": now,
            },
        ).returning(
            LoginFailure.key,
            LoginFailure.failures,
            LoginFailure.lockouts,
            LoginFailure.locked_until,
        ),
        execution_options={"synchronize_session": False},
    ).all()
    _forget_before(session, forget)
    refusals: list[tuple[datetime, str]] = []
    by_key = {c.key: c for c in counters}
    for key, failures, lockouts, locked_until in counted:
        counter = by_key[key]
        if locked_until is not None and locked_until > now:  # locked by a parallel attempt
            refusals.append((locked_until, counter.what))
        elif failures > counter.limit:
            until = now + limits.backoff(lockouts + 1)
            session.execute(
                update(LoginFailure)
                .where(LoginFailure.key == key, LoginFailure.failures > counter.limit)
                .values(failures=0, lockouts=lockouts + 1, locked_until=until)
            )
            refusals.append((until, counter.what))
    if refusals:
        until, what = max(refusals)
        raise _refuse(until, what, now)


def _forget_before(session: Session, forget: datetime) -> None:
    """Drop counters idle since ``forget``, so sprayed names do not pile up.

    ``SKIP LOCKED`` (PostgreSQL): rows another login holds are left for later, so this
    never waits while holding this attempt's own counters, and cannot deadlock."""
    idle = (
        select(LoginFailure.key)
        .where(LoginFailure.updated_at < forget)
        .limit(1000)
        .with_for_update(skip_locked=True)
    )
    session.execute(
        delete(LoginFailure).where(LoginFailure.key.in_(idle.scalar_subquery())),
        execution_options={"synchronize_session": False},
    )


def take_back(session: Session, counters: Sequence[Counter]) -> None:
    """A successful login: the account's count starts again, the address's loses this try.

    The address keeps its other failures, so an attacker cannot clear them by logging
    in to an account of their own between guesses at others'."""
    account, *others = counters
    session.execute(delete(LoginFailure).where(LoginFailure.key == account.key))
    for counter in others:
        session.execute(
            update(LoginFailure)
            .where(LoginFailure.key == counter.key, LoginFailure.failures > 0)
            .values(failures=LoginFailure.failures - 1)
        )
