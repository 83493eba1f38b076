"""Tables owned by the lake service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from vre.db import Base, UTCDateTime, utcnow

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
BigId = BigInteger().with_variant(Integer, "sqlite")

FILE, DATASET, CONTAINER = "file", "dataset", "container"
DID_TYPES = (FILE, DATASET, CONTAINER)


class Scope(Base):
    __tablename__ = "scopes"

    name: Mapped[str] = mapped_column(String(30), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DID(Base):
    __tablename__ = "dids"
    __table_args__ = (UniqueConstraint("scope", "name", name="uq_dids_scope_name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scope: Mapped[str] = mapped_column(ForeignKey("scopes.name"))
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(16))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    adler32: Mapped[str | None] = mapped_column(String(8), nullable=True)
    md5: Mapped[str | None] = mapped_column(String(32), nullable=True)
    is_open: Mapped[bool] = mapped_column(Boolean, default=True)
    obsolete: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DIDMeta(Base):
    """One key/value per row; ``number`` mirrors numeric values for range filters."""

    __tablename__ = "did_meta"
    __table_args__ = (
        Index("ix_did_meta_key_value", "key", "value"),
        Index("ix_did_meta_key_number", "key", "number"),
    )

    did_id: Mapped[int] = mapped_column(ForeignKey("dids.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    number: Mapped[float | None] = mapped_column(Float, nullable=True)


class Attachment(Base):
    """Parent collection contains child DID."""

    __tablename__ = "attachments"

    parent_id: Mapped[int] = mapped_column(
        ForeignKey("dids.id", ondelete="CASCADE"), primary_key=True
    )
    child_id: Mapped[int] = mapped_column(
        ForeignKey("dids.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RSE(Base):
    __tablename__ = "rses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(1024))
    # Protocol settings handed to fsspec (endpoint, credentials): set by admins, never shown.
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RSEAttribute(Base):
    __tablename__ = "rse_attributes"

    rse_id: Mapped[int] = mapped_column(ForeignKey("rses.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


AVAILABLE, COPYING, UNAVAILABLE, BAD = "available", "copying", "unavailable", "bad"
REPLICA_STATES = (AVAILABLE, COPYING, UNAVAILABLE, BAD)


class Replica(Base):
    __tablename__ = "replicas"

    did_id: Mapped[int] = mapped_column(ForeignKey("dids.id", ondelete="CASCADE"), primary_key=True)
    rse_id: Mapped[int] = mapped_column(ForeignKey("rses.id"), primary_key=True, index=True)
    state: Mapped[str] = mapped_column(String(16), default=AVAILABLE)
    path: Mapped[str] = mapped_column(String(1024))
    # How many rule locks hold this replica; at zero the tombstone says since when it is
    # free to go (None: never registered as a deletion candidate, like Rucio's).
    lock_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tombstone: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PendingUpload(Base):
    """Bytes being written but not yet catalogued: found and removed if the writer dies."""

    __tablename__ = "pending_uploads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rse_id: Mapped[int] = mapped_column(ForeignKey("rses.id"))
    path: Mapped[str] = mapped_column(String(1024))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set by the register transaction: these bytes are the catalogued replica's, and a
    # sweep after a crash moves them into place instead of removing them.
    registered: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class CollectionUpdate(Base):
    """A file attached to or detached from a collection: rules over it must look again."""

    __tablename__ = "collection_updates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    parent_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
