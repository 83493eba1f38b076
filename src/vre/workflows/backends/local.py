"""The local backend: each command runs with bash in the workspace, like REANA's jobs.

Output goes to the step's log line by line (stdout and stderr interleaved), with
secret values masked; the last lines of stderr are kept for the run's status.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

STDERR_TAIL = 20


@dataclass
class Outcome:
    exit_code: int
    stderr_tail: str
    timed_out: bool = False
    stopped: bool = False


CHUNK = 64 * 1024  # the most of one output line held at once: a 200 MB line streams


def mask(line: str, secrets: list[str]) -> str:
    for value in secrets:
        if value:
            line = line.replace(value, "***")
    return line


class Masker:
    """Masks secrets in a stream read in pieces of at most ``CHUNK`` bytes.

    A piece that ends mid-line keeps its last ``longest - 1`` characters back until the
    next piece: a secret split across two pieces is still masked whole."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets
        self.keep = max((len(s) for s in secrets), default=1) - 1
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.carry = ""

    def feed(self, raw: bytes) -> str:
        text = mask(self.carry + self.decoder.decode(raw), self.secrets)
        if text.endswith("\n") or self.keep == 0:
            self.carry = ""
            return text
        self.carry = text[-self.keep :]
        return text[: -self.keep]

    def close(self) -> str:
        text = mask(self.carry + self.decoder.decode(b"", final=True), self.secrets)
        self.carry = ""
        return text


def open_log(log: Path) -> IO[str]:
    """Append to a step's log, never through a link planted under its name."""
    log.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    return open(os.open(log, flags, 0o600), "a", encoding="utf-8", errors="replace")


def run_command(
    command: str,
    *,
    cwd: Path,
    log: Path,
    env: Mapping[str, str],
    timeout: float,
    should_stop: Callable[[], bool],
    secrets: list[str] | None = None,
    argv: list[str] | None = None,
    on_kill: Callable[[], None] | None = None,
) -> Outcome:
    """Run one command to completion, timeout or stop; never raises for a failing command.

    ``argv`` replaces the plain ``bash -c command`` (a container runtime's command line);
    ``on_kill`` runs after a stop or timeout killed it (to remove a container)."""
    hidden = sorted(secrets or [], key=len, reverse=True)
    tail: deque[str] = deque(maxlen=STDERR_TAIL)
    lock = threading.Lock()
    with open_log(log) as out:
        out.write(f"$ {mask(command, hidden)}\n")
        out.flush()
        process = subprocess.Popen(
            argv or ["bash", "-c", command],
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: stop and timeout kill it all
        )

        def pump(stream: IO[bytes], keep: bool) -> None:
            masker = Masker(hidden)
            for raw in iter(lambda: stream.readline(CHUNK), b""):
                piece = masker.feed(raw)
                with lock:
                    out.write(piece)
                    out.flush()
                if keep and piece.strip():
                    tail.append(piece.rstrip("\n")[-500:])
            rest = masker.close()
            if rest:
                with lock:
                    out.write(rest)

        readers = [
            threading.Thread(target=pump, args=(process.stdout, False), daemon=True),
            threading.Thread(target=pump, args=(process.stderr, True), daemon=True),
        ]
        for reader in readers:
            reader.start()
        timed_out, stopped = _watch(process, timeout, should_stop, on_kill)
        process.wait()
        for reader in readers:
            reader.join(timeout=5)
        if timed_out:
            out.write(f"[vre] command timed out after {timeout:.0f} s\n")
    code = process.returncode
    return Outcome(code if code is not None else -1, "\n".join(tail), timed_out, stopped)


def _watch(
    process: subprocess.Popen[bytes],
    timeout: float,
    should_stop: Callable[[], bool],
    on_kill: Callable[[], None] | None,
) -> tuple[bool, bool]:
    """Wait for the command's end, its timeout or a stop; (timed out, stopped)."""
    # A blocking wait on its own thread sees the exit at once; Popen.wait(timeout=)
    # polls with a back-off that sees a 120 ms command end ~40 ms late.
    exited = threading.Event()

    def wait() -> None:
        process.wait()
        exited.set()

    threading.Thread(target=wait, daemon=True).start()
    deadline = time.monotonic() + timeout
    timed_out = stopped = False
    while not exited.wait(0.2):
        if time.monotonic() > deadline:
            timed_out = True
        elif should_stop():
            stopped = True
        if (timed_out or stopped) and exited.is_set():
            break  # it ended meanwhile: its group may be gone, never signal a reused id
        if timed_out or stopped:
            _kill(process)
            if on_kill:
                on_kill()
            break
    return timed_out, stopped


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
