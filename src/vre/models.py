"""Every table, so Alembic sees the whole schema."""

from vre.db import Base
from vre.identity.models import Account, Token
from vre.lake.models import (
    DID,
    RSE,
    Attachment,
    CollectionUpdate,
    DIDMeta,
    PendingUpload,
    Replica,
    RSEAttribute,
    Scope,
)
from vre.lake.rule_models import Lock, Quota, Rule, Transfer, Usage
from vre.workflows.models import RetentionRule, Run, RunStep, Secret

__all__ = [
    "DID",
    "RSE",
    "Account",
    "Attachment",
    "Base",
    "CollectionUpdate",
    "DIDMeta",
    "Lock",
    "PendingUpload",
    "Quota",
    "RSEAttribute",
    "Replica",
    "RetentionRule",
    "Rule",
    "Run",
    "RunStep",
    "Scope",
    "Secret",
    "Token",
    "Transfer",
    "Usage",
]
