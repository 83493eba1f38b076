"""Tests for the RSE expression language."""

from __future__ import annotations

import pytest

from vre.lake.expressions import (
    All,
    AttrCmp,
    BinOp,
    ExpressionError,
    Name,
    UnknownRSEError,
    evaluate,
    names_in,
    parse,
)

RSES: dict[str, dict[str, str]] = {
    "CERN-DISK": {"site": "CERN", "type": "DISK", "tier": "0", "freespace": "500", "tape": "false"},
    "CERN-TAPE": {"site": "CERN", "type": "TAPE", "tier": "0", "freespace": "9000", "tape": "True"},
    "DESY-DISK": {"site": "DESY", "type": "DISK", "tier": "1", "freespace": "120.5", "tape": "0"},
    "XRD_1": {"site": "LOCAL", "type": "DISK", "tier": "2", "freespace": "unknown", "tape": "1"},
    "XRD_2": {"site": "LOCAL", "type": "DISK", "tier": "2", "region": "eu-west:1"},
}
ALL = set(RSES)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("CERN-DISK", {"CERN-DISK"}),
        ("XRD_1", {"XRD_1"}),
        ("  XRD_2\t", {"XRD_2"}),
        ("*", ALL),
        (" * ", ALL),
    ],
)
def test_names_and_star(expression: str, expected: set[str]) -> None:
    assert evaluate(expression, RSES) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("site=CERN", {"CERN-DISK", "CERN-TAPE"}),
        ("type=DISK", {"CERN-DISK", "DESY-DISK", "XRD_1", "XRD_2"}),
        ("site=cern", set()),  # string values compare exactly
        ("site=NOWHERE", set()),
        ("missing=x", set()),
        ("region=eu-west:1", {"XRD_2"}),
        ("site = CERN", {"CERN-DISK", "CERN-TAPE"}),
        ("tier=0", {"CERN-DISK", "CERN-TAPE"}),
        ("tape=True", {"CERN-TAPE", "XRD_1"}),
        ("tape=true", {"CERN-TAPE", "XRD_1"}),
        ("tape=TRUE", {"CERN-TAPE", "XRD_1"}),
        ("tape=false", {"CERN-DISK", "DESY-DISK"}),
        ("a.b-c_d=1", set()),
    ],
)
def test_attribute_equality(expression: str, expected: set[str]) -> None:
    assert evaluate(expression, RSES) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("freespace>1000", {"CERN-TAPE"}),
        ("freespace>100", {"CERN-DISK", "CERN-TAPE", "DESY-DISK"}),
        ("freespace<500", {"DESY-DISK"}),
        ("freespace<500.1", {"CERN-DISK", "DESY-DISK"}),
        ("freespace>120.5", {"CERN-DISK", "CERN-TAPE"}),
        ("freespace>-1", {"CERN-DISK", "CERN-TAPE", "DESY-DISK"}),  # 'unknown' never matches
        ("tier<1", {"CERN-DISK", "CERN-TAPE"}),
        ("tier > 1", {"XRD_1", "XRD_2"}),
        ("freespace>.5", {"CERN-DISK", "CERN-TAPE", "DESY-DISK"}),
        ("nothing<10", set()),
    ],
)
def test_numeric_comparison(expression: str, expected: set[str]) -> None:
    assert evaluate(expression, RSES) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("site=CERN&type=DISK", {"CERN-DISK"}),
        ("CERN-DISK|XRD_1", {"CERN-DISK", "XRD_1"}),
        ("type=DISK\\site=LOCAL", {"CERN-DISK", "DESY-DISK"}),
        ("*\\type=DISK", {"CERN-TAPE"}),
        ("*\\CERN-DISK\\CERN-TAPE", {"DESY-DISK", "XRD_1", "XRD_2"}),
        ("CERN-DISK&CERN-TAPE", set()),
        ("XRD_1|XRD_1", {"XRD_1"}),
        ("XRD_1\\XRD_1", set()),
        ("CERN-DISK | XRD_1 & type = DISK", {"CERN-DISK", "XRD_1"}),
    ],
)
def test_operators(expression: str, expected: set[str]) -> None:
    assert evaluate(expression, RSES) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # Left to right: A|B&C is (A|B)&C, not A|(B&C).
        ("CERN-DISK|XRD_1&site=LOCAL", {"XRD_1"}),
        ("CERN-DISK|(XRD_1&site=LOCAL)", {"CERN-DISK", "XRD_1"}),
        ("site=CERN&type=TAPE|XRD_1", {"CERN-TAPE", "XRD_1"}),
        ("site=CERN&(type=TAPE|XRD_1)", {"CERN-TAPE"}),
        ("*\\site=CERN|CERN-DISK", {"CERN-DISK", "DESY-DISK", "XRD_1", "XRD_2"}),
        ("*\\(site=CERN|CERN-DISK)", {"DESY-DISK", "XRD_1", "XRD_2"}),
        ("(((XRD_1)))", {"XRD_1"}),
        ("((type=DISK\\(site=LOCAL|tier=1))|(XRD_2))", {"CERN-DISK", "XRD_2"}),
        (" ( CERN-DISK | XRD_1 ) & ( type = DISK \\ tier > 1 ) ", {"CERN-DISK"}),
    ],
)
def test_precedence_and_parentheses(expression: str, expected: set[str]) -> None:
    assert evaluate(expression, RSES) == expected


