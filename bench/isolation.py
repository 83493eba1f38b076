"""What isolating a step costs: one command in the bubblewrap sandbox against the same
command unisolated and against a bare ``bash -c`` from Python (the floor).

  bare        ``subprocess.run(["bash", "-c", CMD])``, N times.
  unisolated  vre's ``local.run_command`` with the unisolated host runner (logs, masking,
              stop and timeout handling), N times.
  sandbox     the same through the default runner: bubblewrap with its namespaces, the
              read-only binds and (as root) ``setpriv`` to the step user, N times.
  hand-over   giving a workspace of F files to the step's user before a run's first step
              (as root; a walk that never follows links), once.

Figures are medians in ms per command, with the ratio to the bare floor; the sandbox's own
cost is sandbox - unisolated.

    .venv/bin/python bench/isolation.py [--commands 200] [--files 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from vre.config import Settings
from vre.workflows.backends import runner, sandbox

COMMAND = "echo step > /dev/null"


def timed(call: object, count: int) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        call()  # type: ignore[operator]
        out.append((time.perf_counter() - start) * 1000)
    return out


def through(kind: str, ws: Path, count: int) -> list[float]:
    environment = runner.StepEnvironment(ws, {"HOME": str(ws)}, {}, ws.parent / "private")
    settings = Settings(home=ws.parent / "home", step_isolation=kind)  # type: ignore[arg-type]
    steps_in = runner.for_settings(settings, environment)
    log = ws / ".vre/logs/000-bench.log"

    def one() -> None:
        outcome = steps_in.run(
            COMMAND, log=log, timeout=60, should_stop=lambda: False, hidden=[], name="bench"
        )
        assert outcome.exit_code == 0, outcome.stderr_tail

    return timed(one, count)


def hand_over(base: Path, files: int) -> float:
    ws = base / "many"
    for i in range(files):
        folder = ws / f"d{i // 1000}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}").write_bytes(b"x")
    user = sandbox.step_user("", "200000-299999", 1) or sandbox.StepUser(os.getuid(), os.getgid())
    start = time.perf_counter()
    sandbox.hand_over(ws, user)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--files", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        os.chmod(base, 0o755)
        ws = base / "ws"
        ws.mkdir()
        bare = timed(lambda: subprocess.run(["bash", "-c", COMMAND], check=True), args.commands)
        unisolated = through("unisolated-host", ws, args.commands)
        boxed = through("sandbox", ws, args.commands)
        handed = hand_over(base, args.files) if os.geteuid() == 0 else None
    floor = statistics.median(bare)
    print(f"one command, median of {args.commands} (ms; ratio to bare bash -c):")
    for name, values in (("bare", bare), ("unisolated", unisolated), ("sandbox", boxed)):
        median = statistics.median(values)
        print(f"  {name:<11} {median:7.2f} ms   x{median / floor:5.2f}")
    cost = statistics.median(boxed) - statistics.median(unisolated)
    print(f"  the sandbox's own cost per command: {cost:.2f} ms")
    if handed is not None:
        print(f"hand-over of a {args.files}-file workspace to the step user: {handed:.0f} ms")


if __name__ == "__main__":
    main()
