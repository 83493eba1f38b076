"""``vre serve``, ``vre worker`` and ``vre up``: the two process types, or both at once."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import typer

from vre.cli.output import console, fail

if TYPE_CHECKING:
    from vre.config import Settings

# Settings that are secrets: read once, then gone from the environment (see ``private``).
SECRET_VARIABLES = ("VRE_ROOT_PASSWORD", "VRE_SECRET_KEY", "VRE_DATABASE_URL")


def private() -> Settings:
    """What ``serve``, ``worker`` and ``up`` do first: make this process's files its own
    and take the secrets out of its environment.

    The umask makes everything the process creates (database, key, workspaces, logs)
    readable by its user alone. The settings are read once (then cached) and the secret
    ones leave the environment: no child (a step, podman, a Rucio client) inherits them,
    and ``/proc/PID/environ`` no longer shows them. The secret key is read (or made) now,
    so a wrong one stops the start with one line instead of failing later."""
    from vre import sealing
    from vre.config import get_settings
    from vre.errors import VREError

    os.umask(0o077)
    settings = get_settings()
    forget_environment(SECRET_VARIABLES)
    try:
        settings.ensure_home()
        sealing.current_key()
    except VREError as exc:
        fail(exc.message)
    return settings


def forget_environment(names: Iterable[str]) -> None:
    """Remove ``names`` from the environment, and their text from the process's memory.

    ``os.environ.pop`` unsets a variable for children, but the kernel shows a process's
    environment as it was at exec (``/proc/PID/environ``): the strings there are zeroed
    too, once nothing points at them any more."""
    prefixes = tuple(f"{name}=".encode() for name in names)
    found: list[tuple[int, int]] = []
    try:
        environ = ctypes.POINTER(ctypes.c_void_p).in_dll(ctypes.CDLL(None), "environ")
        index = 0
        while (address := environ[index]) is not None:
            entry = ctypes.string_at(address)
            if entry.startswith(prefixes):
                found.append((address, len(entry)))
            index += 1
    except (OSError, ValueError, AttributeError):  # no C environment to reach: unset only
        found = []
    for name in names:
        os.environ.pop(name, None)
    for address, size in found:
        ctypes.memset(address, 0, size)


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
) -> None:
    """Run the API server (migrates the database first)."""
    import uvicorn

    from vre.api import serving
    from vre.api.app import create_app

    settings = private()
    uvicorn.Server(serving.config(create_app(settings), settings, host, port, "info")).run()


def worker(
    interval: float | None = typer.Option(None, help="Seconds between housekeeping rounds."),
    threads: int | None = typer.Option(None, help="Parallel transfers (VRE_TRANSFER_THREADS)."),
    upload_grace: float | None = typer.Option(
        None, help="Seconds before an unfinished upload counts as dead and its bytes go."
    ),
    reaper_grace: float | None = typer.Option(
        None, help="Seconds a replica no lock holds is kept before the reaper deletes it."
    ),
    once: bool = typer.Option(False, "--once", help="Do one round of everything and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every claim."),
) -> None:
    """Run the background daemons (transfers, rules, reaper) until interrupted."""
    from vre.worker import Worker

    base = private()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )
    for noisy in ("httpx", "fsspec", "sqlalchemy", "botocore", "s3fs", "aiobotocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    overrides = {
        "worker_interval": interval,
        "transfer_threads": threads,
        "upload_grace": upload_grace,
        "reaper_grace": reaper_grace,
    }
    settings = base.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    daemon = Worker(settings)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: daemon.stop())
    daemon.run(once=once)


def up(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    demo: bool = typer.Option(False, "--demo", help="Load demo data (scope, RSE, dataset)."),
) -> None:
    """Server and workers in one process, for a laptop; Ctrl-C stops everything."""
    import uvicorn

    from vre.api.app import create_app, prepare
    from vre.worker import Worker

    settings = private()
    _, sessions, generated = prepare(settings)
    if generated:
        console.print(f"Created account [bold]root[/bold] with password: {generated}")
        console.print(f"(also written to {settings.home / 'root-password'})", style="dim")
    if demo:
        from vre.demo import load_demo
        from vre.errors import VREError

        try:
            summary = load_demo(sessions, settings)  # type: ignore[arg-type]
        except VREError as exc:
            console.print(f"[red]error:[/red] cannot load the demo: {exc.message}")
            raise typer.Exit(2) from exc
        console.print(f"Demo data: {summary}")
    daemon = Worker(settings)
    thread = threading.Thread(target=daemon.run, name="vre-worker", daemon=True)
    thread.start()
    from vre.api import serving

    server = uvicorn.Server(serving.config(create_app(settings), settings, host, port, "warning"))
    url = f"http://{host}:{port}"
    console.print(f"VRE running at [bold]{url}[/bold]  (API docs: {url}/api/v1/docs)")
    console.print(f"Log in with:  vre login {url} --account root", style="dim")
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its clean shutdown
        pass
    finally:
        daemon.stop()
        thread.join(timeout=10)
        time.sleep(0)
        console.print("VRE stopped.")
