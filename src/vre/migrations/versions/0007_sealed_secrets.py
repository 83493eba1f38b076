"""account secrets and RSE protocol options are stored sealed

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:30:00

Every plain-text secret value and RSE option value is sealed with the server's secret key
(``vre.sealing``); from here on the code opens sealed values only. The key is read (or
made, under VRE_HOME) only when there is something to seal. The downgrade opens them
again, for the code before this revision.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from vre import sealing

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

secrets = sa.table(
    "secrets",
    sa.column("account_id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("value", sa.Text),
)
rses = sa.table("rses", sa.column("id", sa.Integer), sa.column("options", sa.JSON))


def _rewrite(secret: Any, options: Any) -> None:
    """Pass every secret and RSE option through ``secret`` and ``options``."""
    bind = op.get_bind()
    rows = bind.execute(sa.select(secrets.c.account_id, secrets.c.name, secrets.c.value))
    for account_id, name, value in list(rows):
        new = secret(value, f"secret {account_id} {name}")  # models.secret_context
        if new != value:
            bind.execute(
                secrets.update()
                .where(secrets.c.account_id == account_id, secrets.c.name == name)
                .values(value=new)
            )
    for rse_id, stored in list(bind.execute(sa.select(rses.c.id, rses.c.options))):
        new_options = options(stored or {})
        if new_options != (stored or {}):
            bind.execute(rses.update().where(rses.c.id == rse_id).values(options=new_options))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # The plain text's old cells are zeroed, not left in free space (vre.db.migrate
        # then empties the WAL). PostgreSQL keeps old row versions until VACUUM FULL.
        op.execute("PRAGMA secure_delete = ON")
    _rewrite(
        lambda value, context: value if sealing.is_sealed(value) else sealing.seal(value, context),
        sealing.seal_options,
    )


def downgrade() -> None:
    _rewrite(
        lambda value, context: sealing.open(value, context) if sealing.is_sealed(value) else value,
        sealing.open_options,
    )
