"""reana.yaml parsing and validation, with a parity test against the real reana-client.

The corpus in ``specs/`` holds valid and invalid specifications. Each file starts with
``# expect: valid|invalid``; ``# parity: vre-stricter`` marks a case reana-client accepts and
vre refuses on purpose (paths outside the workspace, malformed ``rucio(...)``), which the
parity test checks the other way round. reana-client 0.9.6 lives in ``.venv-clients``
(``make test`` creates it); without it the parity tests fail, they never skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vre.errors import Invalid
from vre.workflows.spec import (
    RucioInput,
    RucioOutput,
    SpecError,
    is_rucio,
    parse,
    parse_rucio_input,
    parse_rucio_output,
    substitute,
    validate,
)

ROOT = Path(__file__).resolve().parents[2]
CLIENTS_BIN = ROOT / ".venv-clients" / "bin"
SPECS = Path(__file__).parent / "specs"
CORPUS = sorted(SPECS.glob("*.yaml"))
# The real CLI runs on these too (one process each, ~1.5 s): valid, warning-only, invalid.
CLI_SAMPLES = (
    "valid-serial-full.yaml",
    "warn-unknown-top-level-key.yaml",
    "invalid-step-without-commands.yaml",
)

# Runs inside the clients venv: validates every file exactly as `reana-client validate -f`
# does (same function, same exception handling: any exception or non-zero exit is "invalid"),
# from the file's directory, and prints {path: {"exit": 0|1, "output": ...}} as JSON.
BATCH = r"""
import contextlib, io, json, logging, os, sys
real_stdout = os.dup(1)
devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(devnull, 1)
os.dup2(devnull, 2)
logging.disable(logging.CRITICAL)
from reana_client.utils import load_validate_reana_spec
verdicts = {}
for path in sys.argv[1:]:
    buffer = io.StringIO()
    os.chdir(os.path.dirname(path))
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            load_validate_reana_spec(path)
            code = 0
        except SystemExit as exc:
            code = 0 if exc.code in (None, 0) else 1
        except Exception as exc:
            code = 1
            buffer.write(f"{type(exc).__name__}: {exc}")
    verdicts[path] = {"exit": code, "output": buffer.getvalue()}
os.write(real_stdout, json.dumps(verdicts).encode())
"""

SERIAL = """
workflow:
  type: serial
  specification:
    steps:
      - environment: docker.io/library/bash:5
        commands: [echo hi]
"""


def serial(*steps: dict[str, object]) -> dict[str, object]:
    return {"workflow": {"type": "serial", "specification": {"steps": list(steps)}}}


def header(path: Path) -> dict[str, str]:
    """The ``# key: value`` lines at the top of a corpus file."""
    fields = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, sep, value = line[1:].partition(":")
        if sep and key.strip() in ("expect", "parity"):
            fields[key.strip()] = value.strip()
    return fields


def our_verdict(path: Path) -> tuple[bool, list[str]]:
    """(valid, errors) for a corpus file, validated relative to its own directory."""
    try:
        parse(path.read_text(), base_dir=path.parent)
    except SpecError as exc:
        return False, exc.errors
    return True, []


def clients_env(home: Path) -> dict[str, str]:
    if not (CLIENTS_BIN / "reana-client").exists():
        pytest.fail(
            f"{CLIENTS_BIN.parent} with reana-client 0.9.6 is missing: `make test` creates it "
            "(target `clients`)"
        )
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONWARNINGS="ignore", HOME=str(home))
    env["PATH"] = f"{CLIENTS_BIN}{os.pathsep}{env.get('PATH', '')}"  # cwltool, snakemake
    return env


