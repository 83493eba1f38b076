"""Serial workflow runs on one idle ``vre worker``, against snakemake and bash on the same commands.

A real ``vre serve`` (SQLite, temporary VRE_HOME) and one ``vre worker`` subprocess (defaults:
it polls for queued runs every ``run_poll`` = 0.1 s) are started and left idle. Then:

  latency   a one-step run whose first command is ``date +%s.%N > t0``: created, nothing
            uploaded, then ``start_run`` is called (= submit). Latency = t0 - submit, each of
            ``--repeat`` runs its own run. The run's ``started_at`` (set by the worker once it
            has claimed and loaded the run) splits it into submit -> running and running ->
            first command.
  serial    a ``--steps``-step serial run, one trivial command per step (``echo I``): wall time
            from ``start_run`` to ``run_status`` saying finished (polled every ``--poll`` s);
            overhead per step = wall / steps. The steps' own timestamps split it into time
            inside steps (bash and its bookkeeping) and time between steps.

Baselines, measured first, with the vre processes not yet started (same commands, ``--repeat``
times each, fresh directory each time):

  snakemake   ``snakemake --cores 1 --quiet all`` (and ``--cores 2``) on a Snakefile of STEPS
              jobs ``shell: "echo {wildcards.i} > {output}"``, wall time including start-up; its
              per-job overhead without start-up is (T(STEPS) - T(1)) / (STEPS - 1). Snakemake's
              default ``--max-jobs-per-timespan 100/1s`` throttles it, so ``--cores 1`` is also
              timed with that limit lifted.
  bash        one ``bash`` script of the STEPS ``echo`` lines (builtins, no process per
              command), the same script with each line as ``bash -c '...'`` (one process per
              command: the floor for running each command in its own bash), and Python's
              ``subprocess.run(["bash", "-c", ...])`` STEPS times (that floor from Python).
  backend     vre's ``local.run_command`` called in this process STEPS times (no worker, no
              database), and on ``sleep 0.12`` (5 times) against ``subprocess.run``: how late it
              sees a 120 ms command exit (it waits on a thread; ``Popen.wait(timeout=)`` polling
              backs off to 50 ms and saw it ~40 ms late).

Targets (judged on the median): submit -> first command under 0.5 s; vre's overhead per step
no worse than snakemake ``--cores 1``'s per-job overhead excluding its start-up. ``--profile``
(or ``--profile auto``, the default, when the per-step target is missed) runs one more serial
run under py-spy (``/tmp/tools/bin/py-spy`` or on PATH) attached to the worker and prints where
the run thread's wall time went, per step.

    .venv/bin/python bench/workflows.py [--steps 200] [--repeat 3] [--poll 0.05]
        [--profile auto|on|off] [--dir DIR]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vre_server import WorkerProcess, login, start_server, start_worker

from vre.client import Client
from vre.workflows.backends import local

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
TARGET_LATENCY = 0.5  # seconds, start_run -> first command running
PY_SPY_RATE = 500  # samples per second
ENVIRONMENT = "docker.io/library/bash:5.2"
SLEEP = 0.12  # seconds: long enough that a polling wait's back-off would reach 50 ms


# --- helpers -----------------------------------------------------------------------------------
def check(condition: bool, message: str) -> None:
    """Correctness, not time: a benchmark of a wrong answer is worthless."""
    if not condition:
        raise SystemExit(f"benchmark aborted, wrong answer: {message}")


def stamp(value: str | None) -> float:
    """An API timestamp (ISO 8601; naive means UTC) as epoch seconds."""
    check(value is not None, "a timestamp is missing")
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def median(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class Timed:
    """Repeated wall times of one operation (seconds)."""

    label: str
    runs: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.runs)

    @property
    def median(self) -> float:
        return median(self.runs)


def timed(
    label: str, repeat: int, prepare: Callable[[int], Any], command: Callable[[int], Any]
) -> Timed:
    out = Timed(label)
    for i in range(repeat):
        prepare(i)
        start = time.perf_counter()
        command(i)
        out.runs.append(time.perf_counter() - start)
    return out


# --- the vre worker ----------------------------------------------------------------------------
# --- vre runs ----------------------------------------------------------------------------------
def spec(commands: list[list[str]]) -> str:
    """A serial reana.yaml: one step per list of commands."""
    lines = ["version: 0.9.0", "workflow:", "  type: serial", "  specification:", "    steps:"]
    for i, step in enumerate(commands):
        lines += [
            f"      - name: s{i:04d}",
            f"        environment: {ENVIRONMENT}",
            "        commands:",
            *(f"          - {command}" for command in step),
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Finished:
    status: dict[str, Any]
    wall: float  # start_run called -> status seen finished
    submit: float  # epoch, just before start_run
    start_call: float  # seconds the POST /runs/{run}/start took
    polls: list[float]


def run_to_end(client: Client, label: str, poll: float, worker: WorkerProcess) -> Finished:
    polls: list[float] = []
    submit = time.time()
    start = time.perf_counter()
    client.start_run(label)
    start_call = time.perf_counter() - start
    deadline = start + 3600
    while True:
        time.sleep(poll)
        asked = time.perf_counter()
        status = client.run_status(label)
        polls.append(time.perf_counter() - asked)
        if status["status"] == "finished":
            break
        if status["status"] in ("failed", "stopped", "deleted") or worker.process.poll():
            raise SystemExit(
                f"run {label} is {status['status']}: {status.get('error')}\n"
                f"worker log (tail):\n{worker.log.read_text()[-3000:]}"
            )
        if asked > deadline:
            raise SystemExit(f"run {label} not finished after an hour: {status['status']}")
    return Finished(status, time.perf_counter() - start, submit, start_call, polls)


@dataclass
class Latency:
    total: float  # start_run called -> first command's timestamp
    to_running: float  # start_run called -> run's started_at
    start_call: float


def latency_once(client: Client, worker: WorkerProcess, poll: float) -> Latency:
    run = client.create_run("latency", spec([["date +%s.%N > t0"]]))
    time.sleep(0.2)  # nothing else in flight when we submit
    done = run_to_end(client, run["run"], poll, worker)
    t0 = float(client.run_file(run["run"], "t0").text)
    return Latency(
        t0 - done.submit, stamp(done.status["started_at"]) - done.submit, done.start_call
    )


@dataclass
class SerialRun:
    wall: float
    worker_wall: float  # run started_at -> finished_at (the worker's clock)
    to_running: float  # start_run called -> started_at
    in_steps: float  # sum of step durations (started_at -> finished_at)
    first_step: float  # started_at -> first step started
    after_last: float  # last step finished -> run finished_at
    start_call: float
    polls: list[float]

    def between_steps(self, steps: int) -> float:
        return self.worker_wall - self.in_steps - self.first_step - self.after_last


def serial_once(
    client: Client, worker: WorkerProcess, steps: int, poll: float, name: str = "serial"
) -> SerialRun:
    run = client.create_run(name, spec([[f"echo {i}"] for i in range(steps)]))
    label = run["run"]
    time.sleep(0.2)
    done = run_to_end(client, label, poll, worker)
    status = done.status
    check(status["steps_done"] == steps, f"{status['steps_done']} of {steps} steps done")
    check(
        len(status["steps"]) == steps and all(s["status"] == "finished" for s in status["steps"]),
        "not every step finished",
    )
    last = f"s{steps - 1:04d}"
    check(f"{steps - 1}" in client.run_logs(label, last), f"step {last}'s log lacks its echo")
    started, finished = stamp(status["started_at"]), stamp(status["finished_at"])
    spans = [(stamp(s["started_at"]), stamp(s["finished_at"])) for s in status["steps"]]
    return SerialRun(
        wall=done.wall,
        worker_wall=finished - started,
        to_running=started - done.submit,
        in_steps=sum(b - a for a, b in spans),
        first_step=spans[0][0] - started,
        after_last=finished - spans[-1][1],
        start_call=done.start_call,
        polls=done.polls,
    )


# --- baselines ---------------------------------------------------------------------------------
SNAKEFILE = """\
rule all:
    input: expand("out/{{i}}.txt", i=range({n}))

