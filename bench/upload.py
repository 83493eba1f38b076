"""Upload throughput through the API, against ``cp`` of the same file on the same filesystem.

A random file of ``--size-mib`` MiB is written to a temporary directory. Then:

  cp          ``cp SRC DST`` in a subprocess (page cache, no fsync), and cp followed by ``sync``
  upload      ``Client.upload(path, scope, rse)``: the bytes stream over loopback HTTP to a real
              ``vre serve`` (SQLite) whose file:// RSE is on the same filesystem; the client
              computes adler32, the server adler32 and md5 while writing, then renames the
              file into place and registers it. Also timed followed by ``sync``.
  vre upload  the CLI for the same file (a fresh Python process, so its start-up is included)

Every operation runs ``--repeat`` times (cp at least 3), new target names, and the best counts; the
written data is flushed (``sync``) and removed between runs. The source file is in the page
cache for all of them (it was just written). No assertions on time: figures and ratios.

    .venv/bin/python bench/upload.py [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from vre_server import ROOT_PASSWORD, VRE, start_server

from vre.client import Client

RSE_NAME = "BENCH-DISK"
SCOPE = "bench"
TARGET_RATIO = 0.7  # upload throughput at least 0.7 of cp's
MIB = 1024 * 1024


def make_source(path: Path, size: int) -> str:
    """Random bytes, 4 MiB at a time; returns their md5 (to check what the server stored)."""
    digest = hashlib.md5()
    with open(path, "wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(4 * MIB, left))
            digest.update(chunk)
            handle.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def sync() -> float:
    start = time.perf_counter()
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - start


def remove_and_flush(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
    sync()


def rate(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Starts its own vre serve in a temporary directory and cleans up.",
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the file, MiB")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; the best counts")
    parser.add_argument("--no-cli", action="store_true", help="skip timing the vre upload CLI")
    parser.add_argument("--dir", type=Path, default=None, help="where to work (default: $TMPDIR)")
    args = parser.parse_args()
    size = args.size_mib * MIB
    workdir = Path(tempfile.mkdtemp(prefix="vre-bench-upload-", dir=args.dir))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before starting")
    free = shutil.disk_usage(workdir).free
    if free < size * 3 + 512 * MIB:
        shutil.rmtree(workdir)
        raise SystemExit(f"not enough disk in {workdir.parent}: {free / MIB:.0f} MiB free")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        run(args, size, workdir, stack)


def run(args: argparse.Namespace, size: int, workdir: Path, stack: contextlib.ExitStack) -> None:
    source = workdir / "source.bin"
    started = time.perf_counter()
    md5 = make_source(source, size)
    sync()
    print(
        f"{args.size_mib} MiB random file written in {time.perf_counter() - started:.1f} s"
        f" ({workdir}, filesystem with {shutil.disk_usage(workdir).free / 2**30:.0f} GiB free)"
    )

    cp, cp_sync = [], []
    for i in range(max(3, args.repeat)):  # cheap, and the first cp after a write varies
        target = workdir / f"copy-{i}.bin"
        start = time.perf_counter()
        subprocess.run(["cp", str(source), str(target)], check=True)
        copied = time.perf_counter() - start
        flushed = copied + sync()
        cp.append(copied)
        cp_sync.append(flushed)
        print(f"  cp   run {i + 1}: {copied:.3f} s, with sync {flushed:.3f} s", flush=True)
        remove_and_flush(target)

    home = workdir / "home"
    home.mkdir()
    rse_dir = workdir / "rse"
    rse_dir.mkdir()
    server = start_server(home)
    stack.callback(server.stop)
    answer = httpx.post(
        f"{server.url}/api/v1/auth/login", json={"account": "root", "password": ROOT_PASSWORD}
    )
    answer.raise_for_status()
    token = answer.json()["token"]
    client = Client(server.url, token)
    stack.callback(client.http.close)
    client.add_rse(RSE_NAME, f"file://{rse_dir}", {"type": "disk"})
    client.add_scope(SCOPE)
    small = workdir / "warmup.bin"
    small.write_bytes(os.urandom(1024))
    client.upload(small, SCOPE, RSE_NAME, name="warmup.bin")  # first-request costs, not counted

    up, up_sync = [], []
    for i in range(args.repeat):
        name = f"upload-{i}.bin"
        start = time.perf_counter()
        result = client.upload(source, SCOPE, RSE_NAME, name=name)
        uploaded = time.perf_counter() - start
        flushed = uploaded + sync()
        if result["bytes"] != size or result["md5"] != md5:
            raise SystemExit(f"benchmark aborted, wrong answer: server stored {result}")
        up.append(uploaded)
        up_sync.append(flushed)
        print(f"  upload run {i + 1}: {uploaded:.3f} s, with sync {flushed:.3f} s", flush=True)
        remove_and_flush(Path(result["url"].removeprefix("file://")))

    cli = []
    cli_start = None
    if not args.no_cli:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VRE_")}
        env.update(VRE_URL=server.url, VRE_TOKEN=token, COLUMNS="120")
        start = time.perf_counter()
        subprocess.run([VRE, "--help"], env=env, check=True, capture_output=True)
        cli_start = time.perf_counter() - start
        for i in range(args.repeat):
            name = f"cli-{i}.bin"
            link = workdir / name  # vre upload names the DID after the file
            link.symlink_to(source)
            start = time.perf_counter()
            done = subprocess.run(
                [VRE, "upload", str(link), "--scope", SCOPE, "--rse", RSE_NAME, "--json"],
                env=env,
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"vre upload failed: {done.stderr[-2000:]}")
            cli.append(seconds)
            print(f"  vre upload run {i + 1}: {seconds:.3f} s", flush=True)
            link.unlink()
            stored = client.replicas([f"{SCOPE}:{name}"])[0]["replicas"][0]["url"]
            remove_and_flush(Path(stored.removeprefix("file://")))

    print(
        f"\n{args.size_mib} MiB ({size / 1e6:.0f} MB), best of {max(3, args.repeat)} cp and"
        f" {args.repeat} of the others; MB/s = 10^6 B/s"
    )
    print(f"  {'operation':<34} {'seconds':>8} {'MB/s':>8} {'vs cp':>6}")
    print("  " + "-" * 59)
    rows = [
        ("cp (page cache, no sync)", min(cp), min(cp)),
        ("Client.upload (no sync)", min(up), min(cp)),
        ("cp + sync", min(cp_sync), min(cp_sync)),
        ("Client.upload + sync", min(up_sync), min(cp_sync)),
    ]
    if cli:
        rows.append(("vre upload CLI (whole process)", min(cli), min(cp)))
    for label, seconds, reference in rows:
        print(f"  {label:<34} {seconds:8.3f} {rate(size, seconds):8.0f} {reference / seconds:6.2f}")
    if cli_start is not None:
        print(f"  (vre --help, i.e. CLI start-up alone: {cli_start:.3f} s)")
    for label, ratio in (
        ("upload / cp, no sync", min(cp) / min(up)),
        ("upload / cp, with sync", min(cp_sync) / min(up_sync)),
    ):
        verdict = "PASS" if ratio >= TARGET_RATIO else "MISS"
        print(f"  target {label}: {ratio:.2f} >= {TARGET_RATIO}  {verdict}")


if __name__ == "__main__":
    main()
