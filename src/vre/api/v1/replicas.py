"""Replicas: bulk registration and listing (the catalogue's hot paths)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from vre.api.deps import Caller, unit
from vre.api.params import Size
from vre.lake import replicas
from vre.lake.names import parse_did

router = APIRouter(tags=["replicas"])
MetaValue = str | int | float | bool


class FileIn(BaseModel):
    scope: str
    name: str
    bytes: Size
    adler32: str
    md5: str | None = None
    meta: dict[str, MetaValue] = Field(default_factory=dict)


class BulkIn(BaseModel):
    rse: str
    files: list[FileIn]
    dataset: str | None = Field(default=None, description="attach every file to SCOPE:NAME")


class ListIn(BaseModel):
    dids: list[str]
    available_only: bool = False


@router.post("/replicas/bulk", status_code=201)
def register(body: BulkIn, caller: Caller, request: Request) -> dict[str, int]:
    """Register many files already stored at their deterministic paths, in one transaction."""
    entries = [replicas.FileEntry(**f.model_dump()) for f in body.files]
    dataset = parse_did(body.dataset) if body.dataset else None
    with unit(request) as session:
        return replicas.register(session, caller, body.rse, entries, dataset=dataset)


def _answer(found: list[replicas.FileReplicas]) -> JSONResponse:
    # JSONResponse directly: 10,000 files must not go through the generic encoder.
    return JSONResponse([asdict(f) for f in found])


@router.post("/replicas/list", response_model=list[dict[str, Any]])
def list_many(body: ListIn, caller: Caller, request: Request) -> JSONResponse:
    """Every file under the given DIDs with its replicas and their URLs."""
    with unit(request) as session:
        pairs = [parse_did(d) for d in body.dids]
        return _answer(
            replicas.list_for(session, caller, pairs, all_states=not body.available_only)
        )


@router.get("/replicas/{scope}/{name:path}", response_model=list[dict[str, Any]])
def list_one(scope: str, name: str, caller: Caller, request: Request) -> JSONResponse:
    with unit(request) as session:
        return _answer(replicas.list_for(session, caller, [(scope, name)]))
