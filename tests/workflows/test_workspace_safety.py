"""Every way a file leaves or enters a workspace, against what a step can plant there:
hard links to the server's database, links out, FIFOs, setuid files, renames that race.

The attacks run against the real functions the server and worker use (the API and
stage-out call nothing else); ``tests/integration/test_workspace_attacks.py`` repeats
them through a real ``vre serve`` and ``vre worker``.
"""

from __future__ import annotations

import io
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vre.config import Settings
from vre.errors import Conflict, Forbidden, Invalid, NotFound, QuotaExceeded, VREError
from vre.workflows import run_logs, workspace, workspace_io


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "root-password").write_text("the root password\n")
    (home / "keys").mkdir()
    (home / "keys" / "secrets.key").write_bytes(b"k" * 32)
    return home


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings(home=home)


@pytest.fixture
def ws(home: Path) -> Path:
    ws = workspace.create(home, "mallory", "attack.1")
    (ws / "results").mkdir()
    (ws / "results" / "ok.txt").write_bytes(b"mine\n")
    return ws


def _locked(db: Path) -> bool:
    """Whether another process finds the database's write lock taken."""
    probe = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
        "try:\n    c.execute('BEGIN IMMEDIATE')\nexcept sqlite3.OperationalError:\n"
        "    print('locked')\nelse:\n    print('free')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(db)], capture_output=True, text=True)
    return done.stdout.strip() == "locked"


def _drain(chunks: Iterator[bytes]) -> bytes:
    return b"".join(chunks)


def test_a_hard_link_to_the_database_never_costs_the_server_its_locks(
    ws: Path, home: Path, settings: Settings
) -> None:
    db = home / "vre.db"
    connection = sqlite3.connect(db, isolation_level=None)
    connection.execute("CREATE TABLE t (x)")
    connection.execute("BEGIN IMMEDIATE")  # this process holds the write lock, as a server
    connection.execute("INSERT INTO t VALUES (1)")
    assert _locked(db)
    os.link(db, ws / "results" / "db")
    os.symlink(db, ws / "results" / "db-link")
    os.link(db, run_logs.make_logs(ws) / run_logs.log_name(0, "step"))
    owned = workspace.server_files(settings)
    for path in ("results/db", "results/db-link"):
        with pytest.raises(Invalid, match=r"hard links|is a link"):
            workspace.open_entry(ws, path, owned)
        with pytest.raises(Invalid):
            workspace.open_file(ws, path, owned)
    archive = _drain(workspace_io.zip_chunks(workspace.open_entry(ws, "results", owned), owned, 64))
    entries = zipfile.ZipFile(io.BytesIO(archive)).namelist()
    assert sorted(entries) == [workspace_io.SKIPPED, "ok.txt"]
    logs = _drain(
        workspace_io.log_chunks(
            ws, [(0, "step", "running")], label="attack.1", limit=None, owned=owned, block=64
        )
    )
    assert b"log not shown" in logs and b"SQLite" not in logs
    kinds = {e.name: e.type for e in workspace_io.listing(ws)}
    assert kinds["results/db"] == "file" and kinds["results/db-link"] == "link"
    assert workspace_io.disk_usage(ws) > 0 and workspace.usage(home, "mallory") > 0
    assert _locked(db), "a read of the workspace dropped the server's lock"
    connection.execute("COMMIT")
    # The control: what the server did before (open by name, close) drops the lock.
    connection.execute("BEGIN IMMEDIATE")
    assert _locked(db)
    open(ws / "results" / "db", "rb").close()
    assert not _locked(db)


def test_the_servers_own_files_are_known_and_refused(home: Path, settings: Settings) -> None:
    sqlite3.connect(home / "vre.db").execute("PRAGMA journal_mode=WAL").fetchall()
    owned = workspace.server_files(settings)
    for name in ("vre.db", "root-password", "keys/secrets.key"):
        info = (home / name).stat()
        assert (info.st_dev, info.st_ino) in owned, name
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:  # the file itself, one link (bound or moved into a workspace): still refused
        with pytest.raises(Invalid, match="one of the server's own files"):
            workspace.open_at(fd, "root-password", "pw", owned)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "path", [".vre/logs/000-x.log", "./.vre/x", "a/../.vre/x", ".VRE/x", "x//..//.vre", ".vre"]
)
def test_the_vres_own_directory_is_not_a_workspace_file(ws: Path, path: str) -> None:
    (ws / ".vre" / "logs").mkdir(parents=True)
    log = ws / ".vre" / "logs" / "000-x.log"
    log.write_text("the real log\n")
    with pytest.raises(Forbidden, match="the VRE's own directory"):
        workspace.write(ws, path, b"forged")
    with pytest.raises(Forbidden):
        workspace.open_entry(ws, path, frozenset())
    with pytest.raises(Forbidden):
        workspace_io.listing(ws, path)
    assert log.read_text() == "the real log\n"
    assert not any(name.lower() == ".vre" for name in (e.name for e in workspace_io.listing(ws)))


