"""``reana.yaml``: parse and validate a REANA analysis specification, expand parameters.

The verdict (valid or not) is the one ``reana-client validate`` 0.9.6 gives, so what works
with REANA works here; ``tests/workflows/test_spec.py`` runs both on a corpus and compares.
What reana-client warns about (unknown keys, unused parameters, ``sudo``) is a warning here;
what makes it exit 1 is an error, with a message naming the key path. Its verdict comes from
its JSON schema (any violation but an unknown key), from loading the workflow first (serial
needs ``specification.steps``, checked again by the serial engine's schema: memory limit
pattern, ``htcondor_max_runtime``, ``kubernetes_uid``; cwl/snakemake need ``file``) and from
its operational options table. All three are mirrored.

vre is stricter where reana-client accepts: ``inputs``/``outputs`` paths must be relative and
stay in the workspace (``/etc/passwd``, ``../x`` are refused: we copy them in and out);
``rucio(...)`` entries, plain strings to reana-client, must be well formed: in ``inputs.files``
``rucio(INSTANCE, SCOPE, NAME)`` stages that DID in, in ``outputs.files``
``rucio(INSTANCE, SCOPE, PATH[, rse=RSE][, dataset=D])`` uploads that workspace file after
success, and ``directories`` may not hold them; ``type: yadage`` is refused (no engine here).
Not mirrored: reana-client runs ``cwltool``/``snakemake`` on the workflow file and loads the
``inputs.parameters.input`` file; we do not (a broken CWL file or Snakefile fails when the run
starts). Given ``base_dir`` (the directory of the ``reana.yaml``; reana-client uses its working
directory), the cwl/snakemake ``workflow.file`` and ``inputs.parameters.input`` must exist.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from vre.workflows.reana_schema import (
    COMPUTE_BACKENDS,
    DANGEROUS,
    HTCONDOR_FLAVOURS,
    KINDS,
    MEMORY_LIMIT,
    OPTIONS,
    RESOURCES,
    SECTIONS,
    STEP,
    STEP_ENGINE,
    TOP,
    TYPE_NAMES,
    WORKFLOW,
    WORKFLOW_TYPES,
)
from vre.workflows.spec_text import SpecError, canonical, load

Doc = dict[Any, Any]
MAX_STEPS = 1000  # steps of a serial workflow: each becomes a row and a process


_RUCIO = re.compile(r"\s*rucio\((.*)\)\s*", re.DOTALL)
_RUCIO_PART = re.compile(r"[^\s(),=]+")
_PARAM_USE = re.compile(r"\$(?:\{([_A-Za-z][_A-Za-z0-9]*)\}|([_A-Za-z][_A-Za-z0-9]*))")


@dataclass
class Step:
    """One serial step; ``raw`` keeps every key (``kubernetes_*``, ``voms_proxy``, ...)."""

    name: str
    commands: list[str]
    environment: str | None
    compute_backend: str | None
    timeout: int | None  # kubernetes_job_timeout, in seconds
    rucio: bool
    raw: Doc


@dataclass
class RucioInput:
    """``rucio(INSTANCE, SCOPE, NAME)`` in ``inputs.files``: stage that DID in."""

    instance: str
    scope: str
    name: str


@dataclass
class RucioOutput:
    """``rucio(INSTANCE, SCOPE, PATH[, rse=][, dataset=])``: upload PATH after success."""

    instance: str
    scope: str
    path: str
    rse: str | None
    dataset: str | None


@dataclass
class Spec:
    """A valid specification; ``rucio(...)`` entries are split from plain workspace paths."""

    version: str | None
    workflow_type: str
    steps: list[Step]  # serial only, else []
    workflow_file: str | None
    specification: Doc | None
    input_files: list[str]
    input_directories: list[str]
    rucio_inputs: list[RucioInput]
    parameters: dict[str, Any]
    options: dict[str, Any]
    output_files: list[str]
    output_directories: list[str]
    rucio_outputs: list[RucioOutput]
    retention_days: dict[str, int]
    warnings: list[str]
    raw: Doc

    def digest(self) -> str:
        """sha256 of the canonical JSON of ``raw``: names this exact specification in provenance."""
        text = json.dumps(canonical(self.raw), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def parse(text: str, *, base_dir: str | Path | None = None) -> Spec:
    """Parse YAML text into a :class:`Spec`; raise :class:`SpecError` listing every error."""
    return from_document(load(text), base_dir=base_dir)


def from_document(document: Any, *, base_dir: str | Path | None = None) -> Spec:
    """A :class:`Spec` from an already-loaded document (a run's stored specification).

    Validation sees the document as YAML gave it (the verdict is reana-client's); the
    Spec keeps its JSON form, which is what a run stores."""
    errors, warnings = validate(document, base_dir=base_dir)
    if errors:
        raise SpecError(errors)
    return _build(canonical(document), warnings)


def _tname(value: Any) -> str:
    return TYPE_NAMES.get(type(value).__name__, type(value).__name__)


def _is(value: Any, kind: str) -> bool:
    """jsonschema's type semantics: ``1.0`` is an integer, ``true`` is not."""
    if kind == "int":
        if isinstance(value, float):
            return value.is_integer()
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(
        value, {"str": str, "bool": bool, "map": dict, "strs": list}.get(kind, object)
    )


class _Checker:
    """Collects errors and warnings, each prefixed with the key path it is about."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where or '(top level)'}: {message}")

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{where or '(top level)'}: {message}")

    def mapping(self, value: Doc, where: str, known: Doc, engine: Doc | None = None) -> None:
        """Type-check the known keys of ``value``; an unknown key is only a warning."""
        engine = engine or {}
        for key, item in value.items():
            path, kind = f"{where}.{key}" if where else str(key), known.get(key, engine.get(key))
            if kind is None or key in engine:
                self.warn(path, "unexpected key, ignored")
            if kind is not None and not _is(item, kind):
                self.error(path, f"must be {KINDS[kind].replace('_', ' ')}, got {_tname(item)}")
            elif kind == "strs":
                for i, entry in enumerate(item):
                    if not isinstance(entry, str):
                        self.error(f"{path}[{i}]", f"must be a string, got {_tname(entry)}")

    def required(self, value: Doc, where: str, key: str, why: str = "") -> bool:
        if key not in value:
            self.error(where, f"{key!r} is required{why}")
        return key in value


def validate(document: Any, *, base_dir: str | Path | None = None) -> tuple[list[str], list[str]]:
    """Return ``(errors, warnings)`` for a loaded ``reana.yaml``; never raises."""
    check = _Checker()
    if not isinstance(document, dict):
        check.error("", f"the specification must be a mapping, got {_tname(document)}")
        return check.errors, check.warnings
    check.mapping(document, "", TOP)
    for name, known in SECTIONS.items():
        if isinstance(document.get(name), dict):
            check.mapping(document[name], name, known)
    workflow, wtype = document.get("workflow"), None
    if check.required(document, "", "workflow") and isinstance(workflow, dict):
        check.mapping(workflow, "workflow", WORKFLOW)
        wtype = workflow.get("type")
        if check.required(workflow, "workflow", "type") and isinstance(wtype, str):
            if wtype not in WORKFLOW_TYPES:
                check.error("workflow.type", f"must be one of {WORKFLOW_TYPES}, got {wtype!r}")
            elif wtype == "yadage":
                check.error("workflow.type", "'yadage' is not supported by vre")
        _check_resources(check, workflow.get("resources"))
    inputs, parameters = document.get("inputs"), dict[str, Any]()
    if "inputs" not in document:
        check.warn("inputs", "missing: the workflow has no inputs")
    elif isinstance(inputs, dict):
        given = inputs.get("parameters")
        parameters = given if isinstance(given, dict) else {}
        _check_entries(check, inputs, "inputs")
        _check_options(check, inputs.get("options"), wtype)
    if not isinstance(workflow, dict):
        pass  # reported above: 'workflow' is required and a mapping
    elif wtype == "serial":
        _check_serial(check, workflow, parameters)
    elif wtype in ("cwl", "snakemake"):
        _check_file_workflow(check, workflow, parameters, Path(base_dir) if base_dir else None)
    if isinstance(document.get("outputs"), dict):
        _check_entries(check, document["outputs"], "outputs")
    space = document.get("workspace")
    retention = space.get("retention_days") if isinstance(space, dict) else None
    if isinstance(retention, dict):
        if not retention:
            check.error("workspace.retention_days", "must contain at least one rule")
        for pattern, days in retention.items():
            if str(pattern).startswith("/") or ".." in str(pattern).split("/"):
                check.error(f"workspace.retention_days.{pattern}", "must stay inside the workspace")
            elif not str(pattern).strip(" ./"):
                where = f"workspace.retention_days.{pattern!r}"
                check.error(where, "must name files, not the whole workspace")
            if not _is(days, "int") or days < 0:
                check.error(
                    f"workspace.retention_days.{pattern}", f"must be an integer >= 0, got {days!r}"
                )
    return check.errors, check.warnings


def _check_resources(check: _Checker, resources: Any) -> None:
    if not isinstance(resources, dict):
        return
    check.mapping(resources, "workflow.resources", RESOURCES)
    cvmfs = resources.get("cvmfs")
    if isinstance(cvmfs, list):
        for i, repo in enumerate(cvmfs):  # REANA's pattern is anchored at the start only
            if isinstance(repo, str) and not (len(repo) <= 60 and re.match("[A-Za-z0-9]", repo)):
                check.error(f"workflow.resources.cvmfs[{i}]", f"invalid CVMFS repository {repo!r}")
        if len({json.dumps(canonical(r), sort_keys=True) for r in cvmfs}) != len(cvmfs):
            check.error("workflow.resources.cvmfs", "repositories must be unique")


def _check_path(check: _Checker, where: str, entry: str) -> None:
    """vre-only rule: a workspace path must be relative and must not escape the workspace."""
    norm = posixpath.normpath(entry) if entry.strip() else ""
    if not norm:
        check.error(where, "must not be empty")
    elif norm.startswith("/") or re.match(r"[A-Za-z]:[\\/]", entry):
        check.error(where, f"{entry!r} must be a path relative to the workspace")
    elif norm == ".." or norm.startswith("../"):
        check.error(where, f"{entry!r} escapes the workspace")


def _check_entries(check: _Checker, section: Doc, name: str) -> None:
    """Paths and ``rucio(...)`` entries of ``inputs``/``outputs`` (vre-only rules)."""
    for key in ("files", "directories"):
        entries = section.get(key)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            where = f"{name}.{key}[{i}]"
            if not isinstance(entry, str):
                continue
            if not is_rucio(entry):
                _check_path(check, where, entry)
            elif key == "directories":
                check.error(where, f"{entry!r}: rucio(...) is only supported in {name}.files")
            else:
                try:
                    if name == "outputs":
                        _check_path(check, where, parse_rucio_output(entry).path)
                    else:
                        parse_rucio_input(entry)
                except SpecError as exc:
                    check.errors.extend(f"{where}: {message}" for message in exc.errors)


def _check_options(check: _Checker, options: Any, wtype: Any) -> None:
    for key in options if isinstance(options, dict) else ():
        if key not in OPTIONS:
            check.error(f"inputs.options.{key}", f"unknown operational option {key!r}")
        elif isinstance(wtype, str) and wtype not in OPTIONS[key].split(","):
            check.error(f"inputs.options.{key}", f"not supported for {wtype} workflows")


def _check_serial(check: _Checker, workflow: Doc, parameters: Doc) -> None:
    """reana-client's schema and REANA's serial engine schema, both applied to the steps."""
    spec, where = workflow.get("specification"), "workflow.specification"
    if not check.required(workflow, "workflow", "specification", " for serial workflows"):
        return
    if not isinstance(spec, dict):
        return check.error(where, f"must be a mapping, got {_tname(spec)}")
    check.mapping(spec, where, {"steps": "any"})
    steps = spec.get("steps")
    if not check.required(spec, where, "steps"):
        return
    if not isinstance(steps, list) or not steps:
        got = "an empty list" if steps == [] else _tname(steps)
        return check.error(f"{where}.steps", f"must be a non-empty list, got {got}")
    if len(steps) > MAX_STEPS:  # vre-only: each step is a row and a process
        return check.error(f"{where}.steps", f"at most {MAX_STEPS} steps, got {len(steps)}")
    used: set[str] = set()
    for i, step in enumerate(steps):
        at = f"{where}.steps[{i}]"
        if not isinstance(step, dict):
            check.error(at, f"must be a mapping, got {_tname(step)}")
            continue
        check.mapping(step, at, STEP, STEP_ENGINE)
        check.required(step, at, "environment")
        commands = step.get("commands")
        if check.required(step, at, "commands") and commands == []:
            check.error(f"{at}.commands", "must contain at least one command")
        backend, memory = step.get("compute_backend"), step.get("kubernetes_memory_limit")
        if isinstance(backend, str) and backend not in COMPUTE_BACKENDS:
            check.error(f"{at}.compute_backend", f"{backend!r} is not one of {COMPUTE_BACKENDS}")
        if isinstance(memory, str) and not MEMORY_LIMIT.search(memory):
            check.error(f"{at}.kubernetes_memory_limit", f"{memory!r} is not like 256Mi or 2Gi")
        runtime = step.get("htcondor_max_runtime") or "0"
        if isinstance(runtime, str) and not runtime.isdigit() and runtime not in HTCONDOR_FLAVOURS:
            check.error(f"{at}.htcondor_max_runtime", "must be seconds or a job flavour")
        for j, command in enumerate(commands if isinstance(commands, list) else []):
            if isinstance(command, str):
                used |= _check_command(check, f"{at}.commands[{j}]", command, parameters)
    for name in parameters:
        if str(name) not in used:
            check.warn(f"inputs.parameters.{name}", "does not seem to be used")


def _check_command(check: _Checker, where: str, command: str, parameters: Doc) -> set[str]:
    """Warnings as reana-client gives them; returns the parameter names the command uses."""
    for operation in DANGEROUS:
        if operation in command:
            check.warn(where, f"{operation.strip()!r} might be dangerous")
    used = set()
    for braced, bare in _PARAM_USE.findall(command.replace("$$", "")):
        used.add(braced or bare)
        if braced and braced not in parameters:
            check.warn(where, f"parameter {braced!r} is not defined in inputs.parameters")
    return used


def _check_file_workflow(check: _Checker, workflow: Doc, params: Doc, base: Path | None) -> None:
    """cwl/snakemake: reana-client loads ``file`` and the ``input`` parameters file."""
    file, wtype = workflow.get("file"), workflow["type"]
    has_file = check.required(workflow, "workflow", "file", f" for {wtype} workflows")
    if has_file and base and isinstance(file, str) and not (base / file).is_file():
        check.error("workflow.file", f"{file!r} does not exist")
    entry = params.get("input")
    if "input" in params and not isinstance(entry, str):
        check.error("inputs.parameters.input", f"must be a file name, got {_tname(entry)}")
    elif isinstance(entry, str) and base and not (base / entry).is_file():
        check.error("inputs.parameters.input", f"{entry!r} does not exist")


def is_rucio(entry: str) -> bool:
    """True if a ``files`` entry is a ``rucio(...)`` reference, not a workspace path."""
    return entry.strip().startswith("rucio(")


def _rucio_parts(entry: str, keys: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Split ``rucio(a, b, c, k=v)``; a malformed entry raises SpecError naming it."""
    match = _RUCIO.fullmatch(entry)
    if not match:
        raise SpecError([f"{entry!r}: malformed rucio(...) entry (no closing ')')"])
    positional: list[str] = []
    options: dict[str, str] = {}
    for part in match.group(1).split(","):
        key, eq, value = (s.strip() for s in part.partition("="))
        text, allowed = (value if eq else key), ", ".join(keys) or "none"
        checks = (
            (not eq and options, f"{key!r} comes after a key=value option"),
            (eq and key not in keys, f"unknown option {key!r} (allowed: {allowed})"),
            (eq and key in options, f"option {key!r} given twice"),
            (not text, "empty part"),
            (not _RUCIO_PART.fullmatch(text), f"invalid part {text!r}"),
        )
        for failed, problem in checks:
            if failed:
                raise SpecError([f"{entry!r}: {problem}"])
        if eq:
            options[key] = value
        else:
            positional.append(key)
    if len(positional) != 3:
        raise SpecError([f"{entry!r}: rucio(...) takes 3 parts, got {len(positional)}"])
    return positional, options


def parse_rucio_input(entry: str) -> RucioInput:
    """``rucio(INSTANCE, SCOPE, NAME)`` -> :class:`RucioInput`; SpecError if malformed."""
    (instance, scope, name), _ = _rucio_parts(entry, ())
    return RucioInput(instance, scope, name)


def parse_rucio_output(entry: str) -> RucioOutput:
    """``rucio(INSTANCE, SCOPE, PATH[, rse=RSE][, dataset=D])`` -> :class:`RucioOutput`."""
    (instance, scope, path), options = _rucio_parts(entry, ("rse", "dataset"))
    return RucioOutput(instance, scope, path, options.get("rse"), options.get("dataset"))


def substitute(command: str, parameters: Mapping[str, Any]) -> str:
    """Expand ``${name}`` and ``$name`` with parameter values, as REANA's serial engine does.

    REANA uses :class:`string.Template`: values are rendered with ``str()`` and ``$$`` becomes
    ``$`` (the escape reana.yaml authors already write). Where REANA fails the run instead (an
    unknown name, or ``$`` not followed by a name: ``$1``, ``$(pwd)``), the text is left as is,
    so bash sees it.
    """
    return Template(command).safe_substitute({str(k): v for k, v in parameters.items()})


def _step(index: int, raw: Doc) -> Step:
    timeout = raw.get("kubernetes_job_timeout")
    return Step(
        name=raw.get("name") or str(index),
        commands=list(raw["commands"]),
        environment=raw.get("environment"),
        compute_backend=raw.get("compute_backend"),
        timeout=None if timeout is None else int(timeout),
        rucio=bool(raw.get("rucio", False)),
        raw=raw,
    )


def _build(document: Doc, warnings: list[str]) -> Spec:
    workflow, inputs = document["workflow"], document.get("inputs") or {}
    outputs = document.get("outputs") or {}
    in_files, out_files = inputs.get("files", []), outputs.get("files", [])
    spec = workflow.get("specification")
    serial = workflow["type"] == "serial"
    retention = (document.get("workspace") or {}).get("retention_days") or {}
    return Spec(
        version=document.get("version"),
        workflow_type=workflow["type"],
        steps=[_step(i, s) for i, s in enumerate(spec["steps"])] if serial else [],
        workflow_file=workflow.get("file"),
        specification=spec if isinstance(spec, dict) else None,
        input_files=[f for f in in_files if not is_rucio(f)],
        input_directories=list(inputs.get("directories", [])),
        rucio_inputs=[parse_rucio_input(f) for f in in_files if is_rucio(f)],
        parameters={str(k): v for k, v in (inputs.get("parameters") or {}).items()},
        options=dict(inputs.get("options") or {}),
        output_files=[f for f in out_files if not is_rucio(f)],
        output_directories=list(outputs.get("directories", [])),
        rucio_outputs=[parse_rucio_output(f) for f in out_files if is_rucio(f)],
        retention_days={str(k): int(v) for k, v in retention.items()},
        warnings=warnings,
        raw=document,
    )
