"""Rule-driven transfers by one ``vre worker``, against ``cp`` (and ``xrdcp``) of the same files.

For each pair of storage elements (``file-file``: file:// to file://, ``file-root``: file:// to
root:// on a real XRootD server started here as the ``xrootd`` user), a real ``vre serve``
(SQLite in a temporary VRE_HOME) gets the two RSEs and two scopes:

  small  --small files of --small-kib KiB in dataset small:dataset
  large  --large files of --large-mib MiB in dataset large:dataset

The files are written once, straight to their deterministic paths under the source RSE's
directory, and registered with ``Client.register(rse, files, dataset=...)`` (adler32, md5).
One ``vre worker --threads N`` subprocess (VRE_WORKER_INTERVAL=0.2) is started and waited for;
then, per dataset, the clock runs from ``add_rule(dataset, DST)`` until ``Client.rule(id)``
(polled every ``--poll`` seconds, default 0.05) says ``ok``. The worker streams every file
through fsspec, checks adler32, fsyncs local files and renames them into place.

Baselines, on the same files in the same run (best of 3, page cache warm, ``sync`` before):
``cp -r`` of the dataset's tree to a fresh local directory, alone and followed by ``sync``;
for root:// also ``xrdcp --recursive`` to a fresh directory on the same XRootD server, serial
and with ``--parallel N``. The worker's own view comes from ``GET /transfers`` (per-file copy
durations) and its log (when each batch was claimed and reported), which splits the wall time
into copying and scheduling (claim, finish, idle polling). No assertions on time.

    .venv/bin/python bench/transfers.py [--small 1000] [--small-kib 10] [--large 4]
        [--large-mib 256] [--threads 4] [--pairs file-file,file-root]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from vre_server import WorkerProcess, login, start_server, start_worker

from vre.client import Client
from vre.lake.names import deterministic_path

SRC, DST = "BENCH-SRC", "BENCH-DST"
PAIRS = ("file-file", "file-root")
TARGET_SMALL_RATE = 200.0  # small files per second, rule created -> rule ok
TARGET_LARGE_RATIO = 0.7  # large-file throughput at least 0.7 of cp's
BASELINE_RUNS = 3
KIB, MIB = 1024, 1024 * 1024

XROOTD_CONFIG = """\
xrd.port {port}
xrd.network nodnr
all.role server
oss.localroot {root}/data
all.export /data
all.adminpath {root}/admin
all.pidpath {root}/run
xrd.allow host localhost
xrd.allow host 127.0.0.1
xrootd.chksum max 2 adler32 md5
"""


# --- the files ---------------------------------------------------------------------------------
@dataclass
class FileSet:
    label: str  # small | large
    scope: str
    files: list[dict[str, Any]]
    tree: Path  # the scope's directory under the source RSE

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def bytes(self) -> int:
        return sum(f["bytes"] for f in self.files)

    @property
    def dataset(self) -> str:
        return f"{self.scope}:dataset"


def write_files(source: Path, label: str, count: int, size: int) -> FileSet:
    """Random files at their deterministic paths under ``source``, with adler32 and md5."""
    scope = label
    files = []
    for i in range(count):
        name = f"{label}.{i:06d}.bin"
        path = source / deterministic_path(scope, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        adler, md5 = 1, hashlib.md5()
        with open(path, "wb") as handle:
            left = size
            while left:
                chunk = os.urandom(min(4 * MIB, left))
                adler = zlib.adler32(chunk, adler)
                md5.update(chunk)
                handle.write(chunk)
                left -= len(chunk)
        files.append(
            {
                "scope": scope,
                "name": name,
                "bytes": size,
                "adler32": f"{adler & 0xFFFFFFFF:08x}",
                "md5": md5.hexdigest(),
            }
        )
    return FileSet(label, scope, files, source / scope)


def tree_size(root: Path) -> tuple[int, int, int]:
    """(files, bytes, leftover .vre-part files) under ``root``."""
    count = total = parts = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            if ".vre-part-" in name:
                parts += 1
                continue
            count += 1
            total += os.path.getsize(os.path.join(dirpath, name))
    return count, total, parts


def sync() -> float:
    start = time.perf_counter()
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - start


def check(condition: bool, message: str) -> None:
    """Correctness, not time: a benchmark of a wrong answer is worthless."""
    if not condition:
        raise SystemExit(f"benchmark aborted, wrong answer: {message}")


# --- XRootD ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class XRootD:
    """A real ``xrootd`` (Debian xrootd-server) on a free loopback port, as user ``xrootd``."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("xrootd")
        if binary is None:
            raise SystemExit("xrootd is not installed (apt-get install xrootd-server)")
        user = pwd.getpwnam("xrootd")
        self.root = root
        root.mkdir(mode=0o755)
        for sub in ("data/data", "admin", "run", "log"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for directory in [root, *root.rglob("*")]:
            os.chown(directory, user.pw_uid, user.pw_gid)
        for parent in root.parents:  # the xrootd user must be able to reach its directory
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o711)
        self.port = free_port()
        config = root / "xrootd.cfg"
        config.write_text(XROOTD_CONFIG.format(port=self.port, root=root))
        self.process = subprocess.Popen(
            [
                *(binary, "-R", "xrootd", "-c", str(config)),
                *("-n", f"vre{self.port}", "-l", str(root / "log" / "xrootd.log")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                sock.settimeout(0.2)
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"xrootd did not answer on port {self.port}")

    def url(self, path: str) -> str:
        return f"root://127.0.0.1:{self.port}//data/{path}"

    def local(self, path: str) -> Path:
        return self.root / "data" / "data" / path

    def mkdir(self, path: str) -> None:
        """An empty directory in the export, owned by the xrootd user (xrdcp wants one)."""
        user = pwd.getpwnam("xrootd")
        local = self.local(path)
        local.mkdir(parents=True)
        os.chown(local, user.pw_uid, user.pw_gid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- the worker --------------------------------------------------------------------------------
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) vre\.worker (.*)$")


@dataclass
class Batch:
    claimed: float  # epoch seconds, logged after the claim transaction
    reported: float  # logged after the finish transaction
    size: int


def batches(log: Path, since: float, until: float) -> list[Batch]:
    """The worker's transfer batches that started within [since, until] (from its log)."""
    found: list[Batch] = []
    claimed: tuple[float, int] | None = None
    for line in log.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        text = match[2]
        if text.startswith("claimed transfers "):
            claimed = (stamp, text.count(",") + 1)
        elif text.startswith("transfers: ") and claimed is not None:
            if since - 0.01 <= claimed[0] <= until + 0.01:
                found.append(Batch(claimed[0], stamp, claimed[1]))
            claimed = None
    return found


# --- one pair ---------------------------------------------------------------------------------
@dataclass
class Phase:
    """One dataset moved by one rule, with its baselines."""

    files: FileSet
    wall: float = 0.0
    sync_after: float = 0.0
    polls: list[float] = field(default_factory=list)
    copy_sum: float = 0.0
    copy_max: float = 0.0
    batches: list[Batch] = field(default_factory=list)
    rule_created: float = 0.0  # epoch
    rule_ok: float = 0.0  # epoch
    add_rule: float = 0.0  # seconds the POST /rules took
    baselines: dict[str, float] = field(default_factory=dict)


def timed_best(runs: int, prepare: Any, command: Any) -> tuple[float, float]:
    """Best of ``runs`` of command(i) (after prepare(i) and a sync), alone and with sync."""
    alone, with_sync = [], []
    for i in range(runs):
        prepare(i)
        sync()
        start = time.perf_counter()
        command(i)
        seconds = time.perf_counter() - start
        alone.append(seconds)
        with_sync.append(seconds + sync())
    return min(alone), min(with_sync)


def baselines(phase: Phase, workdir: Path, xrootd: XRootD | None, threads: int) -> dict[str, float]:
    fs = phase.files
    out: dict[str, float] = {}
    scratch = workdir / f"cp-{fs.label}"

    def fresh(i: int) -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()

    def cp(i: int) -> None:
        subprocess.run(["cp", "-r", str(fs.tree), str(scratch / fs.scope)], check=True)

    out["cp -r"], out["cp -r + sync"] = timed_best(BASELINE_RUNS, fresh, cp)
    copied = tree_size(scratch / fs.scope)
    check(copied[:2] == (fs.count, fs.bytes), f"cp -r copied {copied}")
    shutil.rmtree(scratch, ignore_errors=True)
    if xrootd is not None and shutil.which("xrdcp"):
        for label, extra in (("xrdcp -r", []), (f"xrdcp -r --parallel {threads}", None)):
            extra = extra if extra is not None else ["--parallel", str(threads)]
            tag = "par" if extra else "ser"

            def xrdcp(i: int, extra: list[str] = extra, tag: str = tag) -> None:
                target = xrootd.url(f"xrdcp-{fs.label}-{tag}-{i}/")
                subprocess.run(
                    ["xrdcp", "--recursive", "--silent", "--nopbar", *extra, str(fs.tree), target],
                    check=True,
                )

            def target_dir(i: int, tag: str = tag) -> None:
                xrootd.mkdir(f"xrdcp-{fs.label}-{tag}-{i}")

            out[label], _ = timed_best(BASELINE_RUNS, target_dir, xrdcp)
            for i in range(BASELINE_RUNS):
                copied = tree_size(xrootd.local(f"xrdcp-{fs.label}-{tag}-{i}"))
                check(copied[:2] == (fs.count, fs.bytes), f"{label} copied {copied}")
                shutil.rmtree(xrootd.local(f"xrdcp-{fs.label}-{tag}-{i}"), ignore_errors=True)
    return out


def move(client: Client, phase: Phase, worker: WorkerProcess, poll_every: float) -> None:
    """Rule created -> rule ok, polling ``Client.rule(id)`` every ``poll_every`` seconds."""
    fs = phase.files
    sync()
    phase.rule_created = time.time()
    start = time.perf_counter()
    rule = client.add_rule(fs.dataset, DST)
    phase.add_rule = time.perf_counter() - start
    deadline = start + 3600
    while True:
        poll = time.perf_counter()
        state = client.rule(rule["id"])
        phase.polls.append(time.perf_counter() - poll)
        if state["state"] == "ok":
            break
        if state["state"] == "stuck" or worker.process.poll() is not None:
            raise SystemExit(
                f"rule {rule['id']} is {state['state']}: {state.get('error')}\n"
                f"worker log (tail):\n{worker.log.read_text()[-3000:]}"
            )
        if time.perf_counter() > deadline:
            raise SystemExit(f"rule {rule['id']} not ok after an hour: {state}")
        time.sleep(max(0.0, poll_every - (time.perf_counter() - poll)))
    phase.wall = time.perf_counter() - start
    phase.rule_ok = time.time()
    phase.sync_after = sync()
    check(state["locks_ok"] == fs.count, f"rule ok with {state['locks_ok']} locks ok")


def worker_view(client: Client, phase: Phase, worker: WorkerProcess) -> None:
    fs = phase.files
    done = client.call("GET", "/transfers", params={"rse": DST, "limit": 100_000})
    mine = [t for t in done if t["did"].startswith(f"{fs.scope}:")]
    check(
        len(mine) == fs.count and all(t["state"] == "done" for t in mine),
        f"{len(mine)} transfers, states {sorted({t['state'] for t in mine})}",
    )
    check(sum(t["bytes"] for t in mine) == fs.bytes, "transferred bytes differ from the files'")
    durations = [t["duration"] or 0.0 for t in mine]
    phase.copy_sum, phase.copy_max = sum(durations), max(durations)
    phase.batches = batches(worker.log, phase.rule_created, phase.rule_ok)


def run_pair(
    pair: str, args: argparse.Namespace, workdir: Path, sets: list[FileSet], source: Path
) -> list[Phase]:
    base = workdir / pair
    base.mkdir()
    home = base / "home"
    home.mkdir()
    with contextlib.ExitStack() as stack:
        xrootd = None
        if pair == "file-root":
            xrootd = XRootD(base / "xrootd")
            stack.callback(xrootd.stop)
            dest_prefix, dest_dir = xrootd.url("vre"), xrootd.local("vre")
            print(f"  xrootd up on port {xrootd.port}", flush=True)
        else:
            dest_dir = base / "dest"
            dest_dir.mkdir()
            dest_prefix = f"file://{dest_dir}"
        started = time.perf_counter()
        server = start_server(home)
        stack.callback(server.stop)
        print(f"  vre serve up in {time.perf_counter() - started:.1f} s at {server.url}")
        client = login(server.url)
        stack.callback(client.http.close)
        client.add_rse(SRC, f"file://{source}", {"type": "disk"})
        client.add_rse(DST, dest_prefix, {"type": "disk"})
        phases = []
        for fs in sets:
            client.add_scope(fs.scope)
            client.add_collection(fs.scope, "dataset", "dataset")
            start = time.perf_counter()
            done = client.register(SRC, fs.files, dataset=fs.dataset)
            check(done["files"] == fs.count, f"register: {done}")
            print(
                f"  registered {fs.count} {fs.label} files in {time.perf_counter() - start:.3f} s",
                flush=True,
            )
            phases.append(Phase(fs))
        for phase in phases:
            phase.baselines = baselines(phase, base, xrootd, args.threads)
            print(
                f"  {phase.files.label} baselines: "
                + ", ".join(f"{k} {v:.3f} s" for k, v in phase.baselines.items()),
                flush=True,
            )
        worker = start_worker(
            home,
            base / "worker.log",
            "--threads",
            str(args.threads),
            "--verbose",
            VRE_WORKER_INTERVAL="0.2",
        )
        stack.callback(worker.stop)
        print(f"  vre worker up in {worker.started_in:.1f} s", flush=True)
        try:
            for phase in phases:
                move(client, phase, worker, args.poll)
                fs = phase.files
                copied = tree_size(dest_dir / fs.scope)
                check(copied == (fs.count, fs.bytes, 0), f"destination holds {copied}")
                worker_view(client, phase, worker)
                print(
                    f"  {fs.label}: rule ok after {phase.wall:.3f} s"
                    f" ({len(phase.batches)} batches)",
                    flush=True,
                )
        except BaseException:
            print(f"--- server log (tail) ---\n{server.log.read_text()[-3000:]}")
            print(f"--- worker log (tail) ---\n{worker.log.read_text()[-3000:]}")
            raise
        return phases


# --- report ------------------------------------------------------------------------------------
def report(pair: str, phases: list[Phase], threads: int) -> None:
    print(f"\n{pair}: one vre worker --threads {threads}, SQLite; MB/s = 10^6 B/s")
    header = f"  {'operation':<38} {'seconds':>8} {'files/s':>8} {'MB/s':>8} {'x vre':>6}"
    for phase in phases:
        fs = phase.files
        size = fs.bytes / fs.count
        unit = f"{size / KIB:.0f} KiB" if size < MIB else f"{size / MIB:.0f} MiB"
        print(f"\n  {fs.label}: {fs.count} files x {unit} ({fs.bytes / 1e6:.1f} MB)")
        print(header)
        print("  " + "-" * (len(header) - 2))
        rows = [
            ("vre rule -> ok", phase.wall),
            ("vre rule -> ok, + sync", phase.wall + phase.sync_after),
        ]
        rows += [(f"{k} (best of {BASELINE_RUNS})", v) for k, v in phase.baselines.items()]
        for label, seconds in rows:
            print(
                f"  {label:<38} {seconds:8.3f} {fs.count / seconds:8.0f}"
                f" {fs.bytes / seconds / 1e6:8.1f} {phase.wall / seconds:6.2f}"
            )
        print("  x vre: how many times faster than the vre rule (vre's wall / this one's)")
        worker_breakdown(phase, threads)
    print(f"\n  targets ({pair}):")
    for phase in phases:
        fs = phase.files
        if fs.label == "small":
            rate = fs.count / phase.wall
            verdict = "PASS" if rate >= TARGET_SMALL_RATE else "MISS"
            print(
                f"    {'small files/s, rule -> ok':<30} {rate:8.0f} >= {TARGET_SMALL_RATE:.0f}"
                f"  {verdict}"
            )
        else:
            for label, vre, ref in (
                ("large vre / cp -r", phase.wall, phase.baselines["cp -r"]),
                (
                    "large vre+sync / cp -r+sync",
                    phase.wall + phase.sync_after,
                    phase.baselines["cp -r + sync"],
                ),
            ):
                ratio = ref / vre
                verdict = "PASS" if ratio >= TARGET_LARGE_RATIO else "MISS"
                print(f"    {label:<30} {ratio:8.2f} >= {TARGET_LARGE_RATIO}  {verdict}")
            for key, ref in phase.baselines.items():
                if key.startswith("xrdcp"):
                    print(f"    (large vre / {key}: {ref / phase.wall:.2f})")


def worker_breakdown(phase: Phase, threads: int) -> None:
    """Where the wall time went, as the worker saw it."""
    b = phase.batches
    polls = sorted(phase.polls)
    lanes = min(threads, phase.files.count)
    print(
        f"  worker's view: sum of per-file copy durations {phase.copy_sum:.3f} s"
        f" (/{lanes} threads = {phase.copy_sum / lanes:.3f} s; longest file"
        f" {phase.copy_max:.3f} s)"
    )
    scheduling = phase.wall - phase.copy_sum / lanes
    print(
        f"    not copying (wall - copy sum/{lanes}): {scheduling:.3f} s"
        f" = {scheduling / phase.wall:.0%} of {phase.wall:.3f} s wall"
    )
    if not b:
        print("    (no batch found in the worker log)")
        return
    first = b[0].claimed - phase.rule_created
    in_batches = sum(x.reported - x.claimed for x in b)
    gaps = sum(later.claimed - earlier.reported for earlier, later in itertools.pairwise(b))
    tail = phase.rule_ok - b[-1].reported
    sizes = ", ".join(str(x.size) for x in b[:6]) + (", ..." if len(b) > 6 else "")
    print(f"    POST /rules {phase.add_rule:.3f} s (locks, replicas, transfers queued)")
    print(f"    rule POSTed -> first batch claimed: {first:.3f} s (POST + idle wait + claim)")
    print(f"    {len(b)} batches ({sizes}): claimed -> reported {in_batches:.3f} s in all")
    print(f"      (copies + finish), between batches {gaps:.3f} s (claims),")
    print(f"      last report -> rule seen ok {tail:.3f} s")
    print(
        f"    GET /rules/{{id}} poll: median {polls[len(polls) // 2] * 1e3:.1f} ms,"
        f" max {polls[-1] * 1e3:.1f} ms ({len(polls)} polls)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Starts its own vre serve, vre worker and xrootd, and cleans up.",
    )
    parser.add_argument("--small", type=int, default=1000, help="number of small files")
    parser.add_argument("--small-kib", type=int, default=10, help="size of a small file, KiB")
    parser.add_argument("--large", type=int, default=4, help="number of large files")
    parser.add_argument("--large-mib", type=int, default=256, help="size of a large file, MiB")
    parser.add_argument("--threads", type=int, default=4, help="vre worker --threads")
    parser.add_argument(
        "--pairs", default=",".join(PAIRS), help=f"comma-separated, from {', '.join(PAIRS)}"
    )
    parser.add_argument(
        "--poll", type=float, default=0.05, help="seconds between Client.rule(id) polls"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to work (default: $TMPDIR)")
    args = parser.parse_args()
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    if not pairs or any(p not in PAIRS for p in pairs):
        parser.error(f"--pairs takes a comma-separated list of {', '.join(PAIRS)}")
    if min(args.small, args.large, args.small_kib, args.large_mib, args.threads) < 1:
        parser.error("counts, sizes and threads must be at least 1")
    workdir = Path(tempfile.mkdtemp(prefix="vre-bench-transfers-", dir=args.dir))
    workdir.chmod(0o755)  # the xrootd user reads nothing here but must traverse it
    large_bytes = args.large * args.large_mib * MIB
    need = 6 * (large_bytes + args.small * args.small_kib * KIB) + 512 * MIB
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before starting")
    results: dict[str, list[Phase]] = {}
    try:
        free = shutil.disk_usage(workdir).free
        if free < need:
            raise SystemExit(f"not enough disk in {workdir}: {free / MIB:.0f} MiB free")
        source = workdir / "source"
        source.mkdir()
        started = time.perf_counter()
        sets = [
            write_files(source, "small", args.small, args.small_kib * KIB),
            write_files(source, "large", args.large, args.large_mib * MIB),
        ]
        sync()
        print(
            f"source files written in {time.perf_counter() - started:.1f} s ({workdir},"
            f" {shutil.disk_usage(workdir).free / 2**30:.0f} GiB free)",
            flush=True,
        )
        for pair in pairs:
            print(f"{pair}: starting", flush=True)
            results[pair] = run_pair(pair, args, workdir, sets, source)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for pair, phases in results.items():
        report(pair, phases, args.threads)


if __name__ == "__main__":
    main()
