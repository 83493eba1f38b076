"""The catalogue: datasets and containers, attachments, listings, and who may do what."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from vre.db import transaction
from vre.errors import Conflict, Forbidden, Invalid, NotFound
from vre.identity.models import Account
from vre.lake import catalogue, replicas, scopes
from vre.lake.models import DID, Attachment

S = "user.alice"


def add_files(session: Session, actor: Account, scope: str, *names: str) -> None:
    entries = [replicas.FileEntry(scope, n, 1, "00020002") for n in names]
    replicas.register(session, actor, "LOCAL-DISK", entries)


def names(dids: list[DID]) -> list[str]:
    return [d.name for d in dids]


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_add_collections(sessions: sessionmaker[Session], alice: Account, alice_scope: str) -> None:
    with transaction(sessions) as session:
        ds = catalogue.add_collection(session, alice, S, "ds", "dataset")
        ct = catalogue.add_collection(session, alice, S, "dir/ct", "container")
    assert (ds.type, ds.is_open, ds.account_id) == ("dataset", True, alice.id)
    assert (ct.type, ct.scope, ct.name) == ("container", S, "dir/ct")
    with transaction(sessions) as session:
        assert catalogue.get(session, S, "ds").id == ds.id
        for kind in ("dataset", "container"):  # the name is taken whatever the type
            with pytest.raises(Conflict):
                catalogue.add_collection(session, alice, S, "ds", kind)
        with pytest.raises(NotFound):
            catalogue.add_collection(session, alice, "user.nobody", "ds", "dataset")
        with pytest.raises(Invalid):
            catalogue.add_collection(session, alice, S, "f", "file")
        with pytest.raises(Invalid):
            catalogue.add_collection(session, alice, S, "x", "folder")
        for bad in ("../x", "a/../b", "a//b", "", "sp ace", "x*"):
            with pytest.raises(Invalid):
                catalogue.add_collection(session, alice, S, bad, "dataset")
        with pytest.raises(Invalid):
            catalogue.add_collection(session, alice, "bad scope", "x", "dataset")
        with pytest.raises(NotFound):
            catalogue.get(session, S, "missing")
        assert count(session, DID) == 2


def test_attach_files_and_datasets(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, local_rse: Path
) -> None:
    with transaction(sessions) as session:
        add_files(session, alice, S, "f1", "f2", "f3")
        catalogue.add_collection(session, alice, S, "ds1", "dataset")
        catalogue.add_collection(session, alice, S, "ds2", "dataset")
        catalogue.add_collection(session, alice, S, "ct", "container")
        catalogue.add_collection(session, alice, S, "inner", "container")
    with transaction(sessions) as session:
        assert catalogue.attach(session, alice, S, "ds1", [(S, "f1"), (S, "f2")]) == 2
        # already attached ones are not counted again; repeats in one call count once
        assert catalogue.attach(session, alice, S, "ds1", [(S, "f2"), (S, "f3"), (S, "f3")]) == 1
        assert catalogue.attach(session, alice, S, "ds2", [(S, "f1")]) == 1
        assert catalogue.attach(session, alice, S, "ct", [(S, "ds1"), (S, "inner")]) == 2
        assert catalogue.attach(session, alice, S, "inner", [(S, "ds2")]) == 1
    with transaction(sessions) as session:
        ds1 = catalogue.get(session, S, "ds1")
        ct = catalogue.get(session, S, "ct")
        assert names(catalogue.contents(session, ds1)) == ["f1", "f2", "f3"]
        assert names(catalogue.contents(session, ct)) == ["ds1", "inner"]
        assert catalogue.child_counts(session, [ds1.id, ct.id]) == {ds1.id: 3, ct.id: 2}
        # files through nested containers, each file once, sorted
        assert names(catalogue.files_of(session, [ct])) == ["f1", "f2", "f3"]
        inner = catalogue.get(session, S, "inner")
        assert names(catalogue.files_of(session, [inner])) == ["f1"]
        f3 = catalogue.get(session, S, "f3")
        assert names(catalogue.files_of(session, [f3, inner])) == ["f1", "f3"]
        assert catalogue.files_of(session, []) == []


def test_attach_refuses_wrong_kinds_and_missing(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, local_rse: Path
) -> None:
    with transaction(sessions) as session:
        add_files(session, alice, S, "f1", "f2")
        for name, kind in [("ds", "dataset"), ("ds2", "dataset"), ("ct", "container")]:
            catalogue.add_collection(session, alice, S, name, kind)
    refused = [
        ("ct", [(S, "f1")]),  # file into container
        ("ds", [(S, "ct")]),  # container into dataset
        ("ds", [(S, "ds2")]),  # dataset into dataset
        ("ds", [(S, "f2"), (S, "ct")]),  # one bad child spoils the call
        ("f1", [(S, "f2")]),  # into a file
    ]
    for parent, children in refused:
        with pytest.raises(Invalid), transaction(sessions) as session:
            catalogue.attach(session, alice, S, parent, children)
    with pytest.raises(NotFound), transaction(sessions) as session:
        catalogue.attach(session, alice, S, "ds", [(S, "f1"), (S, "nope")])
    with pytest.raises(NotFound), transaction(sessions) as session:
        catalogue.attach(session, alice, S, "missing", [(S, "f1")])
    with pytest.raises(NotFound), transaction(sessions) as session:
        catalogue.attach(session, alice, S, "ds", [("user.nobody", "f1")])
    with pytest.raises(Invalid), transaction(sessions) as session:
        catalogue.attach(session, alice, S, "ds", [(S, "../f1")])
    with transaction(sessions) as session:
        assert count(session, Attachment) == 0


def test_attach_refuses_cycles(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str
) -> None:
    with transaction(sessions) as session:
        for name in ("A", "B", "C", "D"):
            catalogue.add_collection(session, alice, S, name, "container")
        catalogue.attach(session, alice, S, "A", [(S, "B")])
        catalogue.attach(session, alice, S, "B", [(S, "C")])
    cycles = [
        ("B", "A"),  # A contains B
        ("C", "A"),  # A contains C two levels down
        ("C", "B"),
        ("A", "A"),  # self
        ("D", "D"),
    ]
    for parent, child in cycles:
        with pytest.raises(Invalid, match="cycle"), transaction(sessions) as session:
            catalogue.attach(session, alice, S, parent, [(S, child)])
    with transaction(sessions) as session:
        # a diamond is not a cycle
        assert catalogue.attach(session, alice, S, "D", [(S, "C")]) == 1
        assert catalogue.attach(session, alice, S, "A", [(S, "D")]) == 1
        assert count(session, Attachment) == 4
    with pytest.raises(Invalid, match="cycle"), transaction(sessions) as session:
        catalogue.attach(session, alice, S, "C", [(S, "D")])


def test_closed_dataset_refuses_attach(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, local_rse: Path
) -> None:
    with transaction(sessions) as session:
        add_files(session, alice, S, "f1", "f2")
        catalogue.add_collection(session, alice, S, "ds", "dataset")
        catalogue.attach(session, alice, S, "ds", [(S, "f1")])
        catalogue.set_open(session, alice, S, "ds", False)
    with pytest.raises(Invalid, match="closed"), transaction(sessions) as session:
        catalogue.attach(session, alice, S, "ds", [(S, "f2")])
    with pytest.raises(Invalid), transaction(sessions) as session:
        catalogue.set_open(session, alice, S, "f1", False)  # files are not collections
    with transaction(sessions) as session:
        assert names(catalogue.contents(session, catalogue.get(session, S, "ds"))) == ["f1"]
        catalogue.set_open(session, alice, S, "ds", True)
        assert catalogue.attach(session, alice, S, "ds", [(S, "f2")]) == 1


def test_detach(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, local_rse: Path
) -> None:
    with transaction(sessions) as session:
        add_files(session, alice, S, "f1", "f2", "f3", "loose")
        catalogue.add_collection(session, alice, S, "ds", "dataset")
        catalogue.attach(session, alice, S, "ds", [(S, "f1"), (S, "f2"), (S, "f3")])
    with transaction(sessions) as session:
        assert catalogue.detach(session, alice, S, "ds", [(S, "f1"), (S, "f3")]) == 2
    with pytest.raises(NotFound), transaction(sessions) as session:
        catalogue.detach(session, alice, S, "ds", [(S, "f2"), (S, "loose")])  # not attached
    with pytest.raises(NotFound), transaction(sessions) as session:
        catalogue.detach(session, alice, S, "ds", [(S, "f2"), (S, "nope")])
    with transaction(sessions) as session:
        ds = catalogue.get(session, S, "ds")
        assert names(catalogue.contents(session, ds)) == ["f2"]  # failed calls changed nothing
        assert count(session, DID) == 5  # detaching never deletes the files
        catalogue.delete_collection(session, alice, S, "ds")
        with pytest.raises(Invalid):
            catalogue.delete_collection(session, alice, S, "f2")
    with transaction(sessions) as session:
        assert (count(session, DID), count(session, Attachment)) == (4, 0)
        assert catalogue.get(session, S, "f2").type == "file"


LISTED = ["run_1", "runX1", "run_10", "data.a", "DATA.b", "dir/sub/x", "dir2"]

PATTERNS = [
    ("*", sorted(LISTED)),
    ("", sorted(LISTED)),
    ("run_*", ["run_1", "run_10"]),  # '_' is literal, not SQL's any-character
    ("run?1", ["runX1", "run_1"]),
    ("run_?", ["run_1"]),
    ("run_1", ["run_1"]),  # no wildcard: exact
    ("run*1", ["runX1", "run_1"]),
    ("*.?", ["DATA.b", "data.a"]),
    ("data.*", ["data.a"]),  # names are case-sensitive
    ("DATA.*", ["DATA.b"]),
    ("dir/*", ["dir/sub/x"]),
    ("dir*", ["dir/sub/x", "dir2"]),
    ("nomatch*", []),
    ("run", []),
]


def test_list_dids_patterns(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str
) -> None:
    with transaction(sessions) as session:
        for name in LISTED:
            catalogue.add_collection(session, alice, S, name, "dataset")
    with transaction(sessions) as session:
        got = {p: catalogue.list_dids(session, alice, f"{S}:{p}") for p, _ in PATTERNS}
        # compared sorted in Python: the database's collation may order case differently
        assert {p: sorted(names(dids)) for p, dids in got.items()} == {
            p: sorted(expected) for p, expected in PATTERNS
        }
        assert names(catalogue.list_dids(session, alice, f"{S}:*", limit=2)) == sorted(LISTED)[:2]
        for bad in (f"{S}:run%", f"{S}:%", f"{S}:[r]*", "run_*", f"{S}:a b"):
            with pytest.raises(Invalid):
                catalogue.list_dids(session, alice, bad)
        with pytest.raises(NotFound):
            catalogue.list_dids(session, alice, "user.nobody:*")


def test_list_dids_type_filter_and_recursive(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, local_rse: Path
) -> None:
    with transaction(sessions) as session:
        add_files(session, alice, S, "f1", "f2", "f3")
        catalogue.add_collection(session, alice, S, "ds", "dataset")
        catalogue.add_collection(session, alice, S, "ct", "container")
        catalogue.add_collection(session, alice, S, "top", "container")
        catalogue.attach(session, alice, S, "ds", [(S, "f1"), (S, "f2")])
        catalogue.attach(session, alice, S, "ct", [(S, "ds")])
        catalogue.attach(session, alice, S, "top", [(S, "ct")])

    def listing(pattern: str, **kwargs: object) -> list[str]:
        with transaction(sessions) as session:
            return names(catalogue.list_dids(session, alice, f"{S}:{pattern}", **kwargs))

    assert listing("*") == ["ct", "ds", "f1", "f2", "f3", "top"]
    assert listing("*", kind="file") == ["f1", "f2", "f3"]
    assert listing("*", kind="dataset") == ["ds"]
    assert listing("*", kind="container") == ["ct", "top"]
    assert listing("*", kind="collection") == ["ct", "ds", "top"]
    assert listing("*", kind="all") == ["ct", "ds", "f1", "f2", "f3", "top"]
    assert listing("top") == ["top"]
    assert listing("top", recursive=True) == ["ct", "ds", "f1", "f2", "top"]
    assert listing("top", recursive=True, kind="file") == ["f1", "f2"]
    assert listing("t*", recursive=True, kind="dataset") == ["ds"]
    assert listing("ds", recursive=True) == ["ds", "f1", "f2"]
    assert listing("f3", recursive=True) == ["f3"]
    with pytest.raises(Invalid), transaction(sessions) as session:
        catalogue.list_dids(session, alice, f"{S}:*", kind="folder")


def test_another_account_cannot(
    sessions: sessionmaker[Session],
    alice: Account,
    bob: Account,
    root: Account,
    alice_scope: str,
    local_rse: Path,
) -> None:
    with transaction(sessions) as session:
        add_files(session, alice, S, "f1")
        catalogue.add_collection(session, alice, S, "ds", "dataset")
        catalogue.attach(session, alice, S, "ds", [(S, "f1")])
        scopes.add(session, bob, "user.bob")
        catalogue.add_collection(session, bob, "user.bob", "bobs", "dataset")

    writes = [
        lambda s: catalogue.add_collection(s, bob, S, "bob-was-here", "dataset"),
        lambda s: catalogue.attach(s, bob, S, "ds", [("user.bob", "bobs")]),
        lambda s: catalogue.detach(s, bob, S, "ds", [(S, "f1")]),
        lambda s: catalogue.set_open(s, bob, S, "ds", False),
        lambda s: catalogue.delete_collection(s, bob, S, "ds"),
        lambda s: catalogue.writable(s, bob, S, "f1"),
        lambda s: scopes.set_public(s, bob, S, True),
    ]
    reads = [
        lambda s: catalogue.list_dids(s, bob, f"{S}:*"),
        lambda s: catalogue.readable(s, bob, S, "ds"),
        lambda s: catalogue.readable(s, bob, S, "f1"),
        # bob cannot pull alice's private file into his own dataset either
        lambda s: catalogue.attach(s, bob, "user.bob", "bobs", [(S, "f1")]),
    ]
    for call in writes + reads:
        with pytest.raises(Forbidden), transaction(sessions) as session:
            call(session)
    with transaction(sessions) as session:
        # the admin reads everything
        assert names(catalogue.list_dids(session, root, f"{S}:*")) == ["ds", "f1"]
        # a recursive listing of bob's own data never shows alice's private files
        assert names(catalogue.list_dids(session, bob, "user.bob:*", recursive=True)) == ["bobs"]
        scopes.set_public(session, alice, S, True)
    with transaction(sessions) as session:
        assert names(catalogue.list_dids(session, bob, f"{S}:*")) == ["ds", "f1"]
        assert catalogue.readable(session, bob, S, "ds").type == "dataset"
        assert catalogue.attach(session, bob, "user.bob", "bobs", [(S, "f1")]) == 1
    for call in writes:
        with pytest.raises(Forbidden), transaction(sessions) as session:
            call(session)
    with transaction(sessions) as session:
        ds = catalogue.get(session, S, "ds")
        assert (ds.is_open, names(catalogue.contents(session, ds))) == (True, ["f1"])
        assert names(catalogue.list_dids(session, alice, f"{S}:*")) == ["ds", "f1"]
