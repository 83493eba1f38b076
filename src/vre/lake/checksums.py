"""Checksums computed while bytes stream past, never by a second read."""

from __future__ import annotations

import hashlib
import re
import zlib
from concurrent.futures import Future, ThreadPoolExecutor

from vre.errors import Invalid

ADLER32 = re.compile(r"^[0-9a-f]{8}\Z")
MD5 = re.compile(r"^[0-9a-f]{32}\Z")


# One shared helper pool: starting a thread per file cost more than hashing 10 KiB.
_MD5_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="vre-md5")


class Checksummer:
    """adler32 (and md5, unless told not to) of a stream.

    md5 runs on a helper thread (hashlib releases the GIL), so on a multi-core host
    hashing overlaps with the I/O of the caller instead of adding to it. Each stream
    waits for its previous md5 update before the next, so the order is kept.
    """

    def __init__(self, *, md5: bool = True) -> None:
        self._adler = 1
        self._md5 = hashlib.md5() if md5 else None
        self.bytes = 0
        self._pending: Future[None] | None = None

    def update(self, chunk: bytes) -> None:
        if self._md5 is not None:
            if self._pending is not None:
                self._pending.result()
            self._pending = _MD5_POOL.submit(self._md5.update, chunk)
        self._adler = zlib.adler32(chunk, self._adler)
        self.bytes += len(chunk)

    def _finish(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    @property
    def adler32(self) -> str:
        return f"{self._adler & 0xFFFFFFFF:08x}"

    @property
    def md5(self) -> str | None:
        self._finish()
        return self._md5.hexdigest() if self._md5 is not None else None

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
