"""The one module that touches bytes: every protocol goes through fsspec.

An RSE is a URL prefix; a replica's URL is that prefix joined with its path.
Writes land under a temporary ``.vre-part-*`` name and are renamed into place
only once complete, so a reader never sees half a file under a real name.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import fsspec
from fsspec import AbstractFileSystem

from vre.errors import Invalid, StorageError
from vre.lake.checksums import Checksummer

SCHEMES = ("file", "root")
CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Stored:
    bytes: int
    adler32: str
    md5: str


def check_prefix(prefix: str) -> str:
    """An RSE prefix must be an absolute URL of a protocol we can speak."""
    parts = urlsplit(prefix)
    if parts.scheme not in SCHEMES:
        raise Invalid(
            f"unsupported storage URL {prefix!r}: the scheme must be one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if parts.scheme == "file" and (parts.netloc or not parts.path.startswith("/")):
        raise Invalid(f"invalid file URL {prefix!r}: expected file:///absolute/path")
    if parts.scheme == "root" and (not parts.netloc or not parts.path.startswith("//")):
        raise Invalid(f"invalid XRootD URL {prefix!r}: expected root://host:port//path")
    return prefix.rstrip("/") if parts.path.rstrip("/") else prefix


def join(prefix: str, path: str) -> str:
    """Join a replica path under its RSE prefix, refusing anything that climbs out."""
    normal = posixpath.normpath("/" + path)
    if normal != "/" + path or path.startswith("/"):
        raise Invalid(f"path {path!r} is not inside the storage element")
    return prefix.rstrip("/") + "/" + path


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as exc:
        raise StorageError(f"cannot open storage {url!r}: {exc}") from exc
    return fs, path


def local_path(url: str) -> str | None:
    """The POSIX path of a ``file://`` URL (for direct reads on the same host)."""
    parts = urlsplit(url)
    return parts.path if parts.scheme == "file" else None


def part_url(url: str, tag: str) -> str:
    return f"{url}.vre-part-{tag}"


def write_part(url: str, chunks: Iterable[bytes], *, tag: str) -> Stored:
    """Stream ``chunks`` to the temporary name of ``url``, with checksums.

    On any failure (including an interrupted client) the partial file is removed.
    """
    fs, path = filesystem(url)
    _, part = filesystem(part_url(url, tag))
    summer = Checksummer()
    try:
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with fs.open(part, "wb") as handle:
            for chunk in chunks:
                if chunk:
                    summer.update(chunk)
                    handle.write(chunk)
            _sync(handle)
    except BaseException as exc:
        summer.close()
        _quiet_rm(fs, part)
        if isinstance(exc, OSError):
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
        os.fsync(fileno())


def commit_part(url: str, tag: str) -> None:
    """Move a complete temporary file to its real name (an atomic rename)."""
    fs, path = filesystem(url)
    _, part = filesystem(part_url(url, tag))
    try:
        fs.mv(part, path)
    except OSError as exc:
        raise StorageError(f"moving {url} into place failed: {exc}") from exc
    finally:
        invalidate(fs)


def discard_part(url: str, tag: str) -> None:
    fs, part = filesystem(part_url(url, tag))
    _quiet_rm(fs, part)


def read(url: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
    fs, path = filesystem(url)
    try:
        with fs.open(path, "rb", block_size=chunk_size) as handle:
            while chunk := handle.read(chunk_size):
                yield chunk
    except FileNotFoundError as exc:
        raise StorageError(f"{url} is missing on its storage element") from exc
    except OSError as exc:
        raise StorageError(f"reading {url} failed: {exc}") from exc


def delete(url: str) -> None:
    """Remove one file; a file already gone counts as deleted."""
    fs, path = filesystem(url)
    try:
        if fs.exists(path):
            fs.rm_file(path)
    except OSError as exc:
        raise StorageError(f"deleting {url} failed: {exc}") from exc
    finally:
        invalidate(fs)


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    invalidate(fs)
    return bool(fs.exists(path))


def size(url: str) -> int:
    fs, path = filesystem(url)
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
