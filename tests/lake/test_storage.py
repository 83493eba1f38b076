"""The storage module against real storage: file://, XRootD, WebDAV (nginx) and S3 (rclone)."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.s3 import S3
from tests.fixtures.webdav import WebDAV
from tests.fixtures.xrootd import XRootD
from vre.errors import Invalid, StorageError
from vre.lake import storage

Prefix = tuple[str, dict[str, Any]]


@pytest.fixture(params=["file", "root", "webdav", "s3"])
def prefix(request: pytest.FixtureRequest, tmp_path: Path) -> Prefix:
    """(URL prefix, RSE options) of a fresh area on each kind of storage."""
    if request.param == "file":
        return (tmp_path / "store").as_uri(), {}
    if request.param == "root":
        xrootd: XRootD = request.getfixturevalue("xrootd_server")
        return f"{xrootd.url}/{tmp_path.name}", {}
    if request.param == "webdav":
        webdav: WebDAV = request.getfixturevalue("webdav_server")
        return f"{webdav.tls_url}/{tmp_path.name}", {"verify": webdav.ca}
    s3: S3 = request.getfixturevalue("s3_server")
    return f"{s3.url}/{tmp_path.name}", s3.options


def test_write_commit_read_delete(prefix: Prefix) -> None:
    base, options = prefix
    data = b"0123456789" * 100_000
    url = storage.join(base, "scope/ab/cd/file.bin")
    stored = storage.write_part(url, [data[:500_000], data[500_000:]], tag="t1", options=options)
    assert stored.bytes == len(data)
    assert stored.adler32 == f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"
    assert stored.md5 == hashlib.md5(data).hexdigest()
    assert not storage.exists(url, options=options)  # not under its real name until committed
    assert storage.exists(storage.part_url(url, "t1"), options=options)
    storage.commit_part(url, "t1", options=options)
    assert storage.exists(url, options=options)
    assert not storage.exists(storage.part_url(url, "t1"), options=options)
    assert storage.size(url, options=options) == len(data)
    assert b"".join(storage.read(url, block_size=65536, options=options)) == data
    storage.delete(url, options=options)
    assert not storage.exists(url, options=options)
    storage.delete(url, options=options)  # already gone counts as deleted


def test_commit_replaces_and_discard(prefix: Prefix) -> None:
    base, options = prefix
    url = storage.join(base, "scope/again.bin")
    for tag, data in (("a", b"first"), ("b", b"second version")):
        storage.write_part(url, [data], tag=tag, options=options)
        storage.commit_part(url, tag, options=options)
    assert b"".join(storage.read(url, options=options)) == b"second version"
    storage.write_part(url, [b"never"], tag="c", options=options)
    storage.discard_part(url, "c", options=options)
    assert not storage.exists(storage.part_url(url, "c"), options=options)
    storage.discard_part(url, "c", options=options)  # nothing left to discard is fine
    with pytest.raises(StorageError, match="moving"):
        storage.commit_part(url, "c", options=options)  # its part is gone
    assert b"".join(storage.read(url, options=options)) == b"second version"
    storage.write_part(storage.join(base, "scope/empty.bin"), [], tag="e", options=options)
    storage.commit_part(storage.join(base, "scope/empty.bin"), "e", options=options)
    assert storage.size(storage.join(base, "scope/empty.bin"), options=options) == 0


def test_interrupted_write_leaves_nothing(prefix: Prefix) -> None:
    base, options = prefix
    url = storage.join(base, "scope/x/broken.bin")

    def chunks():
        yield b"a" * 1000
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        storage.write_part(url, chunks(), tag="t2", options=options)
    assert not storage.exists(storage.part_url(url, "t2"), options=options)
    assert not storage.exists(url, options=options)


def test_read_missing_file_is_storage_error(prefix: Prefix) -> None:
    base, options = prefix
    with pytest.raises(StorageError, match="missing"):
        b"".join(storage.read(storage.join(base, "nope/never.bin"), options=options))


def test_filesystems_are_cached_per_host_and_options(s3_server: S3) -> None:
    options = s3_server.options
    first, path = storage.filesystem("s3://vre-test/a/b.bin", options=options)
    assert path == "vre-test/a/b.bin"
    assert storage.filesystem("s3://vre-test/c", options=dict(options))[0] is first
    other = storage.filesystem("s3://vre-test/c", options={**options, "region": "eu-1"})[0]
    assert other is not first


def test_webdav_plain_http_and_dav_are_the_same_server(webdav_server: WebDAV) -> None:
    dav = storage.join(webdav_server.url, "plain/f.txt")
    http = dav.replace("dav://", "http://", 1)
    storage.write_part(dav, [b"hello"], tag="p")
    storage.commit_part(dav, "p")
    assert webdav_server.local("plain/f.txt").read_bytes() == b"hello"
    assert b"".join(storage.read(http)) == b"hello"
    storage.delete(http)
    assert not storage.exists(dav)


def test_webdav_tls_needs_a_trusted_certificate(webdav_server: WebDAV) -> None:
    url = storage.join(webdav_server.tls_url, "tls/f.txt")
    with pytest.raises(StorageError, match="writing"):
        storage.write_part(url, [b"x"], tag="v")  # self-signed: not trusted by default
    storage.write_part(url, [b"x"], tag="v", options={"verify": "false"})
    storage.commit_part(url, "v", options={"verify": "false"})
    assert webdav_server.local("tls/f.txt").read_bytes() == b"x"


def test_s3_wrong_credentials_are_storage_errors(s3_server: S3) -> None:
    options = {**s3_server.options, "secret": "wrong"}
    url = storage.join(s3_server.url, "denied/f.bin")
    with pytest.raises(StorageError):
        storage.write_part(url, [b"x"], tag="w", options=options)
    with pytest.raises(StorageError):
        b"".join(storage.read(url, options=options))
    with pytest.raises(StorageError, match="writing"):  # no such bucket
        storage.write_part("s3://no-such-bucket/f.bin", [b"x"], tag="w", options=s3_server.options)
    assert not s3_server.local("denied/f.bin").exists()


@pytest.mark.parametrize("path", ["../etc/passwd", "a/../../b", "/abs", "a//b", "a/./b"])
def test_join_refuses_escapes(path: str) -> None:
    with pytest.raises(Invalid):
        storage.join("file:///srv/rse", path)


@pytest.mark.parametrize(
    "prefix",
    [
        "ftp://x/y",
        "file://host/path",
        "file:relative",
        "root://host/nodoubleslash",
        "s3",
        "s3:///no-bucket",
        "s3://Upper_Case/x",
        "s3://ab",
        "s3://bucket:9000/x",
        "s3://key:secret@bucket/x",
        "s3://bucket/x?versionId=1",
        "davs:///no-host",
        "https://user:password@host/x",
        "http://host:notaport/x",
        "dav://host/x#fragment",
    ],
)
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(Invalid):
        storage.check_prefix(prefix)


@pytest.mark.parametrize(
    ("prefix", "normal"),
    [
        ("davs://dav.example.org:2880/data/", "davs://dav.example.org:2880/data"),
        ("https://dav.example.org", "https://dav.example.org"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("dav://[::1]:8080/x", "dav://[::1]:8080/x"),
        ("s3://my.bucket-1/some/path/", "s3://my.bucket-1/some/path"),
        ("s3://bucket", "s3://bucket"),
    ],
)
def test_good_prefixes(prefix: str, normal: str) -> None:
    assert storage.check_prefix(prefix) == normal


def test_check_options() -> None:
    s3 = {"endpoint_url": "http://127.0.0.1:9000", "key": "k", "secret": "s", "region": "x"}
    assert storage.check_options("s3://bucket", s3) == s3
    assert storage.check_options("davs://h/x", {"verify": False, "timeout": 5}) == {
        "verify": "false",
        "timeout": "5",
    }
    assert storage.check_options("file:///x", None) == {}
    for prefix, bad in (
        ("file:///x", {"key": "k"}),
        ("root://h//x", {"verify": "false"}),
        ("s3://bucket", {"endpoint": "http://x"}),  # a typo is caught, not ignored
        ("s3://bucket", {"endpoint_url": "minio:9000"}),
        ("s3://bucket", {"addressing_style": "sideways"}),
        ("s3://bucket", {"key": ""}),
        ("s3://bucket", {"key": ["k"]}),
        ("davs://h/x", {"username": "u"}),  # without its password
        ("davs://h/x", {"timeout": "soon"}),
        ("davs://h/x", {"timeout": "-1"}),
    ):
        with pytest.raises(Invalid):
            storage.check_options(prefix, bad)


def test_copy_verified_takes_the_first_source_that_matches(prefix: Prefix, tmp_path: Path) -> None:
    base, options = prefix
    data = b"the catalogue's bytes" * 1000
    good, corrupt = tmp_path / "good.bin", tmp_path / "corrupt.bin"
    good.write_bytes(data)
    corrupt.write_bytes(b"X" + data[1:])
    sources = [
        storage.Source("GONE", (tmp_path / "gone.bin").as_uri()),
        storage.Source("CORRUPT", corrupt.as_uri()),
        storage.Source("GOOD", good.as_uri()),
    ]
    url = storage.join(base, "scope/copied.bin")
    adler32 = f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"
    copied = storage.copy_verified(
        sources, url, tag="c1", options=options, expected_bytes=len(data), expected_adler32=adler32
    )
    assert copied.source is sources[2] and copied.stored is not None
    assert copied.stored.adler32 == adler32 and copied.stored.bytes == len(data)
    assert copied.mismatched == [sources[1]]  # read fine, wrong bytes: a bad replica
    assert copied.errors[0].startswith("from GONE:") and "missing" in copied.errors[0]
    assert copied.errors[1].startswith("checksum mismatch on CORRUPT")
    assert b"".join(storage.read(url, options=options)) == data
    assert not storage.exists(storage.part_url(url, "c1"), options=options)


def test_copy_verified_leaves_nothing_when_no_source_matches(tmp_path: Path) -> None:
    source = tmp_path / "short.bin"
    source.write_bytes(b"short")
    url = storage.join((tmp_path / "store").as_uri(), "scope/never.bin")
    copied = storage.copy_verified(
        [storage.Source("A", source.as_uri())], url, tag="c2", expected_bytes=6
    )
    assert copied.source is None and len(copied.mismatched) == 1
    assert copied.errors == ["size mismatch on A: 5 bytes, catalogue says 6"]
    assert not storage.exists(url) and not storage.exists(storage.part_url(url, "c2"))
    unchecked = storage.copy_verified([storage.Source("A", source.as_uri())], url, tag="c3")
    assert unchecked.source is not None  # None skips a check
    assert b"".join(storage.read(url)) == b"short"
