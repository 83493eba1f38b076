"""run steps record the image they ran in; workspace retention rules

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 04:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import vre.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_steps") as batch:
        batch.add_column(sa.Column("image", sa.String(length=512), nullable=True))
    op.create_table(
        "run_retention_rules",
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("pattern", sa.String(length=512), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("apply_on", vre.db.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "pattern"),
    )
    op.create_index(
        "ix_run_retention_rules_status", "run_retention_rules", ["status"], unique=False
    )
    op.create_index(
        "ix_run_retention_rules_apply_on", "run_retention_rules", ["apply_on"], unique=False
    )


def downgrade() -> None:
    op.drop_table("run_retention_rules")
    with op.batch_alter_table("run_steps") as batch:
        batch.drop_column("image")