def test_a_fifo_blocks_nothing(ws: Path) -> None:
    os.mkfifo(ws / "results" / "pipe")
    outcome: list[object] = []

    def attempt() -> None:
        try:
            workspace.open_entry(ws, "results/pipe", frozenset())
        except VREError as exc:
            outcome.append(exc)
        directory = workspace.open_entry(ws, "results", frozenset())
        assert isinstance(directory, workspace.Directory)
        outcome.append(_drain(workspace_io.zip_chunks(directory, frozenset(), 64)))

    reader = threading.Thread(target=attempt, daemon=True)
    reader.start()
    reader.join(60)  # a FIFO opened for reading would wait for a writer forever
    assert not reader.is_alive()
    refused, archive = outcome
    assert isinstance(refused, Invalid) and "not a regular file (FIFO)" in refused.message
    assert isinstance(archive, bytes)
    assert "ok.txt" in zipfile.ZipFile(io.BytesIO(archive)).namelist()
    assert {e.name: e.type for e in workspace_io.listing(ws)}["results/pipe"] == "other"


def test_swapping_a_file_for_a_link_during_reads_never_serves_the_secret(
    ws: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"THE SECRET\n")
    target, spare = ws / "results" / "x", ws / "results" / ".spare"
    target.write_bytes(b"public\n")
    stop = threading.Event()

    def flip() -> None:  # regular file, link out, hard link out: each renamed into place
        while not stop.is_set():
            for make in (
                lambda: spare.write_bytes(b"public\n"),
                lambda: spare.symlink_to(secret),
                lambda: os.link(secret, spare),
            ):
                spare.unlink(missing_ok=True)
                make()
                os.replace(spare, target)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    served = refused = 0
    try:
        for _ in range(5000):
            try:
                opened = workspace.open_file(ws, "results/x", frozenset())
            except (Invalid, NotFound, Conflict):
                refused += 1
                continue
            assert _drain(opened.chunks(64)) == b"public\n"
            served += 1
    finally:
        stop.set()
        flipper.join()
    assert served + refused == 5000


def test_links_are_listed_as_links_and_never_gone_through(ws: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "theirs.txt").write_text("not yours\n")
    (ws / "results" / "elsewhere").symlink_to(outside)
    listed = {e.name: e for e in workspace_io.listing(ws)}
    assert listed["results/elsewhere"].type == "link" and listed["results/elsewhere"].size == 0
    assert not any("theirs" in name for name in listed)
    with pytest.raises(Invalid, match="is a link"):
        workspace_io.listing(ws, "results/elsewhere/theirs.txt")
    with pytest.raises(Invalid, match="is a link"):
        workspace.open_entry(ws, "results/elsewhere/theirs.txt", frozenset())
    with pytest.raises(Invalid, match="is a link"):
        workspace.write(ws, "results/elsewhere/new.txt", b"planted")
    assert sorted(p.name for p in outside.iterdir()) == ["theirs.txt"]


