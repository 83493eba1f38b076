"""Bytes into and out of a workspace for a user: uploads within the quota, a directory
as a zip, step logs as streams, listings. Every file read here is opened by
``workspace.open_at`` (see its module for why); memory stays flat whatever the sizes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
import weakref
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from vre.errors import Conflict, Invalid, NotFound, QuotaExceeded, VREError, shown
from vre.workflows.run_logs import log_name, logs_of
from vre.workflows.workspace import (
    RESERVED,
    UPLOAD_PREFIX,
    Directory,
    File,
    Found,
    Owned,
    descend,
    directory_at,
    joined,
    kind_of,
    make_directories,
    open_at,
    open_entry,
    open_root,
    parts_of,
    refuse_reserved,
    tree,
)

SKIPPED = ".vre-skipped.txt"  # in a zip: what was left out, and why


def _discard(fd: int, directory: int, temp: str) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(temp, dir_fd=directory)
    os.close(directory)


class Upload:
    """A file being written into a workspace (0600), under a fresh name made with
    ``O_EXCL | O_NOFOLLOW`` in its directory and renamed over ``path`` once complete:
    nothing half-written is ever seen under that name, a link there is replaced, never
    written through. Dropped or aborted, it leaves nothing; ``room`` bounds its bytes."""

    def __init__(
        self, workspace: Path, path: str, *, room: int | None = None, expected: int = 0
    ) -> None:
        names = parts_of(path)
        if not names:
            raise Invalid("a file needs a name inside the workspace")
        refuse_reserved(names, path)
        self.path, self.name, self.size = joined(names), names[-1], 0
        directory = make_directories(open_root(workspace), names[:-1], path)
        try:
            replaced = self._replaced(directory)
            self.temp = UPLOAD_PREFIX + secrets.token_hex(8)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            self.fd = os.open(self.temp, flags, 0o600, dir_fd=directory)
        except BaseException:
            os.close(directory)
            raise
        self.directory = directory
        self.room = None if room is None else room + replaced
        self._abort = weakref.finalize(self, _discard, self.fd, directory, self.temp)
        os.fchmod(self.fd, 0o600)
        if expected:  # a declared length that cannot fit is refused before any byte
            self._bound(expected)

    def _replaced(self, directory: int) -> int:
        """Bytes the file it replaces frees; an existing directory is refused, not replaced."""
        try:
            info = os.stat(self.name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            return 0
        if stat.S_ISDIR(info.st_mode):
            raise Invalid(f"{shown(self.path)} is a directory in the workspace")
        return info.st_blocks * 512 if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 else 0

    def _bound(self, size: int) -> None:
        if self.room is not None and size > self.room:
            self.abort()
            raise QuotaExceeded(
                f"{self.path} does not fit in the workspace quota of this account"
                f" (VRE_WORKSPACE_QUOTA): {max(self.room, 0)} bytes are left; nothing was"
                " written. Delete workspaces you no longer need ('vre delete RUN --workspace')"
            )

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._bound(self.size)
        view = memoryview(chunk)
        while view:
            view = view[os.write(self.fd, view) :]

    def commit(self) -> int:
        """Put the complete file in place; returns its size."""
        if self._abort.detach() is None:  # aborted: its descriptors are closed already
            raise Conflict(f"the upload of {self.path} was abandoned")
        try:
            os.close(self.fd)
            os.rename(self.temp, self.name, src_dir_fd=self.directory, dst_dir_fd=self.directory)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(self.temp, dir_fd=self.directory)
            if isinstance(exc, IsADirectoryError | NotADirectoryError):
                raise Invalid(f"{shown(self.path)} is a directory in the workspace") from None
            raise
        finally:
            os.close(self.directory)
        return self.size

    def abort(self) -> None:
        self._abort()


def finish(upload: Upload, chunks: Iterable[bytes]) -> int:
    """Write every chunk and put the file in place; any failure leaves nothing."""
    try:
        for chunk in chunks:
            upload.write(chunk)
    except BaseException:
        upload.abort()
        raise
    return upload.commit()


def write(
    workspace: Path, path: str, chunks: Iterable[bytes] | bytes, *, room: int | None = None
) -> int:
    """Write a whole file a user uploads (see ``Upload``); returns its size."""
    upload = Upload(workspace, path, room=room)
    return finish(upload, [chunks] if isinstance(chunks, bytes) else chunks)


def log_chunks(
    workspace: Path,
    steps: list[tuple[int, str, str]],
    *,
    label: str,
    limit: int | None,
    owned: Owned,
    block: int,
) -> Iterator[bytes]:
    """The logs of ``steps`` (index, name, status), each after a ``==> step`` line and at
    most ``limit`` bytes of it, then a note saying how to get the rest; read in blocks."""
    first = True
    for index, name, status in steps:
        try:
            opened = open_entry(logs_of(workspace), log_name(index, name), owned, internal=True)
        except NotFound:
            continue
        except VREError as exc:  # a step replaced its log by a link, a FIFO...: not read
            opened, note = None, f"[vre] log not shown: {exc.message}\n"
        yield f"{'' if first else chr(10)}==> step {name} ({status})\n".encode()
        first = False
        if not isinstance(opened, File):
            if opened is not None:
                opened.close()
                note = "[vre] log not shown: it is a directory\n"
            yield note.encode()
            continue
        yield from opened.chunks(block, limit)
        if limit is not None and opened.size > limit:
            step = quote(name, safe="")
            yield (
                f"\n[vre] log truncated at {limit} bytes; the full log: vre logs {label}"
                f" --step {name} --full (GET /api/v1/runs/{label}/logs?step={step}&full=true)\n"
            ).encode()


class _Sink:
    """Where a zip is written: a buffer emptied after every block, never seekable, so
    ``zipfile`` streams (data descriptors) instead of going back to patch headers."""

    def __init__(self) -> None:
        self.pending = bytearray()

    def write(self, data: bytes) -> int:
        self.pending += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = bytes(self.pending)
        self.pending.clear()
        return data


def _zip_info(path: str, mode: int, mtime: float, size: int) -> zipfile.ZipInfo:
    """An entry that keeps whether the file was executable and nothing else of its mode:
    never setuid, setgid or sticky, never writable by others."""
    year, *rest = time.localtime(max(mtime, 315532800))[:6]  # zip dates start in 1980
    info = zipfile.ZipInfo(path, (min(year, 2107), *rest))  # type: ignore[arg-type]
    info.external_attr = (stat.S_IFREG | (0o755 if mode & 0o100 else 0o644)) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    info.file_size = size
    return info


def zip_chunks(directory: Directory, owned: Owned, block: int) -> Iterator[bytes]:
    """``directory`` (consumed) as a zip, streamed: every regular file with one link
    opened by ``open_at``; links, FIFOs, hard-linked and the server's own files are left
    out and named in ``.vre-skipped.txt``. Paths are relative to ``directory``."""
    sink, skipped = _Sink(), []
    cut = len(directory.name) + 1 if directory.name else 0
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
        for found in tree(directory):
            if stat.S_ISDIR(found.info.st_mode) or found.name.startswith(UPLOAD_PREFIX):
                continue
            inside = found.path[cut:]
            try:
                opened = open_at(found.fd, found.name, found.path, owned)
            except VREError as exc:
                skipped.append(f"{inside}: {exc.message}")
                continue
            info = _zip_info(inside, opened.mode, opened.mtime, opened.size)
            with archive.open(info, "w") as entry:
                for chunk in opened.chunks(block):
                    entry.write(chunk)
                    if len(sink.pending) >= block:
                        yield sink.take()
            if sink.pending:
                yield sink.take()
        if skipped:
            note = ("\n".join(skipped) + "\n").encode()
            archive.writestr(_zip_info(SKIPPED, 0o644, time.time(), len(note)), note)
    yield sink.take()


# --- listings ---------------------------------------------------------------------------


@dataclass
class Entry:
    name: str
    size: int
    type: str  # file, directory, link, other (a FIFO, a socket, a device)
    modified: float


def _entry(path: str, info: os.stat_result) -> Entry:
    kind = kind_of(info.st_mode)
    kind = kind if kind in ("file", "directory", "link") else "other"
    return Entry(path, info.st_size if kind == "file" else 0, kind, info.st_mtime)


def listing(workspace: Path, path: str = ".") -> list[Entry]:
    """Entries (recursively) under ``path``, from their own status: a link is listed as
    a link, never followed; the VRE's own ``.vre`` is left out."""
    names = parts_of(path)
    refuse_reserved(names, path)
    fd = open_root(workspace)
    if not names:
        return _entries(Directory(fd, ""))
    parent = descend(fd, names[:-1])
    where = joined(names)
    try:
        try:
            info = os.stat(names[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            raise NotFound(f"{shown(path)} does not exist in the workspace") from None
        if not stat.S_ISDIR(info.st_mode):
            return [_entry(where, info)]
        directory = Directory(directory_at(parent, names[-1], where), where)
    finally:
        os.close(parent)
    return _entries(directory)


def _entries(directory: Directory) -> list[Entry]:
    """Uploads in progress (``Upload``'s temporary names) are no files yet: left out."""
    found = tree(directory)
    return [_entry(f.path, f.info) for f in found if not f.name.startswith(UPLOAD_PREFIX)]


def disk_usage(workspace: Path) -> int:
    """Bytes of the regular files in a workspace, its logs included (0 when it is gone)."""
    try:
        top = Directory(open_root(workspace), "")
    except NotFound:
        return 0
    return sum(f.info.st_size for f in _everything(top) if stat.S_ISREG(f.info.st_mode))


def _everything(top: Directory, *, strict: bool = False) -> Iterator[Found]:
    """Like ``tree`` with ``.vre`` included: what occupies the disk."""
    try:
        own: Directory | None = Directory(directory_at(top.fd, RESERVED, RESERVED), RESERVED)
    except VREError:
        own = None
    yield from tree(top, strict=strict)
    if own is not None:
        yield from tree(own, strict=strict)