@pytest.fixture(scope="module")
def corpus_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the corpus: snakemake and cwltool write next to the files they validate."""
    target = tmp_path_factory.mktemp("corpus") / "specs"
    shutil.copytree(SPECS, target)
    return target


@pytest.fixture(scope="module")
def reana_verdicts(corpus_copy: Path) -> dict[str, int]:
    """reana-client's exit code for every corpus file, from one clients-venv process."""
    env = clients_env(corpus_copy.parent / "home")
    files = [str(corpus_copy / path.name) for path in CORPUS]
    done = subprocess.run(
        [str(CLIENTS_BIN / "python"), "-c", BATCH, *files],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    return {Path(path).name: result["exit"] for path, result in results.items()}


def test_corpus_is_big_enough_and_labelled() -> None:
    assert len(CORPUS) >= 20
    for path in CORPUS:
        assert header(path).get("expect") in ("valid", "invalid"), path.name


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_expectation(path: Path) -> None:
    valid, errors = our_verdict(path)
    assert valid == (header(path)["expect"] == "valid"), errors


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_parity_with_reana_client(path: Path, reana_verdicts: dict[str, int]) -> None:
    ours, errors = our_verdict(path)
    theirs = reana_verdicts[path.name] == 0
    if header(path).get("parity") == "vre-stricter":
        assert theirs and not ours, f"documented as vre-stricter: reana={theirs} vre={ours}"
    else:
        assert ours == theirs, f"reana-client valid={theirs}, vre valid={ours}: {errors}"


def test_reana_client_cli_agrees(corpus_copy: Path, reana_verdicts: dict[str, int]) -> None:
    """The real `reana-client validate -f` CLI gives the batch's (and our) verdicts."""
    env = clients_env(corpus_copy.parent / "home")

    def run(name: str) -> int:
        command = [str(CLIENTS_BIN / "reana-client"), "validate", "-f", name]
        return subprocess.run(
            command, cwd=corpus_copy, env=env, capture_output=True, timeout=120
        ).returncode

    with ThreadPoolExecutor(2) as pool:
        codes = dict(zip(CLI_SAMPLES, pool.map(run, CLI_SAMPLES), strict=True))
    assert set(codes.values()) == {0, 1}
    for name, code in codes.items():
        assert code == reana_verdicts[name], name
        assert (code == 0) == our_verdict(SPECS / name)[0], name


# --- parse -----------------------------------------------------------------------------------


def test_parse_full_specification() -> None:
    spec = parse((SPECS / "valid-serial-full.yaml").read_text())
    assert spec.version == "0.9.3"
    assert spec.workflow_type == "serial"
    assert spec.input_files == ["code/fit.py"]
    assert spec.rucio_inputs == [RucioInput("local", "gw", "mdc1")]
    assert spec.input_directories == ["data"]
    assert spec.parameters == {"events": 1000, "model": "gauss"}
    assert spec.options == {"CACHE": "off", "TARGET": "fit"}
    assert spec.output_files == ["results/fit.txt"]
    assert spec.rucio_outputs == [
        RucioOutput("local", "user.jdoe", "results/fit.txt", "CERN-DISK", "fits")
    ]
    assert spec.output_directories == ["results"]
    assert spec.retention_days == {"data/*": 1, "results/**/*": 30}
    [step] = spec.steps
    assert step.name == "fit"
    assert step.environment == "docker.io/library/python:3.11-slim"
    assert step.compute_backend == "kubernetes"
    assert step.timeout == 600
    assert step.rucio is True
    assert step.raw["kubernetes_memory_limit"] == "2Gi"
    assert step.commands == [
        "python code/fit.py --events ${events} --model $model > results/fit.txt"
    ]
    assert spec.specification is not None and spec.workflow_file is None
    assert spec.warnings == []


def test_parse_defaults_and_warnings() -> None:
    spec = parse(SERIAL + "title: x\n")
    assert spec.steps[0].name == "0"
    assert spec.steps[0].timeout is None and spec.steps[0].compute_backend is None
    assert spec.input_files == spec.rucio_inputs == spec.output_files == []
    assert spec.parameters == {} and spec.retention_days == {}
    assert "title: unexpected key, ignored" in spec.warnings
    assert any(w.startswith("inputs:") for w in spec.warnings)


def test_integer_semantics_follow_jsonschema() -> None:
    text = SERIAL.replace("commands:", "kubernetes_job_timeout: 60.0\n        commands:")
    assert parse(text).steps[0].timeout == 60
    step = {"environment": "x", "commands": ["a"], "kubernetes_job_timeout": True}
    errors, _ = validate(serial(step))
    assert errors == [
        "workflow.specification.steps[0].kubernetes_job_timeout: must be an integer, got boolean"
    ]


def test_error_messages_name_the_key() -> None:
    with pytest.raises(SpecError) as caught:
        parse((SPECS / "invalid-step-without-commands.yaml").read_text())
    assert caught.value.errors == ["workflow.specification.steps[1]: 'commands' is required"]
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, Invalid)
    assert "steps[1]" in str(caught.value)


