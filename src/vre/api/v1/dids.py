"""DIDs: collections, listing, attachments and metadata.

DID names may contain ``/``, so the name is always the last path parameter and the
action sits before the scope: ``/dids/S/N``, ``/attachments/S/N``, ``/meta/S/N``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from vre.api.deps import Caller, unit
from vre.api.params import MAX_INT
from vre.lake import catalogue, meta
from vre.lake.models import DID
from vre.lake.names import parse_did

router = APIRouter(tags=["dids"])
MetaValue = str | int | float | bool


class CollectionIn(BaseModel):
    scope: str
    name: str
    type: str = "dataset"
    meta: dict[str, MetaValue] = Field(default_factory=dict)


class DIDOut(BaseModel):
    scope: str
    name: str
    type: str
    bytes: int | None = None
    adler32: str | None = None
    md5: str | None = None
    open: bool | None = None
    length: int | None = None
    created_at: datetime


class DIDDetail(DIDOut):
    meta: dict[str, MetaValue]
    content: list[DIDOut] | None = None


class DIDList(BaseModel):
    dids: list[str] = Field(description="DIDs as SCOPE:NAME")


class StatusIn(BaseModel):
    open: bool


class MetaIn(BaseModel):
    meta: dict[str, MetaValue]


def did_out(did: DID, length: int | None = None) -> DIDOut:
    collection = did.type != "file"
    return DIDOut(
        scope=did.scope,
        name=did.name,
        type=did.type,
        bytes=did.bytes,
        adler32=did.adler32,
        md5=did.md5,
        open=did.is_open if collection else None,
        length=length if collection else None,
        created_at=did.created_at,
    )


def _pairs(body: DIDList) -> list[tuple[str, str]]:
    return [parse_did(d) for d in body.dids]


@router.post("/dids", status_code=201)
def add_collection(body: CollectionIn, caller: Caller, request: Request) -> DIDOut:
    with unit(request) as session:
        did = catalogue.add_collection(
            session, caller, body.scope, body.name, body.type, meta_values=body.meta
        )
        return did_out(did, 0)


@router.get("/dids/{scope}")
def list_dids(
    scope: str,
    caller: Caller,
    request: Request,
    pattern: str = "*",
    type: str | None = Query(default=None, description="file, dataset, container, collection"),
    filter: str | None = Query(default=None, description="metadata filter, e.g. run>100,kind=mc"),
    recursive: bool = False,
    limit: int | None = Query(default=None, gt=0, le=MAX_INT),
) -> list[DIDOut]:
    with unit(request) as session:
        found = catalogue.list_dids(
            session,
            caller,
            f"{scope}:{pattern}",
            kind=type,
            filters=filter,
            recursive=recursive,
            limit=limit,
        )
        lengths = catalogue.lengths_for(session, caller, [d.id for d in found if d.type != "file"])
        return [did_out(d, lengths.get(d.id, 0)) for d in found]


@router.get("/dids/{scope}/{name:path}")
def show(scope: str, name: str, caller: Caller, request: Request) -> DIDDetail:
    with unit(request) as session:
        did = catalogue.readable(session, caller, scope, name)
        content = catalogue.contents_for(session, caller, did) if did.type != "file" else None
        lengths = catalogue.lengths_for(
            session, caller, [did.id, *[c.id for c in content or [] if c.type != "file"]]
        )
        return DIDDetail(
            **did_out(did, lengths.get(did.id, 0)).model_dump(),
            meta=meta.get_all(session, did.id),
            content=None
            if content is None
            else [did_out(c, lengths.get(c.id, 0)) for c in content],
        )


@router.put("/status/{scope}/{name:path}")
def set_status(scope: str, name: str, body: StatusIn, caller: Caller, request: Request) -> DIDOut:
    with unit(request) as session:
        return did_out(catalogue.set_open(session, caller, scope, name, body.open))


@router.post("/attachments/{scope}/{name:path}")
def attach(
    scope: str, name: str, body: DIDList, caller: Caller, request: Request
) -> dict[str, int]:
    with unit(request) as session:
        return {"attached": catalogue.attach(session, caller, scope, name, _pairs(body))}


@router.post("/detachments/{scope}/{name:path}")
def detach(
    scope: str, name: str, body: DIDList, caller: Caller, request: Request
) -> dict[str, int]:
    with unit(request) as session:
        return {"detached": catalogue.detach(session, caller, scope, name, _pairs(body))}


@router.get("/meta/{scope}/{name:path}")
def get_meta(scope: str, name: str, caller: Caller, request: Request) -> dict[str, Any]:
    with unit(request) as session:
        did = catalogue.readable(session, caller, scope, name)
        return meta.get_all(session, did.id)


@router.post("/meta/{scope}/{name:path}")
def set_meta(
    scope: str, name: str, body: MetaIn, caller: Caller, request: Request
) -> dict[str, Any]:
    with unit(request) as session:
        did = catalogue.writable(session, caller, scope, name)
        meta.set_many(session, [did.id], body.meta)
        return meta.get_all(session, did.id)


@router.delete("/meta/{scope}/{name:path}")
def unset_meta(scope: str, name: str, key: str, caller: Caller, request: Request) -> dict[str, Any]:
    with unit(request) as session:
        did = catalogue.writable(session, caller, scope, name)
        meta.unset(session, did.id, key)
        return meta.get_all(session, did.id)
