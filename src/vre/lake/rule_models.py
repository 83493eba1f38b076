"""Tables of replication: rules, their locks, transfers, quotas and usage."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from vre.db import Base, UTCDateTime, utcnow
from vre.lake.models import BigId

OK, REPLICATING, STUCK = "ok", "replicating", "stuck"
QUEUED, SUBMITTED, DONE, FAILED = "queued", "submitted", "done", "failed"


class Rule(Base):
    __tablename__ = "rules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    did_id: Mapped[int] = mapped_column(ForeignKey("dids.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    rse_expression: Mapped[str] = mapped_column(String(512))
    copies: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(16), default=REPLICATING)
    locks_ok: Mapped[int] = mapped_column(Integer, default=0)
    locks_replicating: Mapped[int] = mapped_column(Integer, default=0)
    locks_stuck: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    comment: Mapped[str] = mapped_column(String(512), default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Lock(Base):
    """A rule's hold on one file on one RSE."""

    __tablename__ = "locks"
    __table_args__ = (Index("ix_locks_did_rse", "did_id", "rse_id"),)

    rule_id: Mapped[int] = mapped_column(
        ForeignKey("rules.id", ondelete="CASCADE"), primary_key=True
    )
    did_id: Mapped[int] = mapped_column(ForeignKey("dids.id", ondelete="CASCADE"), primary_key=True)
    rse_id: Mapped[int] = mapped_column(ForeignKey("rses.id"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default=REPLICATING)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class Transfer(Base):
    """A request to copy one file to one RSE, claimed and done by a worker."""

    __tablename__ = "transfers"
    __table_args__ = (
        Index("ix_transfers_state_next", "state", "next_attempt_at"),
        Index("ix_transfers_did_rse", "did_id", "rse_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    did_id: Mapped[int] = mapped_column(ForeignKey("dids.id", ondelete="CASCADE"))
    rse_id: Mapped[int] = mapped_column(ForeignKey("rses.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Quota(Base):
    __tablename__ = "quotas"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    rse_id: Mapped[int] = mapped_column(ForeignKey("rses.id", ondelete="CASCADE"), primary_key=True)
    bytes: Mapped[int] = mapped_column(BigInteger)


class Usage(Base):
    """Bytes and files an account's locks hold on an RSE, kept in step with the locks."""

    __tablename__ = "account_usage"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    rse_id: Mapped[int] = mapped_column(ForeignKey("rses.id", ondelete="CASCADE"), primary_key=True)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    files: Mapped[int] = mapped_column(Integer, default=0)
