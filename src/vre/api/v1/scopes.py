"""Scopes."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel

from vre.api.deps import Caller, unit
from vre.lake import scopes

router = APIRouter(tags=["scopes"])


class ScopeIn(BaseModel):
    name: str
    account: str | None = None
    public: bool = False


class ScopeOut(BaseModel):
    name: str
    account: str
    public: bool
    created_at: datetime


@router.post("/scopes", status_code=201)
def add_scope(body: ScopeIn, caller: Caller, request: Request) -> ScopeOut:
    with unit(request) as session:
        scope = scopes.add(session, caller, body.name, owner=body.account, public=body.public)
        owner = body.account or caller.name
        return ScopeOut(
            name=scope.name, account=owner, public=scope.is_public, created_at=scope.created_at
        )


@router.get("/scopes")
def list_scopes(caller: Caller, request: Request) -> list[ScopeOut]:
    """The scopes the caller can read (all of them for an admin)."""
    with unit(request) as session:
        return [
            ScopeOut(name=s.name, account=owner, public=s.is_public, created_at=s.created_at)
            for s, owner in scopes.list_visible(session, caller)
        ]
