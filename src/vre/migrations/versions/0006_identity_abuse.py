"""token parents, disabled and deleted accounts, counted login failures

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import vre.db

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("disabled_at", vre.db.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("deleted_at", vre.db.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_tokens_parent_id_tokens", "tokens", ["parent_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index(batch.f("ix_tokens_parent_id"), ["parent_id"], unique=False)
    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("lockouts", sa.Integer(), nullable=False),
        sa.Column("locked_until", vre.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", vre.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("login_failures") as batch:
        batch.create_index(batch.f("ix_login_failures_updated_at"), ["updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("login_failures") as batch:
        batch.drop_index(batch.f("ix_login_failures_updated_at"))
    op.drop_table("login_failures")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_index(batch.f("ix_tokens_parent_id"))
        batch.drop_constraint("fk_tokens_parent_id_tokens", type_="foreignkey")
        batch.drop_column("parent_id")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("deleted_at")
        batch.drop_column("disabled_at")
