"""Sealing: secrets kept in the database are encrypted with a key that is not in it.

Account secrets and RSE protocol options (storage passwords and keys) are stored
sealed; whoever reads the database, or a copy of it, learns nothing of them without
the key. The key is the operator's (``VRE_SECRET_KEY`` or ``VRE_SECRET_KEY_FILE``) or,
unset, ``$VRE_HOME/secret.key``, generated at first use with mode 0600. Servers and
workers sharing one database must share the key.

A sealed value is ``vre-sealed:v1:KEYID:DATA``: the version says how ``DATA`` was made,
so another cipher can follow as ``v2`` with old values still opened; ``KEYID`` tells a
wrong key from damaged data. ``v1`` is AES-256-GCM (the ``cryptography`` package) with a
random 96-bit nonce; the version, key id and ``context`` are its associated data.
``context`` binds a value to where it belongs (an account's secret, an option's name): a
sealed value copied into another row does not open there.

Plain text is only ever in memory, and only where it is needed: handing secrets to a
step, building a storage filesystem. Nothing here logs a value or puts one in an error.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import os
import secrets
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vre.errors import StorageError

PREFIX = "vre-sealed:"
VERSION = "v1"
KEY_FILE = "secret.key"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
MISMATCH = "the secret key does not match the one these secrets were sealed with"
KEY_HELP = (
    "32 random bytes in URL-safe base64, e.g. the output of"
    " python -c 'import secrets; print(secrets.token_urlsafe(32))'"
)


class SealingError(StorageError):
    """The server cannot open what it sealed: a wrong or missing key, or damaged data.

    A storage error (transfers, uploads and the reaper handle it as a storage they
    cannot reach, and try again) but the server's fault, not the storage's."""

    code = "secret_key"
    status = 500


@dataclass(frozen=True)
class Key:
    """The operator's key, split into one key per purpose."""

    id: str
    encrypt: bytes

    @classmethod
    def from_bytes(cls, raw: bytes) -> Key:
        if len(raw) != KEY_BYTES:
            raise SealingError(f"the secret key must be {KEY_HELP}")

        def derive(label: str) -> bytes:
            return hmac.new(raw, f"vre-sealing-{VERSION} {label}".encode(), "sha256").digest()

        return cls(derive("key id")[:6].hex(), derive("encrypt"))

    @classmethod
    def from_text(cls, text: str, where: str) -> Key:
        value = text.strip()
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != KEY_BYTES:
            raise SealingError(f"{where} is not a secret key: it must be {KEY_HELP}")
        return cls.from_bytes(raw)


def is_sealed(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and value.startswith(PREFIX)


def seal(plaintext: str, context: str = "", *, key: Key | None = None) -> str:
    """``plaintext`` encrypted and authenticated; ``context`` must match when opened."""
    key = key or current_key()
    nonce = secrets.token_bytes(NONCE_BYTES)
    body = AESGCM(key.encrypt).encrypt(nonce, plaintext.encode("utf-8"), _bound(key, context))
    encoded = base64.urlsafe_b64encode(nonce + body).decode().rstrip("=")
    return f"{PREFIX}{VERSION}:{key.id}:{encoded}"


def open(sealed: str, context: str = "", *, key: Key | None = None) -> str:
    """The plain text of a value ``seal`` made; ``SealingError`` for anything else."""
    if not is_sealed(sealed):
        raise SealingError("a stored secret is not sealed: the database was not migrated")
    version, _, rest = sealed[len(PREFIX) :].partition(":")
    key_id, _, encoded = rest.partition(":")
    if version != VERSION:
        raise SealingError(f"a stored secret is sealed as {version!r}, which this VRE cannot open")
    key = key or current_key()
    if not hmac.compare_digest(key_id, key.id):
        raise SealingError(MISMATCH)
    try:
        blob = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        blob = b""
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise SealingError("a stored secret is damaged: it cannot be opened")
    nonce, body = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
    try:
        data = AESGCM(key.encrypt).decrypt(nonce, body, _bound(key, context))
    except InvalidTag:
        raise SealingError(
            "a stored secret is damaged or belongs elsewhere: it does not open with this key"
        ) from None
    return data.decode("utf-8")


def seal_options(options: Mapping[str, str], *, key: Key | None = None) -> dict[str, str]:
    """RSE protocol options with every value sealed (bound to its option's name)."""
    return {
        name: value if is_sealed(value) else seal(str(value), _option(name), key=key)
        for name, value in options.items()
    }


def open_options(options: Mapping[str, object], *, key: Key | None = None) -> dict[str, object]:
    """RSE protocol options in plain text, to build a storage filesystem.

    The catalogue holds sealed values only; plain ones come from callers that never
    stored them (the client's direct reads, tests) and pass unchanged."""
    return {
        name: open(value, _option(name), key=key) if is_sealed(value) else value
        for name, value in options.items()
    }


def _option(name: str) -> str:
    return f"rse option {name}"


def _bound(key: Key, context: str) -> bytes:
    """What a sealed value is tied to: authenticated, not encrypted."""
    return f"{VERSION}:{key.id}:".encode() + context.encode("utf-8")


# --- where the key comes from ---------------------------------------------------------

_keys: dict[tuple[str, str, str], Key] = {}
_lock = threading.Lock()


def current_key() -> Key:
    """The key the settings name, read once per process (per distinct setting)."""
    from vre.config import get_settings

    settings = get_settings()
    given = settings.secret_key.get_secret_value() if settings.secret_key else ""
    file = str(settings.secret_key_file or "")
    cache = (given, file, str(settings.home))
    with _lock:
        key = _keys.get(cache)
        if key is None:
            if given:
                key = Key.from_text(given, "VRE_SECRET_KEY")
            elif file:
                key = Key.from_text(_read(Path(file), "VRE_SECRET_KEY_FILE"), "VRE_SECRET_KEY_FILE")
            else:
                key = Key.from_text(generated_key(settings.home), "VRE_HOME/secret.key")
            _keys[cache] = key
    return key


def _read(path: Path, setting: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:  # no path in the message: it may reach an API answer
        raise SealingError(f"{setting} cannot be read ({exc.strerror})") from None


def generated_key(home: Path) -> str:
    """``home/secret.key``, made on first use: readable by its owner only from its first
    byte on (created 0600 under a temporary name, then linked into place, so a reader
    never sees half a key and two processes starting at once agree on one)."""
    path = home / KEY_FILE
    if not path.exists():
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = home / f".{KEY_FILE}.{secrets.token_hex(8)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(KEY_BYTES) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process was first: theirs
                os.link(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as handle:
        if stat.S_IMODE(os.fstat(handle.fileno()).st_mode) & 0o077:
            os.fchmod(handle.fileno(), 0o600)  # ours, under VRE_HOME: no one else reads it
        return handle.read()


def forget_keys() -> None:
    """Read the key again on next use (tests that change the settings)."""
    with _lock:
        _keys.clear()
