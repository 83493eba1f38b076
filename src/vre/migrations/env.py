"""Alembic environment: runs on the connection handed over by ``vre.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from vre.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # command-line alembic use: VRE_DATABASE_URL decides
    from vre.config import get_settings

    engine = create_engine(get_settings().resolved_database_url())
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