def test_parse_tree_is_left_associative() -> None:
    assert parse("A|B&C") == BinOp("&", BinOp("|", Name("A"), Name("B")), Name("C"))
    assert parse("A|(B&C)") == BinOp("|", Name("A"), BinOp("&", Name("B"), Name("C")))
    assert parse("*\\k<3") == BinOp("\\", All(), AttrCmp("k", "<", "3"))


def test_parse_records_positions() -> None:
    node = parse("A | k=v")
    assert isinstance(node, BinOp)
    assert (node.pos, node.left.pos, node.right.pos) == (2, 0, 4)


def test_evaluate_accepts_a_parsed_node() -> None:
    node = parse("site=CERN\\CERN-TAPE")
    assert evaluate(node, RSES) == {"CERN-DISK"}


def test_long_chain_does_not_recurse_deeply() -> None:
    # Text is capped at MAX_LENGTH (tests/lake/test_expression_limits.py); a tree is not.
    node: BinOp | Name = Name("XRD_1")
    for _ in range(5000):
        node = BinOp("|", node, Name("XRD_1"))
    assert evaluate(node, RSES) == {"XRD_1"}


@pytest.mark.parametrize(
    ("expression", "position", "fragment"),
    [
        ("", 0, "empty expression"),
        ("   ", 0, "empty expression"),
        ("A&&B", 2, "expected an RSE name or attribute, got '&'"),
        ("&A", 0, "got '&'"),
        ("A|\\B", 2, "got '\\\\'"),
        ("A$B", 1, "unexpected character '$'"),
        ("A & B # c", 6, "unexpected character '#'"),
        ("A&", 1, "trailing operator '&'"),
        ("A | B \\ ", 6, "trailing operator '\\\\'"),
        ("(A|B", 0, "'(' is never closed"),
        ("A&(B|(C)", 2, "'(' is never closed"),
        ("A)", 1, "')' has no matching '('"),
        ("(A))", 3, "')' has no matching '('"),
        (")", 0, "got ')'"),
        ("()", 1, "got ')'"),
        ("(", 1, "got end of expression"),
        ("A B", 2, "expected an operator, got 'B'"),
        ("(A B)", 3, "expected an operator or ')', got 'B'"),
        ("freespace<abc", 10, "'<' needs a number, got 'abc'"),
        ("freespace > 1e5", 12, "'>' needs a number"),
        ("freespace>", 10, "expected a value after '>', got end of expression"),
        ("key=&A", 4, "expected a value after '='"),
        ("k=v=w", 3, "expected an operator, got '='"),
        ("=5", 0, "got '='"),
        ("_A", 0, "invalid RSE name '_A'"),
        ("A|a.b", 2, "invalid RSE name 'a.b'"),
        ("a:b=1", 0, "invalid attribute key 'a:b'"),
        ("(" * 101 + "A" + ")" * 101, 100, "nested too deeply"),
    ],
)
def test_syntax_errors(expression: str, position: int, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(expression)
    error = info.value
    assert error.position == position
    assert not isinstance(error, UnknownRSEError)
    text = str(error)
    assert fragment in text
    assert f"at position {position}" in text
    assert text.splitlines()[-1] == "  " + " " * position + "^"


def test_error_message_format() -> None:
    with pytest.raises(ExpressionError) as info:
        parse("A&&B")
    assert str(info.value) == (
        "invalid RSE expression 'A&&B' at position 2: "
        "expected an RSE name or attribute, got '&'\n"
        "  A&&B\n"
        "    ^"
    )
    assert isinstance(info.value, ValueError)
    assert info.value.message == "expected an RSE name or attribute, got '&'"


def test_caret_keeps_tabs_aligned() -> None:
    with pytest.raises(ExpressionError) as info:
        parse("A\t&")
    assert str(info.value).splitlines()[-1] == "   \t^"  # pad for "A\t"


def test_evaluate_reports_syntax_errors() -> None:
    with pytest.raises(ExpressionError) as info:
        evaluate("site=CERN&", RSES)
    assert info.value.position == 9


@pytest.mark.parametrize(
    ("expression", "name", "position"),
    [
        ("NOPE", "NOPE", 0),
        ("CERN-DISK|NOPE", "NOPE", 10),
        ("site=CERN & (XRD_1 | GONE) | LATER", "GONE", 21),
        ("*\\cern-disk", "cern-disk", 2),  # names are case-sensitive
    ],
)
def test_unknown_rse(expression: str, name: str, position: int) -> None:
    with pytest.raises(UnknownRSEError) as info:
        evaluate(expression, RSES)
    error = info.value
    assert isinstance(error, ExpressionError)
    assert error.name == name
    assert error.position == position
    assert f"unknown RSE {name!r}" in str(error)
    assert f"at position {position}" in str(error)


def test_unknown_rse_from_node_has_no_source() -> None:
    with pytest.raises(UnknownRSEError) as info:
        evaluate(BinOp("|", Name("XRD_1"), Name("NOPE", 7)), RSES)
    assert str(info.value) == "unknown RSE 'NOPE' (at position 7)"


def test_unknown_attribute_is_not_an_error() -> None:
    assert evaluate("colour=blue", RSES) == set()
    assert evaluate("colour>3|XRD_1", RSES) == {"XRD_1"}


def test_empty_lake() -> None:
    assert evaluate("*", {}) == set()
    assert evaluate("type=DISK", {}) == set()
    with pytest.raises(UnknownRSEError):
        evaluate("A", {})


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("*", set()),
        ("site=CERN&type=DISK", set()),
        ("A", {"A"}),
        ("A|B&(C\\A)|k=v|*", {"A", "B", "C"}),
        ("UNKNOWN-BUT-VALID", {"UNKNOWN-BUT-VALID"}),
    ],
)
def test_names_in(expression: str, expected: set[str]) -> None:
    assert names_in(expression) == expected
    assert names_in(parse(expression)) == expected


def test_names_in_rejects_bad_syntax() -> None:
    with pytest.raises(ExpressionError):
        names_in("A|")


def test_nodes_are_frozen() -> None:
    node = parse("A")
    with pytest.raises(AttributeError):
        node.name = "B"  # type: ignore[misc,union-attr]