def test_an_upload_replaces_a_link_and_never_writes_through_it(ws: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("intact\n")
    (ws / "code").mkdir()
    (ws / "code" / "run.sh").symlink_to(victim)
    assert workspace.write(ws, "code/run.sh", [b"echo ", b"mine\n"]) == len(b"echo mine\n")
    assert victim.read_text() == "intact\n"
    assert not (ws / "code" / "run.sh").is_symlink()
    assert (ws / "code" / "run.sh").read_bytes() == b"echo mine\n"
    (ws / "data").mkdir()
    with pytest.raises(Invalid, match="is a directory"):
        workspace.write(ws, "data", b"x")


def test_workspaces_and_uploads_are_private_whatever_the_umask(home: Path) -> None:
    previous = os.umask(0)
    try:
        ws = workspace.create(home, "alice", "open.1")
        workspace.write(ws, "deep/er/file.txt", b"private")
        (ws / "inputs").mkdir()
        workspace.prepare_target(ws, "inputs/scope/name")
    finally:
        os.umask(previous)
    for directory in (home / "workspaces", ws.parent, ws, ws / "deep", ws / "deep" / "er"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert stat.S_IMODE((ws / "inputs" / "scope").stat().st_mode) == 0o700
    assert stat.S_IMODE((ws / "deep/er/file.txt").stat().st_mode) == 0o600


def test_zip_entries_never_carry_setuid_setgid_or_sticky_bits(ws: Path) -> None:
    modes = {"suid": 0o4755, "sgid": 0o2750, "sticky": 0o1644, "plain": 0o600, "tool": 0o700}
    for name, mode in modes.items():
        (ws / "results" / name).write_bytes(name.encode())
        os.chmod(ws / "results" / name, mode)
    directory = workspace.open_entry(ws, "results", frozenset())
    assert isinstance(directory, workspace.Directory)
    archive = zipfile.ZipFile(
        io.BytesIO(_drain(workspace_io.zip_chunks(directory, frozenset(), 64)))
    )
    got = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
    assert got == {
        "ok.txt": stat.S_IFREG | 0o644,
        "suid": stat.S_IFREG | 0o755,
        "sgid": stat.S_IFREG | 0o755,
        "sticky": stat.S_IFREG | 0o644,
        "plain": stat.S_IFREG | 0o644,
        "tool": stat.S_IFREG | 0o755,
    }
    assert archive.read("suid") == b"suid"


def test_a_zip_streams_in_blocks(ws: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    (ws / "results" / "big.bin").write_bytes(payload)
    directory = workspace.open_entry(ws, ".", frozenset())
    assert isinstance(directory, workspace.Directory)
    pieces = list(workspace_io.zip_chunks(directory, frozenset(), 256 * 1024))
    assert len(pieces) > 4 and max(len(p) for p in pieces) < 1024 * 1024
    archive = zipfile.ZipFile(io.BytesIO(b"".join(pieces)))
    assert archive.read("results/big.bin") == payload


def test_the_quota_refuses_an_upload_and_leaves_nothing(ws: Path, home: Path) -> None:
    quota = 1024 * 1024
    workspace.write(ws, "first.bin", b"a" * 600_000, room=workspace.room(home, "mallory", quota))
    with pytest.raises(QuotaExceeded, match="workspace quota"):
        workspace.write(
            ws, "second.bin", [b"b" * 300_000] * 2, room=workspace.room(home, "mallory", quota)
        )
    with pytest.raises(QuotaExceeded):  # a declared length that cannot fit: refused at once
        workspace_io.Upload(
            ws, "third.bin", room=workspace.room(home, "mallory", quota), expected=10**9
        )
    with pytest.raises(QuotaExceeded, match="would pass their quota"):
        workspace.require_space(home, "mallory", 600_000, quota=quota)
    workspace.require_space(home, "mallory", 0, quota=quota)
    workspace.require_space(home, "mallory", 10**12, quota=0)  # 0: no quota
    assert workspace.room(home, "mallory", 0) is None
    left = sorted(p.name for p in ws.iterdir())
    assert left == ["first.bin", "results"]  # no second.bin, no half-written upload
    # Replacing a file counts the space it frees.
    room = workspace.room(home, "mallory", quota)
    assert workspace.write(ws, "first.bin", b"c" * 600_000, room=room) == 600_000


def test_a_failed_upload_keeps_the_file_it_would_have_replaced(ws: Path) -> None:
    workspace.write(ws, "code/run.sh", b"echo old\n")

    def cut_short() -> Iterator[bytes]:
        yield b"echo ne"
        raise ConnectionError("the client went away")

    with pytest.raises(ConnectionError):
        workspace.write(ws, "code/run.sh", cut_short())
    assert (ws / "code/run.sh").read_bytes() == b"echo old\n"
    assert sorted(p.name for p in (ws / "code").iterdir()) == ["run.sh"]


def test_logs_are_cut_at_the_limit_with_a_note(ws: Path) -> None:
    logs = run_logs.make_logs(ws)
    (logs / run_logs.log_name(0, "fit")).write_bytes(b"x" * 1000)
    (logs / run_logs.log_name(1, "plot it")).write_bytes(b"short\n")
    steps = [(0, "fit", "finished"), (1, "plot it", "finished"), (2, "never", "created")]

    def read(limit: int | None) -> str:
        chunks = workspace_io.log_chunks(
            ws, steps, label="attack.1", limit=limit, owned=frozenset(), block=7
        )
        return _drain(chunks).decode()

    cut = read(100)
    assert cut.startswith("==> step fit (finished)\n" + "x" * 100 + "\n[vre] log truncated at")
    assert "vre logs attack.1 --step fit --full" in cut and "step=fit&full=true" in cut
    assert cut.endswith("\n==> step plot it (finished)\nshort\n") and "never" not in cut
    assert read(None).count("x") == 1000 and "truncated" not in read(None)


def test_paths_out_of_the_workspace_are_refused(ws: Path) -> None:
    for path in ("../x", "/etc/passwd", "a/../../b", "x\x00y"):
        with pytest.raises(Invalid):
            workspace.open_entry(ws, path, frozenset())
        with pytest.raises(Invalid):
            workspace.write(ws, path, b"x")
    with pytest.raises(NotFound):
        workspace.open_entry(ws, "results/missing", frozenset())
