"""Hostile ``reana.yaml``: alias bombs, huge or deep documents, wrong types anywhere.

Each is refused with a message naming the problem (a 400 through the API), quickly, and
what a run stores is the bounded JSON form of what was sent.
"""

from __future__ import annotations

import copy
import json
import time
from datetime import date
from typing import Any

import pytest
import yaml

from tests.fixtures.server import VREServer
from vre.workflows.reana_schema import RESOURCES, SECTIONS, STEP, STEP_ENGINE, TOP, WORKFLOW
from vre.workflows.spec import SpecError, from_document, parse, validate
from vre.workflows.spec_text import MAX_DEPTH

# The 517-byte file of issue 14: 8 levels of 9 aliases each, 9**9 strings once expanded.
BOMB = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{b}: &{b} [{','.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)
BOMB += "workflow: {type: serial, specification: {steps: [{environment: x, commands: [*i]}]}}\n"

WRONG: list[Any] = [
    None,
    0,
    -1,
    1.5,
    float("nan"),
    True,
    "",
    "text",
    [],
    ["a"],
    [1, None, {"k": "v"}],
    {},
    {"k": "v"},
    {"k": [1, {"j": None}]},
    date(2024, 1, 1),
    b"\x00bytes",
    {1, 2},
]


def base() -> dict[str, Any]:
    return {
        "version": "0.9.0",
        "inputs": {
            "files": ["in.txt"],
            "directories": ["data"],
            "parameters": {"x": "1"},
            "options": {"CACHE": "off"},
        },
        "workflow": {
            "type": "serial",
            "resources": {"cvmfs": ["sft.cern.ch"], "kerberos": False},
            "specification": {
                "steps": [{"name": "s", "environment": "busybox", "commands": ["echo ${x}"]}]
            },
        },
        "outputs": {"files": ["out.txt"], "directories": ["results"]},
        "tests": {"files": ["t.yaml"]},
        "workspace": {"root_path": "/w", "retention_days": {"out.txt": 1}},
    }


STEP_PATH = ("workflow", "specification", "steps", 0)
PATHS: list[tuple[Any, ...]] = [
    *[(k,) for k in TOP],
    *[(s, k) for s, keys in SECTIONS.items() for k in keys],
    *[("workflow", k) for k in WORKFLOW],
    *[("workflow", "resources", k) for k in RESOURCES],
    *[(*STEP_PATH, k) for k in (*STEP, *STEP_ENGINE)],
    ("workflow", "specification", "steps"),
    STEP_PATH,
    (*STEP_PATH, "commands", 0),
    ("workflow", "resources", "cvmfs", 0),
    ("inputs", "files", 0),
    ("inputs", "directories", 0),
    ("outputs", "files", 0),
    ("inputs", "parameters", "x"),
    ("inputs", "parameters", "input"),
    ("inputs", "options", "CACHE"),
    ("workspace", "retention_days", "out.txt"),
]


def with_value(path: tuple[Any, ...], value: Any, wtype: str = "serial") -> dict[str, Any]:
    document = base()
    document["workflow"]["type"] = wtype
    if wtype != "serial":
        document["workflow"]["file"] = "workflow.cwl"
    here: Any = document
    for step in path[:-1]:
        here = here[step]
    here[path[-1]] = copy.deepcopy(value)
    return document


def test_the_base_document_is_valid() -> None:
    assert validate(base())[0] == []


@pytest.mark.parametrize("wtype", ["serial", "cwl", "snakemake"])
@pytest.mark.parametrize("path", PATHS, ids=lambda p: ".".join(map(str, p)))
def test_any_wrong_type_anywhere_is_an_error_or_stored_as_json(
    path: tuple[Any, ...], wtype: str
) -> None:
    """Never an exception but SpecError; what passes is JSON the database can store."""
    for value in WRONG:
        document = with_value(path, value, wtype)
        for source in (document, yaml.safe_dump(document)):
            try:
                spec = from_document(source) if isinstance(source, dict) else parse(source)
            except SpecError as exc:
                assert exc.errors and all(": " in e for e in exc.errors), exc.errors
                continue
            stored = json.dumps(spec.raw, allow_nan=False)  # PostgreSQL's JSON takes no NaN
            assert from_document(json.loads(stored)).digest() == spec.digest()


def test_workspace_of_the_wrong_type_names_the_field() -> None:
    with pytest.raises(SpecError) as refused:
        parse(
            "workspace: foo\nworkflow: {type: serial, specification: {steps: [{environment:"
            " x, commands: ['true']}]}}\n"
        )
    assert refused.value.errors == ["workspace: must be a mapping, got string"]


def test_the_alias_bomb_is_refused_before_it_expands() -> None:
    assert len(BOMB) < 700
    start = time.perf_counter()
    with pytest.raises(SpecError) as refused:
        parse(BOMB)
    assert time.perf_counter() - start < 1.0
    assert refused.value.errors == [
        "line 1: YAML anchors (&a) are not allowed in a specification: write the value out"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "workflow: *nowhere\n",  # an alias without its anchor: refused the same way
        "x: !!str &a y\nworkflow: {type: serial}\n",
        "base: &b {type: serial}\nworkflow:\n  <<: *b\n",  # merge keys are aliases too
    ],
)
def test_every_anchor_and_alias_is_refused_naming_its_line(text: str) -> None:
    with pytest.raises(SpecError) as refused:
        parse(text)
    assert refused.value.errors[0].startswith(("line 1: YAML", "line 3: YAML", "invalid YAML"))


