"""Tables owned by the workflows service: runs and their steps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from vre import sealing
from vre.db import Base, UTCDateTime, utcnow
from vre.identity.models import Account
from vre.lake.models import BigId

CREATED, QUEUED, PENDING, RUNNING = "created", "queued", "pending", "running"
FINISHED, FAILED, STOPPED, DELETED = "finished", "failed", "stopped", "deleted"
ACTIVE = (QUEUED, PENDING, RUNNING)
DONE_STATES = (FINISHED, FAILED, STOPPED)


class Run(Base):
    """One execution ``name.N`` of a specification, in its own workspace."""

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("account_id", "name", "number", name="uq_runs_name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=CREATED, index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # what the engines read
    # The specification exactly as it was sent (bounded by VRE_MAX_SPECIFICATION_SIZE, no
    # YAML aliases): what a user, a compatibility API or provenance shows; none before 0008.
    spec_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    spec_digest: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    workspace: Mapped[str] = mapped_column(String(1024))
    steps_total: Mapped[int] = mapped_column(Integer, default=0)
    steps_done: Mapped[int] = mapped_column(Integer, default=0)
    current_step: Mapped[str | None] = mapped_column(String(256), nullable=True)
    current_command: Mapped[str | None] = mapped_column(Text, nullable=True)
    restart_from: Mapped[str | None] = mapped_column(String(256), nullable=True)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    environment_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The executing worker renews this; past it, the worker is gone and the run failed.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    owner: Mapped[Account] = relationship(Account, lazy="select", viewonly=True)

    @property
    def label(self) -> str:
        return f"{self.name}.{self.number}"


class RunStep(Base):
    __tablename__ = "run_steps"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), default=CREATED)
    environment: Mapped[str | None] = mapped_column(String(512), nullable=True)
    compute_backend: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # What the step really ran in: the container image ID, or "host".
    image: Mapped[str | None] = mapped_column(String(512), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RetentionRule(Base):
    """``workspace.retention_days``: files matching ``pattern`` go ``days`` after the run ends.

    ``created`` until the run ends, then ``active`` with ``apply_on`` set, then ``applied``
    (REANA's states); a restart makes them ``created`` again."""

    __tablename__ = "run_retention_rules"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    pattern: Mapped[str] = mapped_column(String(512), primary_key=True)
    days: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="created", index=True)
    apply_on: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


class Secret(Base):
    """A per-account secret handed to steps; never returned by the API, never logged.

    The database holds it sealed (``vre.sealing``, bound to its account and name): a
    copy of the database, or a step that reads it, learns nothing of it."""

    __tablename__ = "secrets"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), default="env")  # env or file
    sealed: Mapped[str] = mapped_column("value", Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def context(self) -> str:
        return secret_context(self.account_id, self.name)

    @property
    def value(self) -> str:
        """The plain text, opened here only: read it where a step is handed its secrets."""
        return sealing.open(self.sealed, self.context)

    def seal(self, value: str) -> None:
        self.sealed = sealing.seal(value, self.context)


def secret_context(account_id: int, name: str) -> str:
    """What a sealed secret is bound to: moved to another account or name, it won't open."""
    return f"secret {account_id} {name}"
