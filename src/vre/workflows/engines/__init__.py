"""Workflow engines: each executes a claimed run of its workflow type.

The run queue (claim, lease, orphans) belongs to ``vre.workflows.runs``; the worker
hands each claimed run to ``execute``, which picks the engine the specification names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from vre.config import Settings

# workflow type (reana.yaml ``workflow.type``) -> the module that executes it
ENGINES = {"serial": "vre.workflows.engines.serial"}


def execute(sessions: sessionmaker[Session], run_id: int, settings: Settings) -> str:
    """Execute a claimed run with its engine; an internal error fails the run."""
    from vre.db import transaction
    from vre.workflows import runs
    from vre.workflows.models import Run

    with transaction(sessions) as session:
        run = session.get(Run, run_id)
        kind = runs.load_spec(run).workflow_type if run is not None else ""
    engine = importlib.import_module(ENGINES.get(kind, ENGINES["serial"]))
    return str(engine.execute_safely(sessions, run_id, settings))
