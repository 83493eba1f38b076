"""pending uploads say whether their register transaction committed

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 20:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pending_uploads") as batch:
        batch.add_column(
            sa.Column("registered", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # Left by a crash between registering and moving the bytes into place (the code before
    # this revision told them apart by a replica at the same path): still registered.
    op.execute(
        "UPDATE pending_uploads SET registered = TRUE WHERE EXISTS (SELECT 1 FROM replicas"
        " WHERE replicas.rse_id = pending_uploads.rse_id"
        " AND replicas.path = pending_uploads.path)"
    )


def downgrade() -> None:
    with op.batch_alter_table("pending_uploads") as batch:
        batch.drop_column("registered")