def test_all_errors_are_reported() -> None:
    errors, _ = validate(
        {
            "version": 1,
            "inputs": {"files": ["a", 2], "parameters": []},
            "workflow": {"type": "serial", "specification": {"steps": [{"commands": "x"}]}},
            "workspace": {"retention_days": {"*.log": -2}},
        }
    )
    assert errors == [
        "version: must be a string, got integer",
        "inputs.files[1]: must be a string, got integer",
        "inputs.parameters: must be a mapping, got list",
        "workflow.specification.steps[0].commands: must be a list of strings, got string",
        "workflow.specification.steps[0]: 'environment' is required",
        "workspace.retention_days.*.log: must be an integer >= 0, got -2",
    ]


def test_bad_yaml_reports_the_line() -> None:
    with pytest.raises(SpecError) as caught:
        parse("workflow:\n  type: serial\n  specification: [\n")
    [message] = caught.value.errors
    assert message.startswith("invalid YAML at line 4")


@pytest.mark.parametrize(
    "document",
    [
        None,
        [],
        "workflow",
        {"workflow": None},
        {"workflow": {"type": ["serial"]}},
        {"workflow": {"type": "serial", "specification": {"steps": [None, 3, {"commands": None}]}}},
        {"workflow": {"type": "serial", "specification": {"steps": "abc"}}},
        {"workflow": {"type": "cwl"}, "inputs": {"parameters": {"input": 3}, "options": [1]}},
        {"workflow": {"type": "serial", "resources": {"cvmfs": [1, 1, "", "-x"]}}},
        {
            "inputs": {"files": [None, {"a": 1}]},
            "outputs": None,
            "workspace": {"retention_days": 1},
        },
    ],
)
def test_validate_never_raises_on_garbage(document: object) -> None:
    errors, _ = validate(document)
    assert errors and all(isinstance(e, str) and ": " in e for e in errors)


def test_unknown_keys_are_warnings_at_every_level() -> None:
    errors, warnings = validate(
        {
            "extra": 1,
            "inputs": {"filez": []},
            "workflow": {
                "type": "serial",
                "x": 1,
                "specification": {
                    "steps": [
                        {"environment": "e", "commands": ["c"], "kubernetes_uid": 1000, "y": 2}
                    ],
                    "z": 3,
                },
            },
        }
    )
    assert errors == []
    for key in (
        "extra",
        "inputs.filez",
        "workflow.x",
        "workflow.specification.z",
        "workflow.specification.steps[0].kubernetes_uid",
        "workflow.specification.steps[0].y",
    ):
        assert f"{key}: unexpected key, ignored" in warnings


def test_engine_only_step_keys_are_type_checked() -> None:
    step = {"environment": "e", "commands": ["c"], "kubernetes_uid": "root"}
    errors, _ = validate(serial(step))
    assert errors == [
        "workflow.specification.steps[0].kubernetes_uid: must be an integer, got string"
    ]


def test_parameter_and_danger_warnings() -> None:
    text = SERIAL.replace("[echo hi]", '["sudo echo ${a} ${b} $$c"]')
    spec = parse(text.replace("workflow:", "inputs:\n  parameters: {a: 1, unused: 2}\nworkflow:"))
    assert spec.warnings == [
        "workflow.specification.steps[0].commands[0]: 'sudo' might be dangerous",
        "workflow.specification.steps[0].commands[0]: parameter 'b' is not defined in "
        "inputs.parameters",
        "inputs.parameters.unused: does not seem to be used",
    ]


