"""What a killed worker leaves on its host, found and removed by the next one.

A run's secret files live in ``$TMPDIR/vre-secrets-<deployment>-<run id>-*`` while it
executes, and each call to an external Rucio instance writes its credentials to
``$TMPDIR/vre-rucio-*`` for that call alone. A SIGKILLed worker removes neither.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vre.config import Settings
from vre.workflows.backends.runner import deployment

RUCIO_CALLS = "vre-rucio-"


def secrets_prefix(settings: Settings) -> str:
    return f"vre-secrets-{deployment(settings)}-"


def sweep(
    settings: Settings,
    executing: Callable[[set[int]], dict[int, str]],
    now: float | None = None,
) -> int:
    """Remove secret directories of runs no worker executes, and Rucio call
    configurations older than any call may last; returns how many went."""
    base = Path(tempfile.gettempdir())
    prefix = secrets_prefix(settings)
    found: dict[Path, int] = {}
    for path in base.glob(f"{prefix}*"):
        run_id = path.name[len(prefix) :].split("-", 1)[0]
        if run_id.isdigit():
            found[path] = int(run_id)
    alive = executing(set(found.values())) if found else {}
    gone = [path for path, run_id in found.items() if run_id not in alive]
    moment = time.time() if now is None else now
    for path in base.glob(f"{RUCIO_CALLS}*"):
        try:
            if moment - path.stat().st_mtime > settings.rucio_call_timeout + 600:
                gone.append(path)
        except OSError:
            continue
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return len(gone)
