"""Workspaces: one directory per run, and every way a file enters or leaves one.

A step writes what it likes into its workspace: links out of it, hard links to files it
could reach (the catalogue's database, another account's files), FIFOs, and renames that
race the server. Opening and closing a descriptor on the database's inode would drop the
server's SQLite locks, so nothing here opens a workspace path by name. Every path is
walked one name at a time from a directory descriptor with ``O_NOFOLLOW``; its last name
is looked at through an ``O_PATH`` descriptor, which opens nothing (closing it drops no
lock, a FIFO cannot block it); and only a regular file with one link that is none of the
server's own files is then opened, through that same descriptor (``/proc/self/fd``), so a
rename between the look and the open changes nothing; once open, it must still be that
name's inode with that one link (a hard link to a file outside, renamed in and away again,
leaves the outside file with one link). Links are listed as links and never followed:
stage-in's ``inputs/SCOPE/NAME`` links to the lake are read from the lake.

``.vre`` (the step logs, the steps' home) is the VRE's own: the workspace API neither
serves nor writes it; logs have their own route (``workspace_io.log_chunks``).
"""

from __future__ import annotations

import os
import shutil
import stat
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from vre.config import Settings, get_settings
from vre.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    QuotaExceeded,
    StorageError,
    shown,
)

RESERVED = ".vre"
MAX_DEPTH = 100  # directories below a workspace a walk holds open at once
UPLOAD_PREFIX = ".vre-upload-"
Owned = frozenset[tuple[int, int]]

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LOOK = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def root(home: Path, account: str, run_label: str) -> Path:
    return home / "workspaces" / account / run_label


def create(home: Path, account: str, run_label: str) -> Path:
    """A run's directory, and its account's, 0700 whatever the umask: other users of the
    host see nothing of a workspace."""
    directory = root(home, account, run_label)
    (home / "workspaces").mkdir(mode=0o700, parents=True, exist_ok=True)
    for level in (home / "workspaces", directory.parent, directory):
        level.mkdir(mode=0o700, exist_ok=True)
        if level.is_symlink():
            raise Invalid(f"the workspace of {account}'s run {run_label} is a link")
        os.chmod(level, 0o700)
    return directory


# --- paths ---------------------------------------------------------------------------------


def parts_of(path: str) -> list[str]:
    """``path`` as names below the workspace. ``.``, empty names and ``..`` are resolved as
    text: no link is ever followed, so the text is what the walk will meet."""
    if "\x00" in path:
        raise Invalid("a workspace path cannot contain a NUL character")
    if path.startswith("/"):
        raise Invalid(f"path {shown(path)} is outside the workspace")
    names: list[str] = []
    for name in path.split("/") if path.strip() else []:
        if name in ("", "."):
            continue
        if name == "..":
            if not names:
                raise Invalid(f"path {shown(path)} is outside the workspace")
            names.pop()
        else:
            names.append(name)
    return names


def refuse_reserved(names: list[str], path: str) -> None:
    if names and names[0].lower() == RESERVED:
        raise Forbidden(
            f"{shown(path)} is in .vre, the VRE's own directory, not the run's files:"
            " nothing there is served or written through the workspace; step logs are"
            " read with 'vre logs RUN' (GET /runs/RUN/logs)"
        )


def resolve(workspace: Path, path: str) -> Path:
    """``path`` inside ``workspace`` as a path for creating things (stage-in), refusing
    absolute paths, ``..`` and links out. Never use it to read a file: see ``open_entry``."""
    names = parts_of(path)
    target = workspace.joinpath(*names).resolve()
    base = workspace.resolve()
    if target != base and base not in target.parents:
        raise Invalid(f"path {shown(path)} is outside the workspace")
    return target


def place(workspace: Path, path: str) -> Path:
    """Where to create ``path``: its directory must be inside; the name itself may be a
    link out (stage-in links lake files into the workspace)."""
    names = parts_of(path)
    if not names:
        raise Invalid(f"path {shown(path)} names no file")
    return resolve(workspace, "/".join(names[:-1])) / names[-1]


