"""Failed logins: counted per name and per address, locked out with back-off, shared by
every process, and a missing account costs the same password hash as an existing one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from vre.config import Settings
from vre.db import make_engine, make_sessionmaker, transaction, utcnow
from vre.errors import Unauthorized
from vre.identity import accounts, passwords
from vre.identity.models import Account, LoginFailure
from vre.identity.throttle import LoginThrottled

Attempt = Callable[..., str]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        login_failures=3,
        login_address_failures=8,
        login_lockout=30,
        login_lockout_max=100,
    )


@pytest.fixture
def attempt(sessions: sessionmaker[Session], settings: Settings) -> Attempt:
    """One login in its own transaction: 'ok', 'wrong' or 'locked'."""

    def run(name: str, password: str, address: str | None = "10.0.0.1") -> str:
        try:
            with transaction(sessions) as session:
                accounts.authenticate(session, name, password, address=address, settings=settings)
        except LoginThrottled:
            return "locked"
        except Unauthorized:
            return "wrong"
        return "ok"

    return run


def end_lockouts(sessions: sessionmaker[Session]) -> None:
    """The lock-out window has passed (no sleeping in tests)."""
    with transaction(sessions) as session:
        session.execute(update(LoginFailure).values(locked_until=utcnow() - timedelta(seconds=1)))


def test_wrong_passwords_lock_the_account_out_then_it_works_again(
    sessions: sessionmaker[Session], attempt: Attempt, alice: Account
) -> None:
    assert [attempt("alice", "guess") for _ in range(10)] == ["wrong"] * 3 + ["locked"] * 7
    assert attempt("alice", "alice-password") == "locked"  # the right one waits too
    assert attempt("alice", "alice-password", address="10.9.9.9") == "locked"  # anywhere
    assert attempt("bob", "bob-password") == "ok"  # another account is not locked
    end_lockouts(sessions)
    assert attempt("alice", "alice-password") == "ok"
    # a success clears the account's count: three more guesses before the next lock-out
    assert [attempt("alice", "guess") for _ in range(4)] == ["wrong"] * 3 + ["locked"]


def test_each_further_lockout_lasts_twice_as_long(
    sessions: sessionmaker[Session], settings: Settings, alice: Account
) -> None:
    settings = settings.model_copy(update={"login_failures": 1})
    waits = []
    for _ in range(5):
        with pytest.raises(Unauthorized), transaction(sessions) as session:
            accounts.authenticate(session, "alice", "guess", settings=settings)
        with pytest.raises(LoginThrottled) as locked, transaction(sessions) as session:
            accounts.authenticate(session, "alice", "guess", settings=settings)
        assert locked.value.status == 429 and "try again in" in locked.value.message
        waits.append(locked.value.retry_after)
        end_lockouts(sessions)
    assert waits == [30, 60, 100, 100, 100]  # doubled, up to VRE_LOGIN_LOCKOUT_MAX


def test_unknown_names_are_answered_exactly_like_real_ones(
    sessions: sessionmaker[Session], attempt: Attempt, alice: Account
) -> None:
    real = [attempt("alice", "guess", address=None) for _ in range(5)]
    unknown = [attempt("nobody", "guess", address=None) for _ in range(5)]
    assert real == unknown == ["wrong"] * 3 + ["locked"] * 2
    with pytest.raises(Unauthorized) as one, transaction(sessions) as session:
        accounts.authenticate(session, "carol", "guess")
    with pytest.raises(Unauthorized) as other, transaction(sessions) as session:
        accounts.authenticate(session, "bob", "guess")
    assert one.value.message == other.value.message == "wrong account name or password"


def test_one_address_guessing_many_accounts_is_locked_out(
    sessions: sessionmaker[Session], attempt: Attempt, alice: Account
) -> None:
    sprayed = [attempt(f"user{i}", "password1", address="10.6.6.6") for i in range(12)]
    assert sprayed == ["wrong"] * 8 + ["locked"] * 4
    assert attempt("alice", "alice-password", address="10.6.6.6") == "locked"
    assert attempt("alice", "alice-password", address="10.0.0.2") == "ok"  # elsewhere: fine


def test_logging_in_to_ones_own_account_does_not_clear_an_address(
    attempt: Attempt, alice: Account, bob: Account
) -> None:
    """bob guesses at others between logins of his own: the guesses still add up."""
    outcomes = []
    for i in range(9):
        outcomes.append(attempt(f"victim{i}", "password1", address="10.7.7.7"))
        outcomes.append(attempt("bob", "bob-password", address="10.7.7.7"))
    assert outcomes.count("wrong") == 8 and outcomes[-2:] == ["locked", "locked"]


def test_parallel_guesses_do_not_slip_past_the_limit(
    sessions: sessionmaker[Session], attempt: Attempt, alice: Account
) -> None:
    """Each attempt is counted (and committed) before its password is checked."""
    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(lambda _: attempt("alice", "guess"), range(24)))
    assert outcomes.count("wrong") <= 3 and outcomes.count("locked") >= 21
    assert attempt("alice", "alice-password") == "locked"


def test_the_counts_hold_across_processes_and_restarts(
    db_url: str, sessions: sessionmaker[Session], settings: Settings, alice: Account
) -> None:
    """Two engines on one database stand for two ``vre serve`` processes."""
    other = make_engine(db_url)
    try:
        second = make_sessionmaker(other)
        for factory in (sessions, second, sessions):
            with pytest.raises(Unauthorized), transaction(factory) as session:
                accounts.authenticate(session, "alice", "guess", settings=settings)
        for factory in (second, sessions):
            with pytest.raises(LoginThrottled), transaction(factory) as session:
                accounts.authenticate(session, "alice", "alice-password", settings=settings)
    finally:
        other.dispose()


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Count the real Argon2 verifications (they still run: nothing is faked)."""
    seen: list[str] = []
    real = PasswordHasher.verify

    def counting(self: PasswordHasher, hash: str, password: str) -> bool:
        seen.append(hash)
        return real(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting)
    yield seen


