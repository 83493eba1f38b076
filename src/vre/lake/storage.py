"""The one module that touches bytes: every protocol goes through fsspec.

An RSE is a URL prefix; a replica's URL is that prefix joined with its path.
Writes land under a temporary ``.vre-part-*`` name and are renamed into place
only once complete, so a reader never sees half a file under a real name.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from fsspec import AbstractFileSystem

from vre.errors import Invalid, StorageError
from vre.lake import protocols
from vre.lake.checksums import Checksummer

SCHEMES = protocols.SCHEMES


@dataclass(frozen=True)
class Stored:
    bytes: int
    adler32: str
    md5: str | None


check_prefix = protocols.check_prefix  # (prefix) -> normalised prefix, or Invalid
check_options = protocols.check_options  # (prefix, options) -> dict[str, str], or Invalid


def join(prefix: str, path: str) -> str:
    """Join a replica path under its RSE prefix, refusing anything that climbs out."""
    normal = posixpath.normpath("/" + path)
    if normal != "/" + path or path.startswith("/"):
        raise Invalid(f"path {path!r} is not inside the storage element")
    return prefix.rstrip("/") + "/" + path


def filesystem(
    url: str, *, options: Mapping[str, Any] | None = None
) -> tuple[AbstractFileSystem, str]:
    """The filesystem serving ``url`` (cached per scheme, host and options) and the path."""
    try:
        return protocols.filesystem(url, options)
    except (ValueError, TypeError, ImportError) as exc:
        raise StorageError(f"cannot open storage {url!r}: {exc}") from exc


def local_path(url: str) -> str | None:
    """The POSIX path of a ``file://`` URL (for direct reads on the same host)."""
    parts = urlsplit(url)
    return parts.path if parts.scheme == "file" else None


def part_url(url: str, tag: str) -> str:
    return f"{url}.vre-part-{tag}"


def write_part(
    url: str,
    chunks: Iterable[bytes],
    *,
    tag: str,
    options: Mapping[str, Any] | None = None,
    md5: bool = True,
) -> Stored:
    """Stream ``chunks`` to the temporary name of ``url``, with checksums.

    On any failure (including an interrupted client) the partial file is removed.
    Transfers verify adler32 only and skip md5 (``md5=False``): it halves their cost.
    """
    fs, path = filesystem(url, options=options)
    _, part = filesystem(part_url(url, tag), options=options)
    summer = Checksummer(md5=md5)
    try:
        protocols.makedirs(fs, posixpath.dirname(path))
        handle = fs.open(part, "wb")
        try:
            for chunk in chunks:
                if chunk:
                    summer.update(chunk)
                    handle.write(chunk)
            _sync(handle)
        except BaseException:
            with contextlib.suppress(Exception):
                protocols.abandon(handle)  # do not publish half a file
            raise
        handle.close()  # remote protocols upload or complete here
    except BaseException as exc:
        summer.close()
        protocols.forget_directory(fs, posixpath.dirname(path))
        _quiet_rm(fs, part)
        if isinstance(exc, protocols.errors()):
            raise StorageError(f"writing {url} failed: {exc}") from exc
        raise
    return Stored(bytes=summer.bytes, adler32=summer.adler32, md5=summer.md5)


def _sync(handle: object) -> None:
    """Flush to disk before the catalogue says the bytes are there (local files).

    Remote protocols (XRootD) persist on close, which the caller does next.
    """
    fileno = getattr(getattr(handle, "f", None), "fileno", None)
    if fileno is not None:
        handle.flush()  # type: ignore[attr-defined]
        # Stored read-only: a replica's bytes never change under its checksum (the
        # reaper and re-uploads replace or remove the name, never write through it).
        os.fchmod(fileno(), 0o444)
        os.fsync(fileno())


def commit_part(url: str, tag: str, *, options: Mapping[str, Any] | None = None) -> None:
    """Move a complete temporary file to its real name (a rename; copy + delete on S3)."""
    fs, path = filesystem(url, options=options)
    _, part = filesystem(part_url(url, tag), options=options)
    try:
        protocols.move(fs, part, path)  # the protocols refresh their own listings
    except protocols.errors() as exc:
        invalidate(fs)
        raise StorageError(f"moving {url} into place failed: {exc}") from exc


def discard_part(url: str, tag: str, *, options: Mapping[str, Any] | None = None) -> None:
    fs, part = filesystem(part_url(url, tag), options=options)
    _quiet_rm(fs, part)


def default_block_size() -> int:
    """The server's ``VRE_BLOCK_SIZE``, read when a stream starts.

    Imported here, not at the top: the client reads replicas directly through this
    module and passes its own block size, so it never loads the server's settings.
    """
    from vre.config import get_settings

    return get_settings().block_size