def prepare_target(workspace: Path, path: str) -> Path:
    """A fresh place for a new file at ``path``: its directories made (0700) inside the
    workspace, whatever was there under that name (a file, a link, a directory) gone.

    What is there is removed, never written through: a step may have left a link
    pointing out of the workspace under a name a new file is about to take.
    """
    target = place(workspace, path)  # a directory that leads out: "outside the workspace"
    names = parts_of(path)
    os.close(make_directories(open_root(workspace), names[:-1], path))
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    return target


# --- the walk ------------------------------------------------------------------------------


def joined(names: list[str]) -> str:
    return "/".join(names) or "."


def open_root(workspace: Path) -> int:
    """The workspace's own directory, itself not a link (its parents are the server's)."""
    try:
        parent = os.open(workspace.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound("the run's workspace does not exist (any more)") from None
    try:
        return directory_at(parent, workspace.name, "the workspace")
    finally:
        os.close(parent)


def directory_at(fd: int, name: str, where: str) -> int:
    try:
        return os.open(name, _DIR, dir_fd=fd)
    except FileNotFoundError:
        raise NotFound(f"{shown(where)} does not exist in the workspace") from None
    except NotADirectoryError:  # a file, or a link (O_NOFOLLOW) where a directory was named
        link = os.path.islink(f"/proc/self/fd/{fd}/{name}")
        why = "is a link: links in a workspace are not followed" if link else "is not a directory"
        raise Invalid(f"{shown(where)} {why}") from None
    except OSError as exc:
        raise Invalid(f"{shown(where)} cannot be opened: {exc.strerror}") from None


def descend(fd: int, names: list[str]) -> int:
    """The directory ``names`` below ``fd`` (which this consumes), one name at a time."""
    for depth, name in enumerate(names):
        try:
            below = directory_at(fd, name, joined(names[: depth + 1]))
        finally:
            os.close(fd)
        fd = below
    return fd


def make_directories(fd: int, names: list[str], path: str) -> int:
    """Like ``descend``, creating missing directories 0700; a link is never gone through."""
    for depth, name in enumerate(names):
        try:
            made = True
            try:
                os.mkdir(name, 0o700, dir_fd=fd)
            except FileExistsError:
                made = False
            below = directory_at(fd, name, joined(names[: depth + 1]))
            if made:
                os.fchmod(below, 0o700)  # whatever the umask
        finally:
            os.close(fd)
        fd = below
    return fd


class _Handle:
    """A descriptor closed once, when asked or when dropped (a response never sent)."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd, self.name = fd, name
        self._closer = weakref.finalize(self, os.close, fd)

    def close(self) -> None:
        self._closer()

    def __enter__(self) -> _Handle:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Directory(_Handle):
    """An opened workspace directory; ``name`` is its path in the workspace ('' at the top)."""


class File(_Handle):
    """An opened regular workspace file with one link, none of the server's own."""

    def __init__(self, fd: int, name: str, info: os.stat_result) -> None:
        super().__init__(fd, name)
        self.size, self.mode, self.mtime = info.st_size, info.st_mode, info.st_mtime

    def __enter__(self) -> File:
        return self

    def chunks(self, block: int, limit: int | None = None) -> Iterator[bytes]:
        """The bytes it held when opened (or the first ``limit``), then it is closed:
        a file growing meanwhile never makes an answer longer than announced."""
        remaining = self.size if limit is None else min(self.size, limit)
        try:
            while remaining > 0:
                data = os.read(self.fd, min(block, remaining))
                if not data:
                    break
                remaining -= len(data)
                yield data
        finally:
            self.close()


def _refusal(info: os.stat_result, where: str, owned: Owned) -> str | None:
    """Why a file is not opened for reading, if it is not."""
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        return (
            f"{shown(where)} is a link: links in a workspace are not served (staged inputs"
            " link to the lake: download them from the lake)"
        )
    if not stat.S_ISREG(mode):
        return f"{shown(where)} is not a regular file ({kind_of(mode)}): only files are served"
    if info.st_nlink > 1:
        return (
            f"{shown(where)} has {info.st_nlink} hard links: only a file with one link is"
            " served (copy it rather than linking it)"
        )
    if (info.st_dev, info.st_ino) in owned:
        return f"{shown(where)} is one of the server's own files"
    return None


def open_at(fd: int, name: str, where: str, owned: Owned) -> File:
    """The primitive: ``name`` in the directory ``fd``, opened for reading only if it is
    a regular file with one link and none of ``owned``, checked on the descriptor."""
    try:
        look = os.open(name, _LOOK, dir_fd=fd)
    except FileNotFoundError:
        raise NotFound(f"{shown(where)} does not exist in the workspace") from None
    try:
        seen = os.fstat(look)
        why = _refusal(seen, where, owned)
        if why:
            raise Invalid(why)
        try:  # the very inode looked at, whatever its name points to by now
            opened = os.open(f"/proc/self/fd/{look}", _READ)
        except BlockingIOError:  # a lease: O_NONBLOCK refuses to wait for its holder
            raise Conflict(f"{shown(where)} is held by another process: try again") from None
        except FileNotFoundError:
            raise StorageError(
                "this server cannot open workspace files: /proc is missing"
            ) from None
    finally:
        os.close(look)
    info = os.fstat(opened)
    if not _still_there(info, fd, name, seen, owned):
        os.close(opened)
        raise Conflict(f"{shown(where)} changed while it was opened: try again")
    os.set_blocking(opened, True)
    return File(opened, where, info)


def _still_there(
    info: os.stat_result, fd: int, name: str, seen: os.stat_result, owned: Owned
) -> bool:
    """Whether the opened inode is, at one instant, the one looked at, with its one link
    at ``name``: a hard link to a file outside, renamed in and away again between the
    look and now, leaves that file with one link, but not here."""
    try:
        here = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return False
    same = (here.st_dev, here.st_ino) == (seen.st_dev, seen.st_ino)
    same = same and (info.st_dev, info.st_ino) == (seen.st_dev, seen.st_ino)
    return same and here.st_nlink == 1 and _refusal(info, name, owned) is None


def open_entry(
    workspace: Path, path: str, owned: Owned, *, internal: bool = False
) -> File | Directory:
    """A workspace file (see ``open_at``) or directory, for reading; ``.vre`` only when
    ``internal`` (the VRE reading its own logs)."""
    names = parts_of(path)
    if not internal:
        refuse_reserved(names, path)
    fd = open_root(workspace)
    if not names:
        return Directory(fd, "")
    parent = descend(fd, names[:-1])
    where = joined(names)
    try:
        try:
            info = os.stat(names[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            raise NotFound(f"{shown(where)} does not exist in the workspace") from None
        if stat.S_ISDIR(info.st_mode):
            return Directory(directory_at(parent, names[-1], where), where)
        return open_at(parent, names[-1], where, owned)
    finally:
        os.close(parent)


def open_file(workspace: Path, path: str, owned: Owned) -> File:
    """A workspace file for reading (stage-out, a download), never a directory."""
    opened = open_entry(workspace, path, owned)
    if isinstance(opened, Directory):
        opened.close()
        raise Invalid(f"{shown(joined(parts_of(path)))} is a directory, not a file")
    return opened


def server_files(settings: Settings) -> Owned:
    """(device, inode) of the files the server keeps: the SQLite catalogue and its
    -wal/-shm/-journal, the root password, keys and configuration in VRE_HOME (and one
    level below), every file a setting names. A hard link to one has several links and is
    refused anyway; this also catches the file itself (moved or bound into a workspace)."""
    home = settings.home
    paths: list[Path] = []
    for entry in _scan(home):
        if entry.is_dir(follow_symlinks=False):
            if entry.name != "workspaces":
                paths += [Path(e.path) for e in _scan(Path(entry.path))]
        else:
            paths.append(Path(entry.path))
    url = make_url(settings.resolved_database_url())
    if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:"):
        paths += [Path(url.database + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    paths += [v for v in settings.model_dump().values() if isinstance(v, Path)]
    found = set()
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            found.add((info.st_dev, info.st_ino))
    return frozenset(found)


def _scan(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except OSError:
        return []


# --- trees: listings, usage --------------------------------------------------------------


@dataclass
class Found:
    """One entry met by ``tree``; ``fd`` is its directory, open while it is looked at."""

    path: str
    name: str
    info: os.stat_result
    fd: int


def tree(directory: Directory, *, strict: bool = True, _depth: int = 0) -> Iterator[Found]:
    """Every entry below ``directory`` (consumed), sorted, depth first, never through a
    link; the top's ``.vre`` left out. Too deep a tree raises when ``strict``, is cut
    short otherwise (a size shown in a status)."""
    fd, prefix = directory.fd, directory.name + "/" if directory.name else ""
    try:
        with os.scandir(fd) as found:
            entries = sorted(_statuses(found))
        for name, info in entries:
            if not prefix and name.lower() == RESERVED:
                continue
            yield Found(prefix + name, name, info, fd)
            if not stat.S_ISDIR(info.st_mode):
                continue
            if _depth >= MAX_DEPTH:
                if strict:
                    raise Invalid(
                        f"{shown(prefix + name)} is nested deeper than {MAX_DEPTH} directories"
                    )
                continue
            try:
                below = os.open(name, _DIR, dir_fd=fd)
            except OSError:
                continue  # gone, or a link by now: never followed
            yield from tree(Directory(below, prefix + name), strict=strict, _depth=_depth + 1)
    finally:
        directory.close()


def _statuses(found: Iterator[os.DirEntry[str]]) -> Iterator[tuple[str, os.stat_result]]:
    for entry in found:
        try:
            yield entry.name, entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # gone since the directory was read


def kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "link"
    return "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"


# --- quota ---------------------------------------------------------------------------------


def usage(home: Path, account: str) -> int:
    """Bytes the workspaces of ``account`` take on disk: allocated blocks (a sparse file
    counts what it occupies), a file with several links once, links not followed."""
    try:
        fd = os.open(home / "workspaces" / account, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    total, linked = 0, set()
    for found in tree(Directory(fd, "")):
        info = found.info
        if stat.S_ISLNK(info.st_mode):
            continue
        if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in linked:
                continue
            linked.add((info.st_dev, info.st_ino))
        total += info.st_blocks * 512
    return total


def room(home: Path, account: str, quota: int | None = None) -> int | None:
    """Bytes the workspaces of ``account`` may still take (None: no quota)."""
    limit = get_settings().workspace_quota if quota is None else quota
    if not limit:
        return None
    return limit - usage(home, account)


def require_space(home: Path, account: str, adding: int, *, quota: int | None = None) -> None:
    """Refuse (QuotaExceeded) when the workspaces of ``account`` plus ``adding`` bytes pass
    the quota (VRE_WORKSPACE_QUOTA unless ``quota``); ``adding=0`` checks what is there."""
    limit = get_settings().workspace_quota if quota is None else quota
    if not limit:
        return
    used = usage(home, account)
    if used + adding > limit:
        more = f" and {adding} more bytes were asked for" if adding else ""
        raise QuotaExceeded(
            f"the workspaces of {account} would pass their quota of {limit} bytes"
            f" (VRE_WORKSPACE_QUOTA): they take {used} bytes{more}; delete workspaces you no"
            " longer need ('vre delete RUN --workspace')"
        )


def write(
    workspace: Path, path: str, chunks: Iterable[bytes] | bytes, *, room: int | None = None
) -> int:
    """Write a whole file a user uploads (``workspace_io.Upload``); returns its size."""
    from vre.workflows import workspace_io

    return workspace_io.write(workspace, path, chunks, room=room)