def test_a_missing_account_costs_the_same_hash_as_an_existing_one(
    sessions: sessionmaker[Session], root: Account, alice: Account, verifications: list[str]
) -> None:
    with transaction(sessions) as session:
        accounts.create(session, root, "robot", kind="service")  # no password at all
        accounts.create(session, root, "gone", password="gone-password")
        accounts.delete(session, root, "gone")
    for name in ("alice", "nobody", "robot", "gone"):
        verifications.clear()
        with pytest.raises(Unauthorized), transaction(sessions) as session:
            accounts.authenticate(session, name, "guess-password")
        assert len(verifications) == 1, name  # one full verification, never a shortcut
    verifications.clear()
    with transaction(sessions) as session:
        accounts.authenticate(session, "alice", "alice-password")
    assert len(verifications) == 1
    # the dummy hash is made with the very parameters of real ones: the same cost
    with transaction(sessions) as session:
        real = accounts.get(session, "alice").password_hash or ""
    dummy = passwords.dummy_hash()
    assert dummy.rsplit("$", 2)[0] == real.rsplit("$", 2)[0]  # $argon2id$v=…$m=…,t=…,p=…
    assert not passwords._hasher.check_needs_rehash(dummy)


def test_a_disabled_account_cannot_log_in(
    sessions: sessionmaker[Session], root: Account, alice: Account
) -> None:
    with transaction(sessions) as session:
        accounts.set_disabled(session, root, "alice", True)
    with pytest.raises(Unauthorized, match="disabled"), transaction(sessions) as session:
        accounts.authenticate(session, "alice", "alice-password")
    with pytest.raises(Unauthorized, match="wrong account name"), transaction(sessions) as s:
        accounts.authenticate(s, "alice", "not-her-password")  # no hint without the password
    with transaction(sessions) as session:
        accounts.set_disabled(session, root, "alice", False)
    with transaction(sessions) as session:
        assert accounts.authenticate(session, "alice", "alice-password").name == "alice"
