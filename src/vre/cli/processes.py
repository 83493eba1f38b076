"""``vre serve``, ``vre worker`` and ``vre up``: the two process types, or both at once."""

from __future__ import annotations

import logging
import signal
import threading
import time

import typer

from vre.cli.output import console


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
) -> None:
    """Run the API server (migrates the database first)."""
    import uvicorn

    from vre.api.app import create_app

    uvicorn.run(create_app(), host=host, port=port, log_level="info")


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
    from vre.config import get_settings
    from vre.worker import Worker

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
    settings = get_settings().model_copy(
        update={k: v for k, v in overrides.items() if v is not None}
    )
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
    from vre.config import get_settings
    from vre.worker import Worker

    settings = get_settings()
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
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning")
    )
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