def test_memory_limit_follows_reana_pattern() -> None:
    def errors_for(value: str) -> list[str]:
        step = {"environment": "e", "commands": ["c"], "kubernetes_memory_limit": value}
        return validate(serial(step))[0]

    for good in ("256Mi", "2G", "1.5Gi", "1024", "1.5", "abc8Gi"):
        assert errors_for(good) == [], good
    for bad in ("lots", "2Gb", "1.5 G", "Mi"):
        assert errors_for(bad) == [
            f"workflow.specification.steps[0].kubernetes_memory_limit: {bad!r} is not like "
            "256Mi or 2Gi"
        ]


def test_htcondor_max_runtime() -> None:
    def errors_for(value: str) -> list[str]:
        step = {"environment": "e", "commands": ["c"], "htcondor_max_runtime": value}
        return validate(serial(step))[0]

    assert errors_for("3600") == errors_for("workday") == errors_for("") == []
    assert len(errors_for("1h")) == 1


def test_workflow_types() -> None:
    assert validate({"workflow": {"type": "cwl", "file": "main.cwl"}})[0] == []
    assert validate({"workflow": {"type": "snakemake", "file": "Snakefile"}})[0] == []
    assert validate({"workflow": {"type": "cwl", "specification": {}}})[0] == [
        "workflow: 'file' is required for cwl workflows"
    ]
    assert validate({"workflow": {"type": "serial", "file": "wf.json"}})[0] == [
        "workflow: 'specification' is required for serial workflows"
    ]
    assert validate({"workflow": {"type": "yadage", "file": "wf.yaml"}})[0] == [
        "workflow.type: 'yadage' is not supported by vre"
    ]
    spec = parse("workflow: {type: snakemake, file: Snakefile, specification: [ignored]}")
    assert spec.steps == [] and spec.workflow_file == "Snakefile" and spec.specification is None


def test_workflow_files_must_exist_relative_to_base_dir(tmp_path: Path) -> None:
    text = "inputs: {parameters: {input: in.yml}}\nworkflow: {type: cwl, file: main.cwl}\n"
    assert parse(text).workflow_file == "main.cwl"  # no base_dir: no file system check
    with pytest.raises(SpecError) as caught:
        parse(text, base_dir=tmp_path)
    assert caught.value.errors == [
        "workflow.file: 'main.cwl' does not exist",
        "inputs.parameters.input: 'in.yml' does not exist",
    ]
    (tmp_path / "main.cwl").write_text("cwlVersion: v1.0\n")
    (tmp_path / "in.yml").write_text("message: hi\n")
    assert parse(text, base_dir=tmp_path).parameters == {"input": "in.yml"}


def test_operational_options_per_workflow_type() -> None:
    def errors_for(wtype: str, options: dict[str, str]) -> list[str]:
        return validate({"inputs": {"options": options}, "workflow": {"type": wtype, "file": "f"}})[
            0
        ]

    assert errors_for("cwl", {"TARGET": "step"}) == []
    assert errors_for("snakemake", {"report": "r.html"}) == []
    assert errors_for("cwl", {"CACHE": "off"}) == [
        "inputs.options.CACHE: not supported for cwl workflows"
    ]
    assert errors_for("cwl", {"FAST": "yes"}) == [
        "inputs.options.FAST: unknown operational option 'FAST'"
    ]


# --- vre-stricter: workspace paths and rucio(...) -----------------------------------------------


@pytest.mark.parametrize("entry", ["/etc/passwd", "../x", "a/../../b", "..", "", "C:\\data"])
def test_paths_must_stay_in_the_workspace(entry: str) -> None:
    for section, key in (
        ("inputs", "files"),
        ("inputs", "directories"),
        ("outputs", "files"),
        ("outputs", "directories"),
    ):
        document = {"workflow": {"type": "cwl", "file": "f"}, section: {key: ["ok.txt", entry]}}
        errors, _ = validate(document)
        assert len(errors) == 1 and errors[0].startswith(f"{section}.{key}[1]: "), errors


@pytest.mark.parametrize("entry", ["a/../b", "./data", "results/", "x..y", "."])
def test_relative_paths_inside_the_workspace_are_fine(entry: str) -> None:
    document = {"workflow": {"type": "cwl", "file": "f"}, "outputs": {"directories": [entry]}}
    assert validate(document)[0] == []


