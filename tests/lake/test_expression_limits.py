"""Huge inputs to the lake: expressions, metadata filters, rule lifetimes, DID names, and the
errors that quote them. Each is a clear ``Invalid`` that echoes at most a bounded excerpt."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from vre.db import transaction
from vre.errors import ECHO, MAX_MESSAGE, Invalid, StorageError, VREError, scrub_paths, shown
from vre.identity.models import Account
from vre.lake import catalogue, expressions, meta, rses, rules, upload
from vre.lake.names import MAX_COMPONENT, check_name

FIVE_MB = "A&" * (5 * 1024 * 1024 // 2) + "("


def test_shown_and_every_message_are_bounded() -> None:
    assert shown("short") == "'short'"
    long = shown("x" * 10_000)
    assert len(long) < ECHO + 40 and long.endswith("(9900 more characters)")
    assert len(VREError("y" * 10**6).message) < MAX_MESSAGE + 40


def test_a_huge_expression_is_refused_quickly_and_never_echoed_whole() -> None:
    start = time.perf_counter()
    with pytest.raises(expressions.ExpressionError) as refused:
        expressions.parse(FIVE_MB)
    assert time.perf_counter() - start < 1.0
    text = str(refused.value)
    assert f"at most {expressions.MAX_LENGTH} characters" in text
    assert len(text) < 3 * ECHO + 300
    million_terms = "|".join(["DISK"] * 1_000_000)
    with pytest.raises(expressions.ExpressionError, match="at most 512 characters"):
        expressions.evaluate(million_terms, {"DISK": {}})


def test_long_names_in_expressions_are_cut_in_the_message() -> None:
    with pytest.raises(expressions.UnknownRSEError) as unknown:
        expressions.evaluate("X" * 500, {"DISK": {}})
    assert len(unknown.value.message) < ECHO + 60
    with pytest.raises(expressions.ExpressionError) as bad:
        expressions.parse("k<" + "v" * 500)
    assert len(bad.value.message) < ECHO + 60


def test_resolve_through_the_service_is_one_bounded_line(
    sessions: sessionmaker[Session], local_rse: Path
) -> None:
    with transaction(sessions) as session, pytest.raises(Invalid) as refused:
        rses.resolve(session, FIVE_MB)
    assert "\n" not in refused.value.message and len(refused.value.message) < 300


def test_a_filter_of_many_terms_is_a_clear_invalid(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str
) -> None:
    ok = ",".join(f"k{i}!={i}" for i in range(meta.MAX_FILTER_TERMS))
    with transaction(sessions) as session:  # the most allowed runs on SQLite and PostgreSQL
        assert catalogue.list_dids(session, alice, f"{alice_scope}:*", filters=ok) == []
    too_many = ",".join(f"k{i}={i}" for i in range(500))
    with transaction(sessions) as session, pytest.raises(Invalid, match="at most 100 terms"):
        catalogue.list_dids(session, alice, f"{alice_scope}:*", filters=too_many)
    with pytest.raises(Invalid) as bad:
        meta.parse_filters("k~" + "v" * 10_000)
    assert len(bad.value.message) < 300


@pytest.mark.parametrize("lifetime", [1e308, float("inf"), float("nan"), 0, -1])
def test_a_rule_lifetime_out_of_range_is_invalid(
    sessions: sessionmaker[Session],
    alice: Account,
    alice_scope: str,
    local_rse: Path,
    lifetime: float,
) -> None:
    with transaction(sessions) as session:
        catalogue.add_collection(session, alice, alice_scope, "ds", "dataset")
    with transaction(sessions) as session, pytest.raises(Invalid, match="lifetime must be"):
        rules.add(session, alice, alice_scope, "ds", "LOCAL-DISK", lifetime=lifetime)


def test_a_century_is_the_longest_lifetime(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, local_rse: Path
) -> None:
    with transaction(sessions) as session:
        catalogue.add_collection(session, alice, alice_scope, "ds", "dataset")
        rule = rules.add(
            session, alice, alice_scope, "ds", "LOCAL-DISK", lifetime=rules.MAX_LIFETIME
        )
        assert rule.expires_at is not None


def test_names_beyond_the_storage_component_limit_are_invalid() -> None:
    check_name("d/" + "x" * MAX_COMPONENT)
    for name in ("x" * 250, "dir/" + "y" * (MAX_COMPONENT + 1)):
        with pytest.raises(Invalid, match=f"at most {MAX_COMPONENT} characters"):
            check_name(name)


def test_an_upload_of_a_250_character_name_is_invalid_before_any_byte(
    sessions: sessionmaker[Session], alice: Account, alice_scope: str, local_rse: Path
) -> None:
    def chunks() -> Iterator[bytes]:
        raise AssertionError("no byte may be read for an invalid name")
        yield b""  # a generator: only reading it fails

    with pytest.raises(Invalid) as refused:
        upload.upload(sessions, alice, alice_scope, "n" * 250, "LOCAL-DISK", chunks())
    assert str(local_rse) not in refused.value.message
    assert list(local_rse.rglob("*")) == []


def test_storage_errors_never_show_server_paths(tmp_path: Path) -> None:
    where = str(tmp_path / "rse" / "user.a" / "ab" / "cd" / "f.txt")
    raw = f"writing file://{where} failed: [Errno 36] File name too long: '{where}.vre-part-3'"
    message = StorageError(raw).message
    assert str(tmp_path) not in message and "f.txt" in message
    assert scrub_paths("reading root://host:1094//data/x failed") == (
        "reading root://host:1094//data/x failed"
    )
    assert scrub_paths("moving s3://bucket/key into place") == "moving s3://bucket/key into place"


def test_a_storage_failure_through_upload_shows_no_path(
    sessions: sessionmaker[Session], root: Account, alice: Account, alice_scope: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the RSE's directory should be")
    with transaction(sessions) as session:
        rses.add(session, root, "BROKEN", (blocker / "rse").as_uri(), {})
    with pytest.raises(StorageError) as failed:
        upload.upload(sessions, alice, alice_scope, "f.txt", "BROKEN", [b"data"])
    assert str(tmp_path) not in failed.value.message, failed.value.message
    assert str(tmp_path) not in str(failed.value)
