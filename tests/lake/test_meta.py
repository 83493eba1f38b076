"""DID metadata: set, get, unset, limits, and the filters that query it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from vre.config import get_settings
from vre.db import transaction
from vre.errors import Forbidden, Invalid, NotFound
from vre.identity.models import Account
from vre.lake import catalogue, meta, scopes
from vre.lake.models import DIDMeta

SCOPE = "user.alice"


def names_matching(session: Session, actor: Account, filters: str) -> list[str]:
    return [d.name for d in catalogue.list_dids(session, actor, f"{SCOPE}:*", filters=filters)]


def test_set_get_unset_keeps_types(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str
) -> None:
    values: dict[str, Any] = {
        "run": 42,
        "energy": 13.6,
        "negative": -7,
        "zero": 0,
        "label": "calibration",
        "numeric_text": "0042",
        "flag": True,
        "off": False,
    }
    with transaction(sessions) as session:
        ds = catalogue.add_collection(session, alice, SCOPE, "ds", "dataset", meta_values=values)
        ds_id = ds.id
    with transaction(sessions) as session:
        got = meta.get_all(session, ds_id)
    assert got == values
    assert list(got) == sorted(values)  # keys come back sorted
    assert type(got["run"]) is int and type(got["energy"]) is float
    assert type(got["negative"]) is int and type(got["zero"]) is int
    assert got["numeric_text"] == "0042"  # text that looks numeric stays text
    assert got["flag"] is True and got["off"] is False

    with transaction(sessions) as session:
        meta.set_many(session, [ds_id], {"run": 43, "new": "x"})  # upsert
    with transaction(sessions) as session:
        meta.unset(session, ds_id, "label")
    with transaction(sessions) as session:
        got = meta.get_all(session, ds_id)
        assert got["run"] == 43 and got["new"] == "x" and "label" not in got
        assert len(got) == len(values) + 1 - 1
        with pytest.raises(NotFound):
            meta.unset(session, ds_id, "label")
        with pytest.raises(NotFound):
            meta.unset(session, ds_id, "never-set")


def test_set_many_on_many_dids(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str
) -> None:
    with transaction(sessions) as session:
        ids = [
            catalogue.add_collection(session, alice, SCOPE, f"d{i}", "dataset").id for i in range(5)
        ]
        meta.set_many(session, ids, {"campaign": "2024", "n": 1})
    with transaction(sessions) as session:
        assert all(meta.get_all(session, i) == {"campaign": "2024", "n": 1} for i in ids)
        assert names_matching(session, alice, "campaign=2024,n=1") == [f"d{i}" for i in range(5)]


DATASETS: dict[str, dict[str, Any]] = {
    "a": {"run": 1, "energy": 6.5, "kind": "data", "flag": True},
    "b": {"run": 2, "energy": 13.0, "kind": "data"},
    "c": {"run": 10, "energy": 13.6, "kind": "mc", "flag": False},
    "d": {"run": "10", "kind": "mc"},  # a numeric-looking string
    "e": {"kind": "other"},
    "f": {},
}

FILTERS = [
    ("run=1", ["a"]),
    ("run=10", ["c", "d"]),  # 10 and "10" both equal the text "10"
    ("run = 2", ["b"]),
    ("kind=data", ["a", "b"]),
    ("kind=nothing", []),
    ("kind!=data", ["c", "d", "e"]),  # only DIDs that have the key
    ("run!=1", ["b", "c", "d"]),
    ("run>1", ["b", "c"]),  # only numbers compare
    ("run>=2", ["b", "c"]),
    ("run<10", ["a", "b"]),
    ("run<=10", ["a", "b", "c"]),
    ("run>100", []),
    ("energy>13", ["c"]),
    ("energy>=13", ["b", "c"]),
    ("energy=13", ["b"]),  # 13 equals 13.0
    ("energy<13.5", ["a", "b"]),
    ("energy>-1", ["a", "b", "c"]),
    ("kind=mc,run>5", ["c"]),
    ("kind=data,energy>7", ["b"]),
    ("kind=data, run<2 ,energy<=6.5", ["a"]),
    ("kind=data,kind=mc", []),
    ("missing=1", []),
    ("flag=true", ["a"]),  # a boolean set through the API can be found again
    ("flag=false", ["c"]),
    ("", ["a", "b", "c", "d", "e", "f"]),
]


def test_filters(sessions: sessionmaker[Session], alice: Account, alice_scope: str) -> None:
    with transaction(sessions) as session:
        for name, values in DATASETS.items():
            catalogue.add_collection(session, alice, SCOPE, name, "dataset", meta_values=values)
    with transaction(sessions) as session:
        results = {expr: names_matching(session, alice, expr) for expr, _ in FILTERS}
    assert results == dict(FILTERS)


@pytest.mark.parametrize(
    "expression",
    [
        "run",
        "=1",
        "run=",
        "run>",
        "run>abc",  # ordering needs a number
        "run<=x1",
        "run>=,kind=data",
        "kind=data,",
        ",kind=data",
        "kind=data,,run=1",
        "ke y=1",
        "key~1",
        "k@y=1",
    ],
)
def test_bad_filters_are_invalid(expression: str) -> None:
    with pytest.raises(Invalid, match="invalid metadata filter"):
        meta.parse_filters(expression)


def test_bad_filter_in_listing_is_invalid(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str
) -> None:
    with transaction(sessions) as session:
        with pytest.raises(Invalid):
            catalogue.list_dids(session, alice, f"{SCOPE}:*", filters="run>high")
        with pytest.raises(Invalid):
            catalogue.list_dids(session, alice, f"{SCOPE}:*", filters="nonsense")


REFUSED: dict[str, dict[str, Any]] = {
    "empty key": {"": "x"},
    "space in key": {"bad key": 1},
    "slash in key": {"bad/key": 1},
    "colon in key": {"bad:key": 1},
    "key too long": {"k" * 129: 1},
    "newline after key": {"run\n": 1},  # must not slip through '$'
    "non-ascii key": {"ünï": 1},
    "list value": {"list": [1, 2]},
    "dict value": {"dict": {"a": 1}},
    "null value": {"none": None},
    "value over the limit": {"big": "x" * 4097},
    "value far over the limit": {"big": "x" * 10_000},
    "too many keys": {f"k{i}": i for i in range(101)},
    # not representable in a JSON answer (encoders refuse them) or as a float
    "nan": {"nan": float("nan")},
    "inf": {"inf": float("inf")},
    "-inf": {"-inf": float("-inf")},
    "int beyond float": {"huge": 10**400},
}


@pytest.mark.parametrize("values", REFUSED.values(), ids=REFUSED.keys())
def test_check_refuses(values: dict[str, Any]) -> None:
    with pytest.raises(Invalid):
        meta.check(values)


ACCEPTED: dict[str, dict[str, Any]] = {
    "longest key": {"k" * 128: 1},
    "all key characters": {"a.b-c_D9": "ok"},
    "most keys": {f"k{i}": i for i in range(100)},
    "value at the limit": {"big": "x" * 4096},  # "at most 4096 characters"
    "large int": {"big": 10**300},
}


@pytest.mark.parametrize("values", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_check_accepts(values: dict[str, Any]) -> None:
    assert meta.check(values) == values


def test_limits_follow_settings(
    sessions: sessionmaker[Session],
    alice: Account,
    alice_scope: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VRE_MAX_META_KEYS", "3")
    monkeypatch.setenv("VRE_MAX_META_VALUE_LENGTH", "10")
    get_settings.cache_clear()
    with transaction(sessions) as session:
        ds_id = catalogue.add_collection(session, alice, SCOPE, "ds", "dataset").id
        meta.set_many(session, [ds_id], {"a": 1, "b": 2})
    # one call within the limit, but the DID would hold four keys in total
    with pytest.raises(Invalid, match="too many"), transaction(sessions) as session:
        meta.set_many(session, [ds_id], {"c": 3, "d": 4})
    with pytest.raises(Invalid, match="too many"), transaction(sessions) as session:
        meta.set_many(session, [ds_id], {"a": 1, "b": 2, "c": 3, "d": 4})
    with pytest.raises(Invalid, match="too large"), transaction(sessions) as session:
        meta.set_many(session, [ds_id], {"c": "x" * 11})
    with transaction(sessions) as session:
        assert meta.get_all(session, ds_id) == {"a": 1, "b": 2}  # nothing half-written
        meta.set_many(session, [ds_id], {"a": 10, "c": "x" * 8})  # overwrite counts once
    with transaction(sessions) as session:
        assert meta.get_all(session, ds_id) == {"a": 10, "b": 2, "c": "x" * 8}
        assert session.scalar(select(func.count()).select_from(DIDMeta)) == 3


def test_another_account_cannot_read_or_write_metadata(
    sessions: sessionmaker[Session],
    alice: Account,
    bob: Account,
    root: Account,
    alice_scope: str,
) -> None:
    with transaction(sessions) as session:
        catalogue.add_collection(session, alice, SCOPE, "ds", "dataset", meta_values={"run": 7})
    with transaction(sessions) as session:
        with pytest.raises(Forbidden):
            catalogue.readable(session, bob, SCOPE, "ds")  # the way to metadata
        with pytest.raises(Forbidden):
            names_matching(session, bob, "run=7")
        with pytest.raises(Forbidden):
            catalogue.writable(session, bob, SCOPE, "ds")
        # the admin can read everything
        assert meta.get_all(session, catalogue.readable(session, root, SCOPE, "ds").id) == {
            "run": 7
        }
    with transaction(sessions) as session:
        scopes.set_public(session, alice, SCOPE, True)
    with transaction(sessions) as session:
        did = catalogue.readable(session, bob, SCOPE, "ds")
        assert meta.get_all(session, did.id) == {"run": 7}
        assert names_matching(session, bob, "run=7") == ["ds"]
        with pytest.raises(Forbidden):
            catalogue.writable(session, bob, SCOPE, "ds")


def test_key_length_follows_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VRE_MAX_META_KEY_LENGTH", "8")
    get_settings.cache_clear()
    assert meta.check({"k" * 8: 1}) == {"k" * 8: 1}
    with pytest.raises(Invalid, match="at most 8 characters"):
        meta.check({"k" * 9: 1})