def test_rucio_entries() -> None:
    assert is_rucio(" rucio(a, b, c)") and not is_rucio("data/rucio(a).txt")
    assert parse_rucio_input("rucio(local, gw, mdc1)") == RucioInput("local", "gw", "mdc1")
    assert parse_rucio_input("rucio(x,user.jdoe,file/with/slash.root)").name == (
        "file/with/slash.root"
    )
    assert parse_rucio_output("rucio(local, gw, out/h.root)") == RucioOutput(
        "local", "gw", "out/h.root", None, None
    )
    assert parse_rucio_output("rucio(l, s, p, dataset=d, rse=R)") == RucioOutput(
        "l", "s", "p", "R", "d"
    )


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("rucio(local, gw)", "takes 3 parts, got 2"),
        ("rucio(a, b, c, d)", "takes 3 parts, got 4"),
        ("rucio(a, , c)", "empty part"),
        ("rucio(a, b, c", "no closing ')'"),
        ("rucio(a, b, c, rse=)", "empty part"),
        ("rucio(a, b, c, foo=x)", "unknown option 'foo'"),
        ("rucio(a, b, c, rse=X, rse=Y)", "option 'rse' given twice"),
        ("rucio(a, b, rse=X, c)", "'c' comes after a key=value option"),
        ("rucio(a, b c, d)", "invalid part 'b c'"),
        ("rucio(a, (b), c)", "invalid part '(b)'"),
    ],
)
def test_malformed_rucio_outputs(entry: str, problem: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_rucio_output(entry)
    [message] = caught.value.errors
    assert message.startswith(repr(entry)) and problem in message


def test_rucio_errors_in_a_specification_name_the_entry() -> None:
    document = {
        "inputs": {
            "files": ["rucio(a, b, c, rse=X)", "rucio(a, b, c)"],
            "directories": ["rucio(a, b, c)"],
        },
        "workflow": {"type": "cwl", "file": "f"},
        "outputs": {"files": ["rucio(a, b, ../c)", "rucio(a, b, c, rse=X)"]},
    }
    errors, _ = validate(document)
    assert errors == [
        "inputs.files[0]: 'rucio(a, b, c, rse=X)': unknown option 'rse' (allowed: none)",
        "inputs.directories[0]: 'rucio(a, b, c)': rucio(...) is only supported in inputs.files",
        "outputs.files[0]: '../c' escapes the workspace",
    ]


# --- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("echo ${n} $n", "echo 3 3"),
        ("echo ${n}x $nx", "echo 3x $nx"),
        ("echo ${unknown} $HOME", "echo ${unknown} $HOME"),
        ("echo $$n $$HOME", "echo $n $HOME"),
        ("awk '{print $1}' $(pwd) $? $", "awk '{print $1}' $(pwd) $? $"),
        (
            "run --flag=${flag} --ratio=${ratio} --list=${items}",
            "run --flag=True --ratio=0.5 --list=[1, 2]",
        ),
    ],
)
def test_substitute(command: str, expected: str) -> None:
    parameters = {"n": 3, "flag": True, "ratio": 0.5, "items": [1, 2]}
    assert substitute(command, parameters) == expected


def test_substitute_matches_reana_for_known_names() -> None:
    """REANA's serial engine expands with string.Template.substitute: same text when it works."""
    from string import Template

    command = "python fit.py --events ${events} --model $model --out $$OUT"
    parameters = {"events": 10, "model": "gauss"}
    assert substitute(command, parameters) == Template(command).substitute(parameters)


def test_digest_is_canonical() -> None:
    one = parse("version: '1'\n" + SERIAL)
    two = parse(SERIAL + "version: '1'\n")
    three = parse(SERIAL + "version: '2'\n")
    assert one.digest() == two.digest() != three.digest()
    assert len(one.digest()) == 64
    dated = parse(SERIAL + "inputs: {parameters: {when: 2024-01-01, 1: one}}\n")
    assert dated.digest() == dated.digest() and dated.parameters["1"] == "one"
