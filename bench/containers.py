"""Serial runs with steps in podman containers, against podman itself on the same commands.

A real ``vre serve`` (SQLite, temporary VRE_HOME) and one ``vre worker`` with
``VRE_CONTAINER_RUNTIME=podman`` run in a private podman store holding the image the tests
use (busybox + bash, imported from a tar: no registry here). Measured:

  floor      ``podman run --rm`` of ``bash -c 'echo I'`` STEPS times in a row, with the
             options the worker uses (runc, --network none, the workspace bound): what one
             container per command costs on this host, before the VRE does anything.
  bash       ``bash -c 'echo I'`` STEPS times from Python (the host floor).
  latency    submit -> first command running, for a one-step run in a container.
  serial     a STEPS-step run, one ``echo`` per step, each in its own container: wall time
             and overhead per step beyond the podman floor.

Target (ours, the issue names none for containers): at most 10 ms per step beyond the
podman floor (the host backend's whole per-step overhead is ~6 ms here).

    .venv/bin/python bench/containers.py [--steps 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vre_server import login, start_server, start_worker

from vre.config import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' image builder
from tests.fixtures.podman import IMAGE, STORAGE, rootfs_tar


def spec(steps: int, command: str) -> str:
    lines = ["version: 0.9.0", "workflow:", "  type: serial", "  specification:", "    steps:"]
    for i in range(steps):
        lines += [f"      - name: s{i:04d}", f"        environment: {IMAGE}", "        commands:"]
        lines.append(f"          - {command.format(i=i)}")
    return "\n".join(lines) + "\n"


def podman_floor(work: Path, steps: int) -> float:
    settings = Settings()
    argv = ["podman", *shlex.split(settings.podman_options), "run", "--rm", "--pull", "never"]
    argv += ["--volume", f"{work}:{work}:rw", "--workdir", str(work)]
    argv += shlex.split(settings.container_options)
    start = time.perf_counter()
    for i in range(steps):
        subprocess.run([*argv, IMAGE, "bash", "-c", f"echo {i}"], check=True, capture_output=True)
    return time.perf_counter() - start


def bash_floor(steps: int) -> float:
    start = time.perf_counter()
    for i in range(steps):
        subprocess.run(["bash", "-c", f"echo {i}"], check=True, capture_output=True)
    return time.perf_counter() - start


def run_to_end(client, label: str) -> dict:  # type: ignore[no-untyped-def]
    submit = time.time()
    client.start_run(label)
    while True:
        time.sleep(0.05)
        status = client.run_status(label)
        if status["status"] == "finished":
            status["submit"] = submit
            return status
        if status["status"] in ("failed", "stopped"):
            raise SystemExit(f"run {label} {status['status']}: {status.get('error')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vre-bench-containers-") as tmp:
        root = Path(tmp)
        conf = root / "storage.conf"
        conf.write_text(STORAGE.format(root=root))
        os.environ["CONTAINERS_STORAGE_CONF"] = str(conf)
        base = ["podman", "--runtime", "runc"]
        subprocess.run([*base, "import", "-q", "-", IMAGE], input=rootfs_tar(), check=True)
        try:
            measure(root, args.steps, args.repeat)
        finally:
            for what in (["rm", "-af"], ["rmi", "-af"]):
                subprocess.run([*base, *what], capture_output=True, check=False)


def measure(root: Path, steps: int, repeat: int) -> None:
    work = root / "floor"
    work.mkdir()
    floors = [podman_floor(work, steps) for _ in range(repeat)]
    hosts = [bash_floor(steps) for _ in range(repeat)]
    floor = statistics.median(floors) / steps
    print(f"podman run --rm, {steps} in a row: {floor * 1000:.0f} ms per container")
    print(
        f"bash -c from Python, {steps} in a row: {statistics.median(hosts) / steps * 1000:.1f} ms"
    )
    home = root / "home"
    home.mkdir()
    server = start_server(home)
    worker = start_worker(
        home, root / "worker.log", VRE_CONTAINER_RUNTIME="podman", VRE_RUN_POLL="0.05"
    )
    try:
        client = login(server.url)
        latencies, per_step = [], []
        for _ in range(repeat):
            run = client.create_run("latency", spec(1, "echo $EPOCHREALTIME > t0"))
            time.sleep(0.2)
            status = run_to_end(client, run["run"])
            latencies.append(float(client.run_file(run["run"], "t0").text) - status["submit"])
        for _ in range(repeat):
            run = client.create_run("serial", spec(steps, "echo {i}"))
            time.sleep(0.2)
            started = time.perf_counter()
            status = run_to_end(client, run["run"])
            wall = time.perf_counter() - started
            images = {s["image"] for s in status["steps"]}
            assert len(images) == 1 and None not in images, images
            per_step.append(wall / steps)
    finally:
        worker.stop()
        server.stop()
    step = statistics.median(per_step)
    print(f"vre, submit -> first command in a container: {statistics.median(latencies):.3f} s")
    print(
        f"vre, {steps}-step run in containers: {step * 1000:.0f} ms per step,"
        f" {(step - floor) * 1000:.0f} ms beyond podman's own {floor * 1000:.0f} ms"
        f" ({step / floor:.2f}x the floor)"
    )
    verdict = "PASS" if step - floor <= 0.010 else "MISS"
    print(f"target: overhead beyond the podman floor <= 10 ms per step: {verdict}")


if __name__ == "__main__":
    main()
