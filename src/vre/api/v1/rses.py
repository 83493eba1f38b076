"""Storage elements and RSE expressions."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from vre.api.deps import Caller, unit
from vre.lake import rses
from vre.lake.models import RSE

router = APIRouter(tags=["rses"])


class RSEIn(BaseModel):
    name: str
    prefix: str = Field(description="URL prefix, e.g. file:///data/rse1 or root://host:1094//data")
    attributes: dict[str, str] = Field(default_factory=dict)


class RSEOut(BaseModel):
    name: str
    prefix: str
    attributes: dict[str, str]
    created_at: datetime


class AttributeIn(BaseModel):
    value: str


def rse_out(session: Session, rse: RSE) -> RSEOut:
    return RSEOut(
        name=rse.name,
        prefix=rse.prefix,
        attributes=rses.attributes(session, rse),
        created_at=rse.created_at,
    )


@router.post("/rses", status_code=201)
def add_rse(body: RSEIn, caller: Caller, request: Request) -> RSEOut:
    with unit(request) as session:
        rse = rses.add(session, caller, body.name, body.prefix, body.attributes)
        session.flush()
        return rse_out(session, rse)


@router.get("/rses")
def list_rses(
    caller: Caller,
    request: Request,
    expression: str | None = Query(default=None, description="RSE expression to resolve"),
) -> list[RSEOut]:
    with unit(request) as session:
        selected = set(rses.resolve(session, expression)) if expression else None
        attrs = rses.all_with_attributes(session)
        return [
            RSEOut(name=r.name, prefix=r.prefix, attributes=attrs[r.name], created_at=r.created_at)
            for r in rses.list_all(session)
            if selected is None or r.name in selected
        ]


@router.get("/rses/{name}")
def show_rse(name: str, caller: Caller, request: Request) -> RSEOut:
    with unit(request) as session:
        return rse_out(session, rses.get(session, name))


@router.put("/rses/{name}/attributes/{key}")
def set_attribute(
    name: str, key: str, body: AttributeIn, caller: Caller, request: Request
) -> dict[str, str]:
    with unit(request) as session:
        rses.set_attribute(session, caller, name, key, body.value)
        return rses.attributes(session, rses.get(session, name))


@router.delete("/rses/{name}/attributes/{key}")
def delete_attribute(name: str, key: str, caller: Caller, request: Request) -> dict[str, str]:
    with unit(request) as session:
        rses.delete_attribute(session, caller, name, key)
        return rses.attributes(session, rses.get(session, name))
