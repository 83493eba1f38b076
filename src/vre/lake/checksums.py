"""Checksums computed while bytes stream past, never by a second read."""

from __future__ import annotations

import hashlib
import re
import zlib
from concurrent.futures import Future, ThreadPoolExecutor

from vre.errors import Invalid

ADLER32 = re.compile(r"^[0-9a-f]{8}\Z")
MD5 = re.compile(r"^[0-9a-f]{32}\Z")


class Checksummer:
    """adler32 and md5 of a stream.

    md5 runs on a helper thread (hashlib releases the GIL), so on a multi-core host
    hashing overlaps with the I/O of the caller instead of adding to it.
    """

    def __init__(self) -> None:
        self._adler = 1
        self._md5 = hashlib.md5()
        self.bytes = 0
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: Future[None] | None = None

    def update(self, chunk: bytes) -> None:
        if self._pending is not None:
            self._pending.result()
        self._pending = self._pool.submit(self._md5.update, chunk)
        self._adler = zlib.adler32(chunk, self._adler)
        self.bytes += len(chunk)

    def _finish(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        self._pool.shutdown(wait=True)

    @property
    def adler32(self) -> str:
        self._finish()
        return f"{self._adler & 0xFFFFFFFF:08x}"

    @property
    def md5(self) -> str:
        self._finish()
        return self._md5.hexdigest()

    def close(self) -> None:
        self._finish()


def check_adler32(value: str | None) -> str | None:
    if value is None:
        return None
    padded = value.lower().zfill(8)  # Rucio clients drop leading zeros
    if not value or not ADLER32.match(padded):
        raise Invalid(f"invalid adler32 checksum {value!r}: expected 8 hexadecimal digits")
    return padded


def check_md5(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.lower()
    if not MD5.match(value):
        raise Invalid(f"invalid md5 checksum {value!r}: expected 32 hexadecimal digits")
    return value
