"""Where a run's step logs live: ``VRE_HOME/run-logs/ACCOUNT/RUN``, outside its workspace.

Nothing of this tree is ever bound into a sandbox or a container, so no step can rewrite
its logs or swap a directory on the way to them for a link that would make the worker
(root) create or remove files elsewhere. The server reads them through
``workspace.open_entry`` all the same (no link, one name, none of its own files).
"""

from __future__ import annotations

import os
from pathlib import Path

LOGS = "run-logs"  # under VRE_HOME, beside "workspaces"


def log_name(index: int, step: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in step)
    return f"{index:03d}-{safe}.log"


def logs_of(workspace: Path) -> Path:
    """The logs' directory of the run whose workspace is ``workspace``."""
    return workspace.parent.parent.parent / LOGS / workspace.parent.name / workspace.name


def log_path(workspace: Path, index: int, step: str) -> Path:
    """Where the worker writes a step's log (the worker's own, never the step's)."""
    return logs_of(workspace) / log_name(index, step)


def make_logs(workspace: Path) -> Path:
    """The run's logs directory and its parents, 0700 whatever the umask."""
    logs = logs_of(workspace)
    for level in (logs.parent.parent, logs.parent, logs):
        level.mkdir(mode=0o700, exist_ok=True)
        os.chmod(level, 0o700)
    return logs
