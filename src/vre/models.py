"""Every table, so Alembic sees the whole schema."""

from vre.db import Base
from vre.identity.models import Account, Token
from vre.lake.models import (
    DID,
    RSE,
    Attachment,
    DIDMeta,
    PendingUpload,
    Replica,
    RSEAttribute,
    Scope,
)

__all__ = [
    "DID",
    "RSE",
    "Account",
    "Attachment",
    "Base",
    "DIDMeta",
    "PendingUpload",
    "RSEAttribute",
    "Replica",
    "Scope",
    "Token",
]
