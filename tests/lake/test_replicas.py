"""Bulk replica registration and listing."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from vre.db import transaction
from vre.errors import Conflict, Forbidden, Invalid, NotFound
from vre.identity.models import Account
from vre.lake import catalogue, replicas, rses, scopes
from vre.lake.models import DID, Attachment, DIDMeta, Replica
from vre.lake.names import deterministic_path
from vre.lake.replicas import FileEntry

S = "user.alice"


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def entry(name: str, content: bytes = b"", **kwargs: object) -> FileEntry:
    content = content or name.encode()
    return FileEntry(S, name, len(content), adler(content), **kwargs)  # type: ignore[arg-type]


def counts(sessions: sessionmaker[Session]) -> tuple[int, ...]:
    with transaction(sessions) as session:
        return tuple(
            session.scalar(select(func.count()).select_from(m)) or 0
            for m in (DID, Replica, Attachment, DIDMeta)
        )


def test_bulk_register_with_dataset_and_list(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, local_rse: Path
) -> None:
    files = [entry(f"run/f{i:04d}.dat", meta={"i": i}) for i in range(500)]
    with transaction(sessions) as session:
        catalogue.add_collection(session, alice, S, "ds", "dataset")
        result = replicas.register(session, alice, "LOCAL-DISK", files, dataset=(S, "ds"))
    assert result == {"files": 500, "replicas": 500, "attached": 500}
    assert counts(sessions) == (501, 500, 500, 500)

    with transaction(sessions) as session:
        listed = replicas.list_for(session, alice, [(S, "ds")])
        ds = catalogue.get(session, S, "ds")
        assert len(catalogue.contents(session, ds)) == 500
        one = catalogue.get(session, S, "run/f0007.dat")
        assert (one.type, one.bytes, one.adler32, one.account_id) == (
            "file",
            len(b"run/f0007.dat"),
            adler(b"run/f0007.dat"),
            alice.id,
        )
        assert one.is_open is False
    assert [f.name for f in listed] == [f.name for f in files]
    prefix = local_rse.as_uri()
    for item, sent in zip(listed, files, strict=True):
        assert (item.scope, item.bytes, item.adler32) == (S, sent.bytes, sent.adler32)
        assert len(item.replicas) == 1
        view = item.replicas[0]
        assert view.rse == "LOCAL-DISK" and view.state == "available"
        assert view.url == f"{prefix}/{deterministic_path(S, item.name)}"
        assert view.url.startswith(prefix + "/" + S + "/")

    # the same files again: nothing new, nothing doubled
    with transaction(sessions) as session:
        again = replicas.register(session, alice, "LOCAL-DISK", files, dataset=(S, "ds"))
    assert again == {"files": 0, "replicas": 0, "attached": 0}
    assert counts(sessions) == (501, 500, 500, 500)

    # a second RSE adds replicas only; a mixed batch adds only what is new
    with transaction(sessions) as session:
        rses.add(session, _root(session), "OTHER", (local_rse.parent / "other").as_uri())
        assert replicas.register(session, alice, "OTHER", files[:3]) == {
            "files": 0,
            "replicas": 3,
            "attached": 0,
        }
        mixed = [*files[:2], entry("new.dat")]
        assert replicas.register(session, alice, "LOCAL-DISK", mixed) == {
            "files": 1,
            "replicas": 1,
            "attached": 0,
        }
    with transaction(sessions) as session:
        listed = replicas.list_for(session, alice, [(S, files[0].name), (S, "new.dat")])
        assert [(f.name, [r.rse for r in f.replicas]) for f in listed] == [
            ("new.dat", ["LOCAL-DISK"]),
            (files[0].name, ["LOCAL-DISK", "OTHER"]),
        ]


def _root(session: Session) -> Account:
    from vre.identity import accounts

    return accounts.get(session, "root")


def test_conflict_writes_nothing_of_the_batch(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, local_rse: Path
) -> None:
    with transaction(sessions) as session:
        catalogue.add_collection(session, alice, S, "ds", "dataset")
        catalogue.add_collection(session, alice, S, "coll", "dataset")
        replicas.register(session, alice, "LOCAL-DISK", [entry("old.dat", b"original")])
    before = counts(sessions)
    new = [entry(f"new{i}.dat", meta={"k": i}) for i in range(50)]
    batches = [
        [*new, entry("old.dat", b"other content")],  # other checksum and size
        [*new, FileEntry(S, "old.dat", len(b"original"), adler(b"originaX"))],  # checksum only
        [*new, FileEntry(S, "old.dat", 99, adler(b"original"))],  # size only
        [*new, entry("coll")],  # the name is a dataset
    ]
    for batch in batches:
        with pytest.raises(Conflict), transaction(sessions) as session:
            replicas.register(session, alice, "LOCAL-DISK", batch, dataset=(S, "ds"))
        assert counts(sessions) == before
    # a failure after the rows are written (closed dataset) rolls back the whole call too
    with transaction(sessions) as session:
        catalogue.set_open(session, alice, S, "ds", False)
    with pytest.raises(Invalid), transaction(sessions) as session:
        replicas.register(session, alice, "LOCAL-DISK", new, dataset=(S, "ds"))
    with pytest.raises(NotFound), transaction(sessions) as session:
        replicas.register(session, alice, "LOCAL-DISK", new, dataset=(S, "missing"))
    assert counts(sessions) == before
    # same content with an md5 the catalogue did not know is the same file
    with transaction(sessions) as session:
        same = FileEntry(S, "old.dat", len(b"original"), adler(b"original"), md5="a" * 32)
        assert replicas.register(session, alice, "LOCAL-DISK", [same])["files"] == 0


BAD_ENTRIES: dict[str, dict[str, object]] = {
    "adler32 not hex": {"adler32": "xyz"},
    "adler32 with g": {"adler32": "0000000g"},
    "adler32 nine digits": {"adler32": "123456789"},
    "adler32 with space": {"adler32": "1234 567"},
    "adler32 empty": {"adler32": ""},
    "adler32 newline": {"adler32": "0000000a\n"},
    "md5 short": {"md5": "abc"},
    "md5 not hex": {"md5": "z" * 32},
    "negative bytes": {"bytes": -1},
    "name climbs out": {"name": "../escape"},
    "name with ..": {"name": "a/../b"},
    "bad scope": {"scope": "bad scope"},
    "bad meta key": {"meta": {"bad key": 1}},
}


@pytest.mark.parametrize("bad", BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
def test_invalid_entries(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {"scope": S, "name": "f.dat", "bytes": 1, "adler32": "00020002"}
    fields.update(bad)
    with pytest.raises(Invalid):
        replicas._check_entry(FileEntry(**fields))  # type: ignore[arg-type]


def test_register_refuses_bad_input(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, local_rse: Path
) -> None:
    good = entry("good.dat")
    refused: dict[str, tuple[type[Exception], list[FileEntry], str]] = {
        "adler32 not hex": (Invalid, [good, FileEntry(S, "f1.dat", 1, "not-hex!")], "LOCAL-DISK"),
        "adler32 empty": (Invalid, [good, FileEntry(S, "f2.dat", 1, "")], "LOCAL-DISK"),
        "adler32 newline": (Invalid, [good, FileEntry(S, "f3.dat", 1, "0000000a\n")], "LOCAL-DISK"),
        "adler32 too long": (
            Invalid,
            [good, FileEntry(S, "f4.dat", 1, "1234567890")],
            "LOCAL-DISK",
        ),
        "same DID twice": (Invalid, [good, good], "LOCAL-DISK"),
        "no files": (Invalid, [], "LOCAL-DISK"),
        "unknown RSE": (NotFound, [good], "NO-SUCH-RSE"),
        "unknown scope": (
            NotFound,
            [good, FileEntry("user.nobody", "x", 1, "00020002")],
            "LOCAL-DISK",
        ),
    }
    outcomes = {}
    for case, (_, files, rse) in refused.items():
        try:
            with transaction(sessions) as session:
                replicas.register(session, alice, rse, files)
            outcomes[case] = "accepted"
        except Exception as exc:  # a database error here is a bug too: record which
            outcomes[case] = type(exc).__name__
    assert outcomes == {case: error.__name__ for case, (error, _, _) in refused.items()}
    assert counts(sessions) == (0, 0, 0, 0)
    with transaction(sessions) as session:
        upper = FileEntry(S, "upper.dat", 3, "ABCDEF01", md5="D41D8CD98F00B204E9800998ECF8427E")
        short = FileEntry(S, "short.dat", 3, "2a")  # leading zeros may be left out
        replicas.register(session, alice, "LOCAL-DISK", [upper, short])
    with transaction(sessions) as session:
        stored = catalogue.get(session, S, "upper.dat")
        assert (stored.adler32, stored.md5) == ("abcdef01", "d41d8cd98f00b204e9800998ecf8427e")
        assert catalogue.get(session, S, "short.dat").adler32 == "0000002a"
        with pytest.raises(NotFound):
            replicas.list_for(session, alice, [(S, "missing")])


def test_another_account_cannot(
    sessions: sessionmaker[Session],
    alice: Account,
    bob: Account,
    alice_scope: str,
    local_rse: Path,
) -> None:
    with transaction(sessions) as session:
        catalogue.add_collection(session, alice, S, "ds", "dataset")
        replicas.register(session, alice, "LOCAL-DISK", [entry("f.dat")], dataset=(S, "ds"))
        scopes.add(session, bob, "user.bob")
    before = counts(sessions)

    def bob_writes() -> None:
        for files, dataset in [
            ([entry("bob.dat")], None),
            ([entry("f.dat")], None),  # even the same content
            ([FileEntry("user.bob", "b.dat", 1, "00020002")], (S, "ds")),
        ]:
            with pytest.raises(Forbidden), transaction(sessions) as session:
                replicas.register(session, bob, "LOCAL-DISK", files, dataset=dataset)
        assert counts(sessions) == before

    bob_writes()
    with pytest.raises(Forbidden), transaction(sessions) as session:
        replicas.list_for(session, bob, [(S, "ds")])
    with transaction(sessions) as session:
        scopes.set_public(session, alice, S, True)
    with transaction(sessions) as session:
        listed = replicas.list_for(session, bob, [(S, "ds")])
        assert [(f.name, len(f.replicas)) for f in listed] == [("f.dat", 1)]
    bob_writes()
