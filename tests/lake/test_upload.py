"""Uploads to file:// and root:// storage: bytes, catalogue, and nothing half-written."""

from __future__ import annotations

import hashlib
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.xrootd import XRootD
from vre.db import transaction
from vre.errors import Conflict, Forbidden, Invalid
from vre.identity.models import Account
from vre.lake import catalogue, meta, replicas, rses, scopes, storage
from vre.lake.models import DID, Attachment, PendingUpload, Replica
from vre.lake.names import deterministic_path
from vre.lake.upload import upload

S = "user.alice"


@dataclass
class Store:
    name: str
    prefix: str
    directory: Path  # where the RSE's files are on this host's disk

    def url(self, name: str, scope: str = S) -> str:
        return storage.join(self.prefix, deterministic_path(scope, name))

    def local(self, name: str, scope: str = S) -> Path:
        return self.directory / deterministic_path(scope, name)

    def files(self) -> list[str]:
        """Every file under the RSE, .vre-part-* leftovers included."""
        if not self.directory.exists():
            return []
        return sorted(
            str(p.relative_to(self.directory)) for p in self.directory.rglob("*") if not p.is_dir()
        )


@pytest.fixture(params=["file", "root"])
def store(
    request: pytest.FixtureRequest,
    sessions: sessionmaker[Session],
    root: Account,
    local_rse: Path,
) -> Store:
    if request.param == "file":
        return Store("LOCAL-DISK", local_rse.as_uri(), local_rse)
    server: XRootD = request.getfixturevalue("xrootd_server")
    sub = f"rse-{uuid.uuid4().hex[:12]}"
    with transaction(sessions) as session:
        rse = rses.add(session, root, "XRD-DISK", f"{server.url}/{sub}", {"type": "disk"})
        prefix = rse.prefix
    return Store("XRD-DISK", prefix, server.local(sub))


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def chunked(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def table_counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with transaction(sessions) as session:
        return {
            m.__tablename__: session.scalar(select(func.count()).select_from(m)) or 0
            for m in (DID, Replica, Attachment, PendingUpload)
        }


DATA = bytes(range(256)) * 4000 + b"tail"  # about 1 MB, several chunks


def test_upload_lands_at_deterministic_path(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, store: Store
) -> None:
    result = upload(
        sessions,
        alice,
        S,
        "dir/data.bin",
        store.name,
        chunked(DATA),
        meta_values={"run": 7},
        adler32=adler(DATA).upper(),
        md5=hashlib.md5(DATA).hexdigest(),
    )
    assert result.created is True
    assert (result.scope, result.name, result.rse, result.bytes) == (
        S,
        "dir/data.bin",
        store.name,
        len(DATA),
    )
    assert result.adler32 == adler(DATA)
    assert result.md5 == hashlib.md5(DATA).hexdigest()
    assert result.url == store.url("dir/data.bin")
    assert result.url.startswith(store.prefix + "/" + S + "/")
    assert storage.exists(result.url)
    assert b"".join(storage.read(result.url)) == DATA
    assert store.local("dir/data.bin").read_bytes() == DATA
    assert store.files() == [deterministic_path(S, "dir/data.bin")]  # no .vre-part left
    with transaction(sessions) as session:
        did = catalogue.get(session, S, "dir/data.bin")
        assert (did.type, did.bytes, did.adler32, did.md5) == (
            "file",
            len(DATA),
            adler(DATA),
            hashlib.md5(DATA).hexdigest(),
        )
        assert meta.get_all(session, did.id) == {"run": 7}
        [listed] = replicas.list_for(session, alice, [(S, "dir/data.bin")])
        assert [(r.rse, r.state, r.url) for r in listed.replicas] == [
            (store.name, "available", result.url)
        ]
    assert table_counts(sessions) == {
        "dids": 1,
        "replicas": 1,
        "attachments": 0,
        "pending_uploads": 0,
    }

    # the same content again: nothing new, the stored bytes untouched
    again = upload(sessions, alice, S, "dir/data.bin", store.name, chunked(DATA, 1000))
    assert again.created is False
    assert (again.adler32, again.url) == (adler(DATA), result.url)
    assert store.files() == [deterministic_path(S, "dir/data.bin")]
    assert table_counts(sessions)["pending_uploads"] == 0
    assert table_counts(sessions)["replicas"] == 1


def test_empty_file(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, local_rse: Path
) -> None:
    result = upload(sessions, alice, S, "empty", "LOCAL-DISK", iter([b"", b""]))
    assert (result.bytes, result.adler32) == (0, "00000001")
    assert result.md5 == hashlib.md5(b"").hexdigest()
    assert (local_rse / deterministic_path(S, "empty")).read_bytes() == b""


def assert_nothing_left(sessions: sessionmaker[Session], store: Store, name: str) -> None:
    assert table_counts(sessions) == {
        "dids": 0,
        "replicas": 0,
        "attachments": 0,
        "pending_uploads": 0,
    }
    assert store.files() == []
    assert not storage.exists(store.url(name))


def test_interrupted_upload_leaves_nothing(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, store: Store
) -> None:
    def broken() -> Iterator[bytes]:
        yield DATA[:300_000]
        yield DATA[300_000:600_000]
        raise ConnectionResetError("client went away")

    with pytest.raises(Exception, match="client went away"):
        upload(sessions, alice, S, "broken.bin", store.name, broken(), dataset=(S, "ds"))
    assert_nothing_left(sessions, store, "broken.bin")

    class Stop(Exception):
        pass

    def stopped() -> Iterator[bytes]:
        yield b"x" * 1000
        raise Stop

    with pytest.raises(Stop):
        upload(sessions, alice, S, "broken.bin", store.name, stopped())
    assert_nothing_left(sessions, store, "broken.bin")


def test_wrong_checksum_leaves_nothing(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, store: Store
) -> None:
    wrong = "0" * 8 if adler(DATA) != "0" * 8 else "1" * 8
    with pytest.raises(Invalid, match="checksum mismatch"):
        upload(sessions, alice, S, "bad.bin", store.name, chunked(DATA), adler32=wrong)
    assert_nothing_left(sessions, store, "bad.bin")
    with pytest.raises(Invalid, match="checksum mismatch"):
        upload(sessions, alice, S, "bad.bin", store.name, chunked(DATA), md5="0" * 32)
    assert_nothing_left(sessions, store, "bad.bin")
    for bad in ({"adler32": "nothex!!"}, {"md5": "short"}, {"meta_values": {"bad key": 1}}):
        with pytest.raises(Invalid):
            upload(sessions, alice, S, "bad.bin", store.name, chunked(DATA), **bad)  # type: ignore[arg-type]
    for name in ("../escape", "a/../b", "a//b", ""):
        with pytest.raises(Invalid):
            upload(sessions, alice, S, name, store.name, chunked(DATA))
    assert_nothing_left(sessions, store, "bad.bin")


def test_other_content_under_same_name_is_conflict(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, store: Store
) -> None:
    original = b"original bytes" * 1000
    upload(sessions, alice, S, "f.bin", store.name, [original])
    before = table_counts(sessions)
    for other in (b"other bytes" * 1000, original + b"!", original[:-1] + b"X"):
        with pytest.raises(Conflict):
            upload(sessions, alice, S, "f.bin", store.name, chunked(other, 4096))
        assert table_counts(sessions) == before
        assert store.local("f.bin").read_bytes() == original
        assert b"".join(storage.read(store.url("f.bin"))) == original
        assert store.files() == [deterministic_path(S, "f.bin")]
    with transaction(sessions) as session:
        catalogue.add_collection(session, alice, S, "a-dataset", "dataset")
    with pytest.raises(Conflict):  # the name belongs to a collection
        upload(sessions, alice, S, "a-dataset", store.name, [original])
    assert store.files() == [deterministic_path(S, "f.bin")]
    with transaction(sessions) as session:
        assert catalogue.get(session, S, "f.bin").adler32 == adler(original)


def test_upload_into_dataset(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, local_rse: Path
) -> None:
    upload(sessions, alice, S, "a.bin", "LOCAL-DISK", [b"a"], dataset=(S, "new-ds"))
    upload(sessions, alice, S, "b.bin", "LOCAL-DISK", [b"b"], dataset=(S, "new-ds"))
    # a re-upload of the same content into the dataset is not an error
    upload(sessions, alice, S, "a.bin", "LOCAL-DISK", [b"a"], dataset=(S, "new-ds"))
    with transaction(sessions) as session:
        ds = catalogue.get(session, S, "new-ds")
        assert (ds.type, ds.is_open, ds.account_id) == ("dataset", True, alice.id)
        assert [d.name for d in catalogue.contents(session, ds)] == ["a.bin", "b.bin"]
        catalogue.set_open(session, alice, S, "new-ds", False)
        catalogue.add_collection(session, alice, S, "ct", "container")
    for dataset in ((S, "new-ds"), (S, "ct"), (S, "a.bin")):  # closed, container, file
        with pytest.raises(Invalid):
            upload(sessions, alice, S, "c.bin", "LOCAL-DISK", [b"c"], dataset=dataset)
    with pytest.raises(Invalid):
        upload(sessions, alice, S, "c.bin", "LOCAL-DISK", [b"c"], dataset=(S, "../x"))
    assert not (local_rse / deterministic_path(S, "c.bin")).exists()
    assert table_counts(sessions) == {
        "dids": 4,
        "replicas": 2,
        "attachments": 2,
        "pending_uploads": 0,
    }


def test_another_account_cannot_upload(
    sessions: sessionmaker[Session],
    alice: Account,
    bob: Account,
    alice_scope: str,
    local_rse: Path,
) -> None:
    store = Store("LOCAL-DISK", local_rse.as_uri(), local_rse)
    with transaction(sessions) as session:
        scopes.add(session, bob, "user.bob")
    attempts = [
        dict(scope=S, name="bob.bin", dataset=None),
        dict(scope="user.bob", name="bob.bin", dataset=(S, "alice-ds")),
    ]
    for public in (False, True):
        with transaction(sessions) as session:
            scopes.set_public(session, alice, S, public)
        for attempt in attempts:
            with pytest.raises(Forbidden):
                upload(
                    sessions,
                    bob,
                    attempt["scope"],  # type: ignore[arg-type]
                    attempt["name"],  # type: ignore[arg-type]
                    "LOCAL-DISK",
                    [b"bob's bytes"],
                    dataset=attempt["dataset"],  # type: ignore[arg-type]
                )
        assert_nothing_left(sessions, store, "bob.bin")
