"""Workspaces: one directory per run, and paths from users that never leave it."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vre.errors import Invalid, NotFound

LOGS = ".vre/logs"  # step logs live here, inside the workspace, hidden from listings


def root(home: Path, account: str, run_label: str) -> Path:
    return home / "workspaces" / account / run_label


def resolve(workspace: Path, path: str) -> Path:
    """``path`` inside ``workspace``, refusing absolute paths, ``..`` and symlink escapes."""
    relative = PurePosixPath(path.strip() or ".")
    if relative.is_absolute() or ".." in relative.parts:
        raise Invalid(f"path {path!r} is outside the workspace")
    target = (workspace / relative).resolve()
    base = workspace.resolve()
    if target != base and base not in target.parents:
        raise Invalid(f"path {path!r} is outside the workspace")
    return target


def place(workspace: Path, path: str) -> Path:
    """Where to create ``path``: its directory must be inside; the name itself may be a
    link out (stage-in links lake files into the workspace)."""
    relative = PurePosixPath(path)
    parent = resolve(workspace, str(relative.parent))
    if relative.name in ("", ".", ".."):
        raise Invalid(f"path {path!r} names no file")
    return parent / relative.name


def prepare_target(workspace: Path, path: str) -> Path:
    """A fresh place for a new file at ``path``: its directories made inside the
    workspace, whatever was there under that name (a file, a link, a directory) gone.

    What is there is removed, never written through: a step may have left a link
    pointing out of the workspace under a name a new file is about to take.
    """
    resolve(workspace, str(PurePosixPath(path).parent)).mkdir(parents=True, exist_ok=True)
    target = place(workspace, path)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    return target


def write(workspace: Path, path: str, chunks: Iterator[bytes] | bytes) -> int:
    """Write a file a user uploads; an existing directory of that name is refused,
    not replaced (a user's upload must not wipe a directory)."""
    existing = resolve(workspace, path)
    if existing == workspace.resolve():
        raise Invalid("a file needs a name inside the workspace")
    if existing.is_dir():
        raise Invalid(f"{path!r} is a directory in the workspace")
    target = prepare_target(workspace, path)
    size = 0
    with open(target, "wb") as handle:
        for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
            handle.write(chunk)
            size += len(chunk)
    return size


@dataclass
class Entry:
    name: str
    size: int
    type: str
    modified: float


def listing(workspace: Path, path: str = ".") -> list[Entry]:
    """Files (recursively) under ``path`` with sizes; the VRE's own logs are left out."""
    start = resolve(workspace, path)
    if not start.exists():
        raise NotFound(f"{path!r} does not exist in the workspace")
    base = workspace.resolve()
    paths = [start] if start.is_file() else sorted(start.rglob("*"))
    out = []
    for item in paths:
        rel = item.relative_to(base).as_posix()
        if rel.startswith(".vre"):
            continue
        stat = item.lstat()
        kind = "directory" if item.is_dir() else "file"
        out.append(Entry(rel, stat.st_size if kind == "file" else 0, kind, stat.st_mtime))
    return out


def disk_usage(workspace: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(workspace):
        for name in files:
            total += (Path(dirpath) / name).lstat().st_size
    return total


def zip_directory(workspace: Path, path: str) -> bytes:
    directory = resolve(workspace, path)
    if not directory.is_dir():
        raise NotFound(f"{path!r} is not a directory in the workspace")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in sorted(directory.rglob("*")):
            if ".vre" in item.relative_to(workspace).parts[:1]:
                continue  # the VRE's own logs and tool caches
            if item.is_file() and not item.is_symlink():
                archive.write(item, item.relative_to(directory).as_posix())
    return buffer.getvalue()


def log_path(workspace: Path, index: int, step: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in step)
    return workspace / LOGS / f"{index:03d}-{safe}.log"
