"""The application factory: one app, one port, every API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from vre import __version__
from vre.api import errors, limits, metrics
from vre.api.v1 import dids, files, identity, replicas, rses, rules, runs, scopes
from vre.config import Settings, get_settings
from vre.db import make_engine, make_sessionmaker, migrate, transaction
from vre.identity.accounts import bootstrap_root

log = logging.getLogger("vre")


def prepare(settings: Settings) -> tuple[object, object, str | None]:
    """Migrate the schema and create root; returns engine, sessions, generated password."""
    settings.ensure_home()
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    sessions = make_sessionmaker(engine)
    with transaction(sessions) as session:
        generated = bootstrap_root(session, settings.home, settings.root_password)
    return engine, sessions, generated


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine, sessions, generated = prepare(settings)
        if generated:
            print(
                f"Created account 'root' with password: {generated}\n"
                f"(also written to {settings.home / 'root-password'})",
                flush=True,
            )
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessions = sessions
        yield
        engine.dispose()  # type: ignore[attr-defined]

    app = FastAPI(
        title="VRE",
        version=__version__,
        description="Virtual Research Environment: data lake, workflows and preservation.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    errors.install(app)
    # Outermost but for starlette's error middleware: it times every request body.
    app.add_middleware(limits.BodyLimits, settings=settings)
    app.state.uploads = limits.Uploads(settings)
    for module in (identity, scopes, dids, rses, replicas, files, rules, runs):
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(metrics.router)
    return app
