"""Password hashing with Argon2id, a memory-hard hash."""

from __future__ import annotations

import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@cache
def dummy_hash() -> str:
    """A hash of nothing anyone knows, made with the same parameters as real ones.

    Checking a password against it costs what checking a real one does, so a login for
    a missing account (or one without a password) takes as long as a wrong password for
    an existing one, and timing cannot tell account names apart. The server makes it
    when it starts (``accounts.bootstrap_root``), not at the first unknown login."""
    return _hasher.hash(secrets.token_urlsafe(32))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; always one full Argon2 verification."""
    try:
        return _hasher.verify(password_hash or dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False
