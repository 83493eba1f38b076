"""Scope and DID names, listing patterns and the deterministic path of a file."""

from __future__ import annotations

import hashlib
import re

import pytest

from vre.errors import Invalid
from vre.lake.names import (
    check_name,
    check_scope,
    deterministic_path,
    parse_did,
    parse_pattern,
)


@pytest.mark.parametrize(
    "scope",
    ["user.alice", "a", "A1", "data-2024", "x_y.z", "0start", "s" * 30],
)
def test_valid_scopes(scope: str) -> None:
    assert check_scope(scope) == scope


@pytest.mark.parametrize(
    "scope",
    [
        "",
        ".hidden",
        "-dash",
        "_under",
        "s" * 31,
        "with space",
        "sl/ash",
        "co:lon",
        "star*",
        "ümlaut",
        "user.alice\n",  # a trailing newline must not slip through '$'
        "\nuser.alice",
    ],
)
def test_invalid_scopes(scope: str) -> None:
    with pytest.raises(Invalid, match="invalid scope name"):
        check_scope(scope)


@pytest.mark.parametrize(
    "name",
    [
        "file.root",
        "a",
        "run-1_v2+fix.txt",
        "dir/sub/file.dat",
        ".hidden",  # a leading dot in a segment is only a name
        "..x",
        "x..",
        "a/.b/c",
        "n" * 216,  # the longest part storage takes (names.MAX_COMPONENT)
        "d" * 38 + "/" + "n" * 216,  # and the longest name
    ],
)
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../etc/passwd",
        "a/../b",
        "a/..",
        "..",
        ".",
        "./a",
        "a/./b",
        "/abs",
        "trailing/",
        "a//b",
        "n" * 256,
        "n" * 217,  # one part longer than a file name on storage may be (with .vre-part-TAG)
        "with space",
        "co:lon",
        "star*",
        "q?",
        "per%cent",
        "back\\slash",
        "file.root\n",  # a trailing newline must not slip through '$'
        "tab\tname",
        "nul\x00",
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(Invalid, match="invalid DID name"):
        check_name(name)


def test_deterministic_path_is_stable_and_hashed() -> None:
    path = deterministic_path("user.alice", "dir/file.root")
    assert path == deterministic_path("user.alice", "dir/file.root")
    digest = hashlib.md5(b"user.alice:dir/file.root").hexdigest()
    assert path == f"user.alice/{digest[:2]}/{digest[2:4]}/dir/file.root"
    assert re.fullmatch(r"user\.alice/[0-9a-f]{2}/[0-9a-f]{2}/dir/file\.root", path)


def test_deterministic_path_spreads_names_and_scopes() -> None:
    paths = {deterministic_path("s", f"file{i}") for i in range(200)}
    assert len({p.split("/")[1] for p in paths}) > 50  # the hash spreads directories
    # the same name in two scopes never shares a path
    assert deterministic_path("a", "x").split("/")[0] == "a"
    assert deterministic_path("a", "x") != deterministic_path("b", "x")


@pytest.mark.parametrize(
    ("did", "default", "expected"),
    [
        ("user.alice:file.root", None, ("user.alice", "file.root")),
        ("user.alice:dir/a:b", None, None),  # ':' is not a name character
        ("file.root", "user.alice", ("user.alice", "file.root")),
        ("other:file.root", "user.alice", ("other", "file.root")),
        ("s:a/b/c", None, ("s", "a/b/c")),
    ],
)
def test_parse_did(did: str, default: str | None, expected: tuple[str, str] | None) -> None:
    if expected is None:
        with pytest.raises(Invalid):
            parse_did(did, default)
    else:
        assert parse_did(did, default) == expected


@pytest.mark.parametrize(
    "did",
    [
        "file.root",  # no scope and no default
        "user.alice:",
        ":file.root",
        ":",
        "user.alice:../x",
        "user.alice:a/../b",
        "user.alice:a//b",
        "bad scope:x",
        "user.alice:x*",
    ],
)
def test_parse_did_errors(did: str) -> None:
    with pytest.raises(Invalid):
        parse_did(did)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("user.alice:*", ("user.alice", "*")),
        ("user.alice:", ("user.alice", "*")),
        ("user.alice:run?_*.root", ("user.alice", "run?_*.root")),
        ("s:dir/*", ("s", "dir/*")),
        ("s:exact.txt", ("s", "exact.txt")),
    ],
)
def test_parse_pattern(pattern: str, expected: tuple[str, str]) -> None:
    assert parse_pattern(pattern) == expected


@pytest.mark.parametrize(
    "pattern",
    ["*", "user.alice", ":*", "bad scope:*", "s:a b", "s:100%", "s:[ab]", "s:x;drop", "s:x\\y"],
)
def test_parse_pattern_errors(pattern: str) -> None:
    with pytest.raises(Invalid):
        parse_pattern(pattern)
