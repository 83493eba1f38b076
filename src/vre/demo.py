"""Demo for ``vre up --demo``: a public scope, a local RSE, a data set and a run on it.

The data are the ``examples/dilepton`` example's: synthetic dilepton invariant-mass events
(a falling Drell-Yan-like continuum plus a Z' resonance at 750 GeV) in ROOT files, made by
that example's ``code/generate.py`` with a fixed seed, so every laptop sees the same events.
They are registered as ``demo:run00N/events.root`` in the dataset ``demo:dilepton-2024``,
inside the container ``demo:dilepton``, on the RSE ``DEMO-DISK`` under ``$VRE_HOME/storage``.
Then a run ``dilepton.N`` of the example's ``reana.yaml``, owned by root, is queued: the
workers stage the data in, fit, plot and stage the summary out.

The example folder is the single source of its code (the demo uploads the very files a user
runs with ``vre run examples/dilepton/reana.yaml``), so the demo needs a source checkout; an
installation without ``examples/`` gets a clear error before anything is written.

Each object is created only when missing: a second call changes nothing, and a call after an
interrupted one completes the demo.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from vre.config import Settings
from vre.db import transaction
from vre.errors import NotFound
from vre.identity import accounts
from vre.lake import catalogue, rses, scopes, upload
from vre.lake.models import DID, RSE, Scope
from vre.workflows import runs, workspace
from vre.workflows.models import Run

SCOPE, RSE_NAME = "demo", "DEMO-DISK"
DATASET, CONTAINER = "dilepton-2024", "dilepton"
RUNS = (1, 2, 3)
RUN_NAME = "dilepton"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dilepton"


def example_dir(path: Path = EXAMPLE) -> Path:
    """The dilepton example's folder, or NotFound saying where it was looked for."""
    if not (path / "reana.yaml").is_file() or not (path / "code" / "generate.py").is_file():
        raise NotFound(
            f"the demo needs the dilepton example at {path} (reana.yaml, code/generate.py):"
            " run `vre up --demo` from a source checkout of vre"
        )
    return path


def generator(example: Path | None = None) -> types.ModuleType:
    """The example's ``code/generate.py`` as a module (compiled here: no __pycache__ in it)."""
    path = example_dir(example or EXAMPLE) / "code" / "generate.py"
    module = types.ModuleType("vre_demo_dilepton_generate")
    module.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


def example_inputs(example: Path) -> dict[str, bytes]:
    """The workspace files a run of the example starts with: its plain inputs (as ``vre run``
    uploads them), without bytecode caches."""
    document = yaml.safe_load((example / "reana.yaml").read_text()) or {}
    inputs = document.get("inputs") or {}
    found: dict[str, bytes] = {}
    for entry in inputs.get("files") or []:
        if isinstance(entry, str) and not entry.strip().startswith("rucio("):
            found[entry] = (example / entry).read_bytes()
    for directory in inputs.get("directories") or []:
        for item in sorted((example / directory).rglob("*")):
            if item.is_file() and "__pycache__" not in item.parts and item.suffix != ".pyc":
                found[item.relative_to(example).as_posix()] = item.read_bytes()
    return found


def _exists(session: Session, scope: str, name: str) -> bool:
    return session.scalar(select(DID.id).where(DID.scope == scope, DID.name == name)) is not None


def load_demo(sessions: sessionmaker[Session], settings: Settings) -> str:
    """Create what is missing of the demo; on a loaded home, change nothing."""
    example = example_dir()
    made: list[str] = []
    storage_dir = settings.home / "storage" / RSE_NAME
    with transaction(sessions) as session:
        root = accounts.get(session, "root")
        if session.scalar(select(RSE.id).where(RSE.name == RSE_NAME)) is None:
            storage_dir.mkdir(parents=True, exist_ok=True)
            attributes = {"type": "disk", "site": "LOCAL"}
            rses.add(session, root, RSE_NAME, storage_dir.as_uri(), attributes)
            made.append(f"RSE {RSE_NAME} at {storage_dir}")
        if session.get(Scope, SCOPE) is None:
            scopes.add(session, root, SCOPE, public=True)
            made.append(f"public scope '{SCOPE}'")
        if not _exists(session, SCOPE, CONTAINER):
            meta_values = {"experiment": "synthetic", "year": 2024}
            catalogue.add_collection(
                session, root, SCOPE, CONTAINER, "container", meta_values=meta_values
            )
        missing = [r for r in RUNS if not _exists(session, SCOPE, f"run{r:03d}/events.root")]
    if missing:
        generate = generator(example)
        for number in missing:
            events = generate.generate(number)
            upload.upload(
                sessions,
                root,
                SCOPE,
                f"run{number:03d}/events.root",
                RSE_NAME,
                [generate.root_bytes(events)],
                dataset=(SCOPE, DATASET),
                meta_values={
                    "run": number,
                    "kind": "data",
                    "year": 2024,
                    "events": len(events["mll"]),
                },
            )
        made.append(f"{len(missing)} ROOT file(s) in dataset {SCOPE}:{DATASET}")
    with transaction(sessions) as session:
        held = catalogue.contents(session, catalogue.get(session, SCOPE, CONTAINER))
        if (SCOPE, DATASET) not in {(d.scope, d.name) for d in held}:
            catalogue.attach(session, root, SCOPE, CONTAINER, [(SCOPE, DATASET)])
            made.append(f"container {SCOPE}:{CONTAINER}")
    label = _start_example_run(sessions, settings, example)
    if label:
        made.append(f"run {label} of examples/dilepton queued (vre status {label})")
    if not made:
        return f"already loaded (scope '{SCOPE}', RSE {RSE_NAME}, run {RUN_NAME})"
    return ", ".join(made)


def _start_example_run(
    sessions: sessionmaker[Session], settings: Settings, example: Path
) -> str | None:
    """Queue a run of the example as root, unless root has had one (in any state)."""
    with transaction(sessions) as session:
        root = accounts.get(session, "root")
        had = select(Run.id).where(Run.account_id == root.id, Run.name == RUN_NAME).limit(1)
        if session.scalar(had) is not None:
            return None
        run = runs.create(
            session, root, RUN_NAME, (example / "reana.yaml").read_text(), settings.home
        )
        for path, content in example_inputs(example).items():
            workspace.write(Path(run.workspace), path, content)
        # The steps run on this host: this interpreter has numpy, scipy, matplotlib, uproot.
        parameters: dict[str, Any] = {"python": sys.executable}
        return runs.start(session, root, run.label, parameters).label