rule job:
    output: "out/{{i}}.txt"
    shell: "echo {{wildcards.i}} > {{output}}"
"""


def snakemake(workdir: Path, n: int, cores: int, repeat: int, extra: list[str]) -> Timed:
    where = workdir / f"smk-{n}-{cores}-{len(extra)}"

    def fresh(i: int) -> None:
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir()
        (where / "Snakefile").write_text(SNAKEFILE.format(n=n))

    def run(i: int) -> None:
        with open(workdir / "snakemake.log", "ab") as out:
            subprocess.run(
                [SNAKEMAKE, "--cores", str(cores), "--quiet", "all", *extra],
                cwd=where,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
            )
        made = sorted((where / "out").iterdir())
        check(len(made) == n, f"snakemake made {len(made)} of {n} files")

    result = timed(f"snakemake {n}", repeat, fresh, run)
    shutil.rmtree(where, ignore_errors=True)
    return result


def bash_floors(workdir: Path, n: int, repeat: int) -> dict[str, Timed]:
    where = workdir / "bash"
    where.mkdir()
    inline = where / "inline.sh"
    inline.write_text("".join(f"echo {i} > out/{i}.txt\n" for i in range(n)))
    forked = where / "forked.sh"
    forked.write_text("".join(f"bash -c 'echo {i}' > out/{i}.txt\n" for i in range(n)))

    def fresh(i: int) -> None:
        shutil.rmtree(where / "out", ignore_errors=True)
        (where / "out").mkdir()

    def script(path: Path) -> Callable[[int], None]:
        def run(i: int) -> None:
            subprocess.run(["bash", str(path)], cwd=where, check=True)
            check(len(list((where / "out").iterdir())) == n, f"{path.name} made too few files")

        return run

    def from_python(i: int) -> None:
        for j in range(n):
            done = subprocess.run(["bash", "-c", f"echo {j}"], cwd=where, capture_output=True)
            check(done.returncode == 0 and done.stdout == f"{j}\n".encode(), "bash -c failed")

    out = {
        "inline": timed("inline", repeat, fresh, script(inline)),
        "forked": timed("forked", repeat, fresh, script(forked)),
        "python": timed("python", repeat, fresh, from_python),
    }
    shutil.rmtree(where, ignore_errors=True)
    return out


def backend_alone(workdir: Path, n: int, repeat: int) -> dict[str, Timed]:
    """vre's local backend in this process, no worker and no database: N ``echo``, and how
    late it notices that a 120 ms command has exited (against ``subprocess.run``)."""
    where = workdir / "backend"
    where.mkdir()
    env = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}

    def command(text: str, i: int) -> None:
        done = local.run_command(
            text,
            cwd=where,
            log=where / "logs" / f"step-{i}.log",
            env=env,
            timeout=60,
            should_stop=lambda: False,
        )
        check(done.exit_code == 0, f"local.run_command({text!r}) exited {done.exit_code}")

    def echoes(i: int) -> None:
        for j in range(n):
            command(f"echo {j}", j)

    def nothing(i: int) -> None:
        pass

    sleeps = max(repeat, 5)
    out = {
        "echo": timed("echo", repeat, nothing, echoes),
        "sleep": timed("sleep", sleeps, nothing, lambda i: command(f"sleep {SLEEP}", i)),
        "sleep floor": timed(
            "sleep floor",
            sleeps,
            nothing,
            lambda i: subprocess.run(["bash", "-c", f"sleep {SLEEP}"], capture_output=True),
        ),
    }
    shutil.rmtree(where, ignore_errors=True)
    return out


# --- profile -----------------------------------------------------------------------------------
def py_spy() -> str | None:
    for candidate in ("/tmp/tools/bin/py-spy", shutil.which("py-spy")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def profiled_run(
    client: Client, worker: WorkerProcess, steps: int, poll: float, workdir: Path
) -> None:
    """One more serial run with py-spy on the worker; where the run thread's time went."""
    binary = py_spy()
    if binary is None:
        print("\nprofile: py-spy not found (/tmp/tools/bin/py-spy or PATH): skipped")
        return
    raw = workdir / "py-spy.txt"
    spy = subprocess.Popen(
        [
            *(binary, "record", "--pid", str(worker.process.pid), "--rate", str(PY_SPY_RATE)),
            *("--format", "raw", "--output", str(raw), "--idle", "--threads", "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # attached
    try:
        result = serial_once(client, worker, steps, poll, name="profiled")
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            _, err = spy.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
    if not raw.exists():
        print(f"\nprofile: py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
        return
    print(
        f"\nprofile: one more {steps}-step run under py-spy ({PY_SPY_RATE} Hz, --nonblocking)"
        f" attached to the worker: wall {result.wall:.3f} s"
        f" ({result.wall / steps * 1e3:.1f} ms/step)"
    )
    summarize_profile(raw, steps)


def frame_name(frame: str) -> tuple[str, str]:
    """``'wait (subprocess.py:1264)'`` -> (``'wait'``, ``'subprocess.py'``)."""
    name, _, where = frame.partition(" (")
    return name.strip(), where.rstrip(")").rsplit(":", 1)[0]


CATEGORIES = (
    ("spec parsed (load_spec, once per run)", ("load_spec",)),
    (
        "DB: update_run / update_step / should_stop",
        ("_Execution.update_run", "_Execution.update_step", "_Execution.should_stop"),
    ),
    ("bash started (Popen: fork/exec)", ("Popen.__init__",)),
    ("reader threads started / joined", ("Thread.start", "Thread.join")),
    ("waiting for bash to exit", ("Popen.wait",)),
)


def category(names: list[str]) -> str:
    for label, markers in CATEGORIES:
        if any(m in names for m in markers):
            return label
    if names and names[-1] == "run_command":
        return "run_command's own lines (log file, mask)"
    return "other"


def summarize_profile(raw: Path, steps: int) -> None:
    """Run-thread samples by category and by path through vre's code plus the first call out."""
    paths: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        names = [frame_name(f) for f in frames if not f.startswith(("thread ", "process "))]
        if not any(n == "execute" and w.endswith("serial.py") for n, w in names):
            continue  # not the run thread (idle loops, reader threads)
        total += int(count)
        ours = [i for i, (_, w) in enumerate(names) if w.startswith("vre/") or "/vre/" in w]
        top = ours[ours.index(next(i for i, (n, _) in enumerate(names) if n == "execute")) :]
        chain = [names[i][0] for i in top]
        after = names[top[-1] + 1 : top[-1] + 3]
        out = " > ".join(f"{n} ({Path(w).name})" for n, w in after)
        paths[" > ".join(chain) + (f" > {out}" if out else "")] += int(count)
        kinds[category([n for n, _ in names[top[0] :]])] += int(count)
    if not total:
        print("  no sample in the run thread (serial.execute)")
        return
    per_step = 1e3 / PY_SPY_RATE / steps
    print(f"  run thread (serial.execute): {total} samples = {total / PY_SPY_RATE:.2f} s")
    print(f"  {'ms/step':>8} {'share':>6}  where")
    for kind, count in kinds.most_common():
        print(f"  {count * per_step:8.2f} {count / total:6.1%}  {kind}")
    print(f"\n  {'ms/step':>8} {'share':>6}  path (vre frames > first two calls out)")
    for path, count in paths.most_common(12):
        print(f"  {count * per_step:8.2f} {count / total:6.1%}  {path}")
    rest = total - sum(c for _, c in paths.most_common(12))
    if rest:
        print(f"  {rest * per_step:8.2f} {rest / total:6.1%}  (other paths)")


# --- report ------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Starts its own vre serve and vre worker, and cleans up.",
    )
    parser.add_argument("--steps", type=int, default=200, help="steps of the serial run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between run_status")
    parser.add_argument(
        "--profile",
        choices=("auto", "on", "off"),
        default="auto",
        help="py-spy the worker during one more serial run (auto: if the step target is missed)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to work (default: $TMPDIR)")
    args = parser.parse_args()
    if args.steps < 2 or args.repeat < 1 or args.poll <= 0:
        parser.error("--steps must be at least 2, --repeat at least 1, --poll positive")
    n, repeat = args.steps, args.repeat
    workdir = Path(tempfile.mkdtemp(prefix="vre-bench-workflows-", dir=args.dir))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before starting")
    try:
        # baselines first, with no vre process running
        smk = {
            "1": snakemake(workdir, n, 1, repeat, []),
            "2": snakemake(workdir, n, 2, repeat, []),
            "1 unthrottled": snakemake(
                workdir, n, 1, repeat, ["--max-jobs-per-timespan", "100000/1s"]
            ),
        }
        smk_one = {
            "1": snakemake(workdir, 1, 1, repeat, []),
            "2": snakemake(workdir, 1, 2, repeat, []),
            "1 unthrottled": snakemake(
                workdir, 1, 1, repeat, ["--max-jobs-per-timespan", "100000/1s"]
            ),
        }
        print(
            "snakemake: "
            + ", ".join(
                f"--cores {k} {n} jobs {smk[k].median:.3f} s, 1 job {smk_one[k].median:.3f} s"
                for k in smk
            ),
            flush=True,
        )
        floors = bash_floors(workdir, n, repeat)
        print("bash: " + ", ".join(f"{k} {v.median:.3f} s" for k, v in floors.items()), flush=True)
        alone = backend_alone(workdir, n, repeat)
        print(
            f"local backend alone: {n} x echo {alone['echo'].median:.3f} s,"
            f" sleep {SLEEP} {alone['sleep'].median:.3f} s",
            flush=True,
        )
        home = workdir / "home"
        home.mkdir()
        with contextlib.ExitStack() as stack:
            started = time.perf_counter()
            server = start_server(home)
            stack.callback(server.stop)
            print(f"vre serve up in {time.perf_counter() - started:.1f} s at {server.url}")
            client = login(server.url)
            stack.callback(client.http.close)
            worker = start_worker(home, workdir / "worker.log", settle=0.5)
            stack.callback(worker.stop)
            print(f"vre worker up in {worker.started_in:.1f} s", flush=True)
            try:
                latencies = [latency_once(client, worker, 0.02) for _ in range(repeat)]
                print("latency: " + ", ".join(f"{x.total:.3f} s" for x in latencies), flush=True)
                serials = [serial_once(client, worker, n, args.poll) for _ in range(repeat)]
                print("serial: " + ", ".join(f"{x.wall:.3f} s" for x in serials), flush=True)
            except BaseException:
                print(f"--- server log (tail) ---\n{server.log.read_text()[-3000:]}")
                print(f"--- worker log (tail) ---\n{worker.log.read_text()[-3000:]}")
                raise
            missed = report(n, repeat, latencies, serials, smk, smk_one, floors, alone, args.poll)
            if args.profile == "on" or (args.profile == "auto" and missed):
                profiled_run(client, worker, n, args.poll, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(
    n: int,
    repeat: int,
    latencies: list[Latency],
    serials: list[SerialRun],
    smk: dict[str, Timed],
    smk_one: dict[str, Timed],
    floors: dict[str, Timed],
    alone: dict[str, Timed],
    poll: float,
) -> bool:
    """Print the tables; True if the per-step target was missed."""
    lat = median([x.total for x in latencies])
    print(f"\nsubmit -> first command running (one-step run, {repeat} runs, vre worker idle)")
    print(f"  {'':<44} {'median s':>9} {'best s':>8}")
    for label, values in (
        ("start_run called -> first command's date", [x.total for x in latencies]),
        ("  start_run called -> run started_at", [x.to_running for x in latencies]),
        ("  run started_at -> first command's date", [x.total - x.to_running for x in latencies]),
        ("  (POST /runs/{run}/start itself)", [x.start_call for x in latencies]),
    ):
        print(f"  {label:<44} {median(values):9.3f} {min(values):8.3f}")

    wall = Timed("vre", [x.wall for x in serials])
    print(f"\n{n} trivial commands, one per step / job ({repeat} runs each; median, best)")
    header = (
        f"  {'':<46} {'median s':>9} {'best s':>8} {'ms/step':>8} {'-start ms':>9} {'x vre':>6}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    vre_step = wall.median / n

    def row(label: str, t: Timed, without_start: float | None = None) -> None:
        extra = f"{without_start * 1e3:9.2f}" if without_start is not None else f"{'':>9}"
        print(
            f"  {label:<46} {t.median:9.3f} {t.best:8.3f} {t.median / n * 1e3:8.2f} {extra}"
            f" {vre_step / (t.median / n):6.2f}"
        )

    row("vre serial run, start_run -> finished", wall)
    names = {"1": "--cores 1", "2": "--cores 2", "1 unthrottled": "--cores 1, 100000/1s"}
    per_job: dict[str, float] = {}
    for key, label in names.items():
        per_job[key] = (smk[key].median - smk_one[key].median) / (n - 1)
        row(f"snakemake {label}", smk[key], per_job[key])
    for key, label in names.items():
        print(
            f"  {'  snakemake ' + label + ', 1 job':<46} {smk_one[key].median:9.3f}"
            f" {smk_one[key].best:8.3f}"
        )
    row("bash script, builtins (no process per command)", floors["inline"])
    row("bash script, bash -c per command", floors["forked"])
    row("python subprocess.run(bash -c) per command", floors["python"])
    row("vre local.run_command alone (no worker, no DB)", alone["echo"])
    print("  ms/step: median wall / steps; -start ms: (T(N jobs) - T(1 job)) / (N - 1);")
    print("  x vre: vre's ms/step over this row's ms/step (above 1: vre is slower)")

    worker_wall = median([x.worker_wall for x in serials])
    in_steps = median([x.in_steps for x in serials])
    between = median([x.between_steps(n) for x in serials])
    polls = sorted(p for x in serials for p in x.polls)
    parts = [
        ("start_run called -> run started_at", median([x.to_running for x in serials]), ""),
        ("run started_at -> first step started", median([x.first_step for x in serials]), ""),
        ("inside steps (started -> finished)", in_steps, f"{in_steps / n * 1e3:.2f} ms/step"),
        ("between steps (finished -> next)", between, f"{between / (n - 1) * 1e3:.2f} ms/gap"),
        ("last step finished -> run finished", median([x.after_last for x in serials]), ""),
        ("run started_at -> finished_at", worker_wall, f"{worker_wall / n * 1e3:.2f} ms/step"),
    ]
    print(f"\n  vre's run, from its own timestamps (median of {repeat}):")
    for label, seconds, note in parts:
        print(f"    {label:<40} {seconds:7.3f} s  {note}")
    print(
        f"    GET /runs/{{run}} (run_status, polled every {poll * 1e3:.0f} ms): median"
        f" {polls[len(polls) // 2] * 1e3:.1f} ms, max {polls[-1] * 1e3:.1f} ms"
        f" ({len(polls)} polls)"
    )

    late = alone["sleep"].median - alone["sleep floor"].median
    print(
        f"    local.run_command('sleep {SLEEP}') {alone['sleep'].median * 1e3:.1f} ms against"
        f" subprocess.run's {alone['sleep floor'].median * 1e3:.1f} ms: exit seen"
        f" {late * 1e3:.1f} ms late"
    )
    print("      (a blocking wait on a thread; Popen.wait(timeout=) polling saw it ~40 ms late)")

    smk_step = per_job["1"]
    step_ok = vre_step <= smk_step
    print("\n  targets (median):")
    print(
        f"    {'submit -> first command running':<40} {lat:8.3f} s  < {TARGET_LATENCY} s"
        f"  {'PASS' if lat < TARGET_LATENCY else 'MISS'}"
    )
    print(
        f"    {'vre ms/step vs snakemake --cores 1':<40} {vre_step * 1e3:8.2f} ms <="
        f" {smk_step * 1e3:.2f} ms (per job, start-up excluded)  {'PASS' if step_ok else 'MISS'}"
    )
    print(
        f"    (vs snakemake --cores 1 with its start-up: {smk['1'].median / n * 1e3:.2f} ms/job;"
        f" unthrottled, start-up excluded: {per_job['1 unthrottled'] * 1e3:.2f} ms/job)"
    )
    return not step_ok


if __name__ == "__main__":
    main()