def test_size_and_depth_are_capped() -> None:
    with pytest.raises(SpecError, match="VRE_MAX_SPECIFICATION_SIZE"):
        parse("version: '" + "x" * (2 * 1024 * 1024) + "'\n")
    deep = "x: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n"
    with pytest.raises(SpecError, match=f"nested more than {MAX_DEPTH} levels deep"):
        parse(deep)
    steps = [{"environment": "x", "commands": ["true"]} for _ in range(1001)]
    with pytest.raises(SpecError, match="at most 1000 steps"):
        parse(yaml.safe_dump(with_value(("workflow", "specification", "steps"), steps)))


def test_yaml_errors_do_not_echo_a_huge_input() -> None:
    with pytest.raises(SpecError) as refused:
        parse("x: '" + "y" * 500_000)
    assert len(refused.value.message) < 1200


SPEC = yaml.safe_dump(base())


def test_the_api_refuses_the_bomb_and_stores_what_was_sent(vre_server: VREServer) -> None:
    vre_server.add_account("bomber")
    vre_server.add_account("neighbour")
    with vre_server.api("bomber") as api:
        start = time.perf_counter()
        bomb = api.post("/runs", json={"name": "bomb", "specification": BOMB})
        assert bomb.status_code == 400 and bomb.json()["error"] == "invalid"
        assert "YAML anchors (&a) are not allowed" in bomb.json()["message"]
        assert time.perf_counter() - start < 5.0
        wrong = api.post("/runs", json={"name": "wrong", "specification": "workspace: foo\n"})
        assert wrong.status_code == 400, wrong.text
        assert "workspace: must be a mapping, got string" in wrong.json()["message"]
        huge = api.post("/runs", json={"name": "huge", "specification": "x: " + "y" * 2**21})
        assert huge.status_code == 400 and "VRE_MAX_SPECIFICATION_SIZE" in huge.text
        dated = yaml.safe_dump(with_value(("inputs", "parameters", "x"), date(2024, 5, 1)))
        made = api.post("/runs", json={"name": "dated", "specification": dated})
        assert made.status_code == 201, made.text
        assert made.json()["spec_digest"]
    with vre_server.api("neighbour") as api:  # another account's listing stays quick and empty
        start = time.perf_counter()
        assert api.get("/runs").json() == []
        assert time.perf_counter() - start < 5.0


def test_a_spec_over_the_request_limit_never_reaches_the_parser(vre_server: VREServer) -> None:
    with vre_server.api() as api:
        answer = api.post("/runs", json={"name": "big", "specification": "y" * 70 * 2**20})
    assert answer.status_code == 413 and answer.json()["error"] == "too_large"


@pytest.mark.parametrize(
    "number", ["9" * 5000, "0x" + "f" * 5000, "0b" + "1" * 20000, "1:59:" + "59:" * 3000 + "1"]
)
def test_huge_integers_are_a_clear_error(number: str) -> None:
    text = (
        "version: 0.9.0\ninputs: {parameters: {a: NUMBER}}\nworkflow: {type: serial,"
        " specification: {steps: [{name: s, environment: bash, commands: [echo]}]}}\n"
    ).replace("NUMBER", number)
    with pytest.raises(SpecError, match=r"too large|cannot be read"):
        parse(text)
