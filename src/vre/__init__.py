"""Virtual Research Environment."""

import sys

__version__ = "0.1.0"

# httpx imports its own command line (click, rich, pygments: a quarter of a second) whenever
# click is installed, and the VRE never runs it. Marking that module absent makes httpx take
# its documented fallback for a missing CLI instead, so `vre` and the server start sooner.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