class Origin(Protocol):
    """A replica to copy from: its RSE's name (for messages), its URL and RSE options."""

    @property
    def rse(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def options(self) -> Mapping[str, Any] | None: ...


S = TypeVar("S", bound=Origin)


@dataclass(frozen=True)
class Source:
    """An ``Origin`` for callers without a record of their own (transfers have one)."""

    rse: str
    url: str
    options: Mapping[str, Any] | None = None


@dataclass
class Copied(Generic[S]):
    """What ``copy_verified`` did: the source whose bytes are now in place (``None``
    when none), the checksums written, why the others failed, and the sources whose
    bytes differ from the catalogue's (their replicas are bad)."""

    source: S | None = None
    stored: Stored | None = None
    errors: list[str] = field(default_factory=list)
    mismatched: list[S] = field(default_factory=list)


def copy_verified(
    sources: Sequence[S],
    url: str,
    *,
    tag: str,
    options: Mapping[str, Any] | None = None,
    expected_bytes: int | None = None,
    expected_adler32: str | None = None,
) -> Copied[S]:
    """Copy the first source whose bytes match the catalogue to ``url``.

    Stage-in and transfers both need "stream a replica, check it, publish it": each
    source in turn goes to the part name of ``url`` (adler32 on the way, no md5: a copy
    is checked against the catalogue, which has adler32), and only a match is renamed
    into place, so a reader never sees wrong bytes. A source that cannot be read is
    skipped; one that reads but differs is skipped and reported in ``mismatched``. A
    failed rename ends the copy: the destination is at fault, another source would not
    help. On failure no part file is left and ``url`` is untouched. ``None`` skips a check.
    """
    copied: Copied[S] = Copied()
    for source in sources:
        try:
            stored = write_part(
                url, read(source.url, options=source.options), tag=tag, options=options, md5=False
            )
        except StorageError as exc:
            copied.errors.append(f"from {source.rse}: {exc.message}")
            continue
        wrong = _mismatch(stored, source.rse, expected_bytes, expected_adler32)
        if wrong:
            discard_part(url, tag, options=options)
            copied.mismatched.append(source)
            copied.errors.append(wrong)
            continue
        try:
            commit_part(url, tag, options=options)
        except StorageError as exc:
            discard_part(url, tag, options=options)
            copied.errors.append(exc.message)
            return copied
        copied.source, copied.stored = source, stored
        return copied
    return copied


def _mismatch(
    stored: Stored, rse: str, expected_bytes: int | None, expected_adler32: str | None
) -> str:
    """Why the bytes read from ``rse`` are not the catalogue's ('' when they are)."""
    if expected_adler32 is not None and stored.adler32 != expected_adler32:
        return (
            f"checksum mismatch on {rse}: adler32 {stored.adler32},"
            f" catalogue says {expected_adler32}"
        )
    if expected_bytes is not None and stored.bytes != expected_bytes:
        return f"size mismatch on {rse}: {stored.bytes} bytes, catalogue says {expected_bytes}"
    return ""


def read(
    url: str, block_size: int | None = None, *, options: Mapping[str, Any] | None = None
) -> Iterator[bytes]:
    """The bytes at ``url`` in blocks of ``block_size`` (default ``VRE_BLOCK_SIZE``)."""
    fs, path = filesystem(url, options=options)
    block_size = block_size or default_block_size()
    try:
        with fs.open(path, "rb", block_size=block_size) as handle:
            while chunk := handle.read(block_size):
                yield chunk
    except FileNotFoundError as exc:
        raise StorageError(f"{url} is missing on its storage element") from exc
    except protocols.errors() as exc:
        raise StorageError(f"reading {url} failed: {exc}") from exc


def delete(url: str, *, options: Mapping[str, Any] | None = None) -> None:
    """Remove one file; a file already gone counts as deleted."""
    fs, path = filesystem(url, options=options)
    try:
        if fs.exists(path):
            fs.rm_file(path)
    except protocols.errors() as exc:
        raise StorageError(f"deleting {url} failed: {exc}") from exc
    finally:
        invalidate(fs)


def exists(url: str, *, options: Mapping[str, Any] | None = None) -> bool:
    fs, path = filesystem(url, options=options)
    invalidate(fs)
    return bool(fs.exists(path))


def size(url: str, *, options: Mapping[str, Any] | None = None) -> int:
    fs, path = filesystem(url, options=options)
    invalidate(fs)
    return int(fs.size(path))


def invalidate(fs: AbstractFileSystem) -> None:
    with contextlib.suppress(Exception):
        fs.invalidate_cache()


def _quiet_rm(fs: AbstractFileSystem, path: str) -> None:
    with contextlib.suppress(Exception):
        if fs.exists(path):
            fs.rm_file(path)
    invalidate(fs)
