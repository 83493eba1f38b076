"""The storage module against real file:// and root:// (XRootD) storage."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import pytest

from tests.fixtures.xrootd import XRootD
from vre.errors import Invalid, StorageError
from vre.lake import storage


@pytest.fixture(params=["file", "root"])
def prefix(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return (tmp_path / "store").as_uri()
    server: XRootD = request.getfixturevalue("xrootd_server")
    return f"{server.url}/{tmp_path.name}"


def test_write_commit_read_delete(prefix: str) -> None:
    data = b"0123456789" * 100_000
    url = storage.join(prefix, "scope/ab/cd/file.bin")
    stored = storage.write_part(url, [data[:500_000], data[500_000:]], tag="t1")
    assert stored.bytes == len(data)
    assert stored.adler32 == f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"
    assert stored.md5 == hashlib.md5(data).hexdigest()
    assert not storage.exists(url)  # not under its real name until committed
    storage.commit_part(url, "t1")
    assert storage.exists(url)
    assert storage.size(url) == len(data)
    assert b"".join(storage.read(url, chunk_size=65536)) == data
    storage.delete(url)
    assert not storage.exists(url)
    storage.delete(url)  # already gone counts as deleted


def test_interrupted_write_leaves_nothing(prefix: str) -> None:
    url = storage.join(prefix, "scope/x/broken.bin")

    def chunks():
        yield b"a" * 1000
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        storage.write_part(url, chunks(), tag="t2")
    assert not storage.exists(storage.part_url(url, "t2"))
    assert not storage.exists(url)


def test_read_missing_file_is_storage_error(prefix: str) -> None:
    with pytest.raises(StorageError, match="missing"):
        b"".join(storage.read(storage.join(prefix, "nope/never.bin")))


@pytest.mark.parametrize("path", ["../etc/passwd", "a/../../b", "/abs", "a//b", "a/./b"])
def test_join_refuses_escapes(path: str) -> None:
    with pytest.raises(Invalid):
        storage.join("file:///srv/rse", path)


@pytest.mark.parametrize(
    "prefix", ["http://x/y", "file://host/path", "file:relative", "root://host/nodoubleslash", "s3"]
)
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(Invalid):
        storage.check_prefix(prefix)
