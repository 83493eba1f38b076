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
    prefix: str = Field(
        description="URL prefix: file:///data/rse1, root://host:1094//data,"
        " davs://host:2880/data (or https://, dav://, http://), s3://bucket/path"
    )
    attributes: dict[str, str] = Field(default_factory=dict)
    options: dict[str, str] = Field(
        default_factory=dict,
        description="Protocol settings, e.g. S3 endpoint_url/key/secret, WebDAV"
        " username/password/token/verify. Stored, never returned.",
    )


class RSEOut(BaseModel):
    name: str
    prefix: str
    attributes: dict[str, str]
    options: list[str] = Field(description="Names of the protocol options set (not values)")
    created_at: datetime


class OptionsIn(BaseModel):
    options: dict[str, str]


class AttributeIn(BaseModel):
    value: str


def rse_out(session: Session, rse: RSE) -> RSEOut:
    return RSEOut(
        name=rse.name,
        prefix=rse.prefix,
        attributes=rses.attributes(session, rse),
        options=rses.option_keys(rse),
        created_at=rse.created_at,
    )


@router.post("/rses", status_code=201)
def add_rse(body: RSEIn, caller: Caller, request: Request) -> RSEOut:
    with unit(request) as session:
        rse = rses.add(session, caller, body.name, body.prefix, body.attributes, body.options)
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
            RSEOut(
                name=r.name,
                prefix=r.prefix,
                attributes=attrs[r.name],
                options=rses.option_keys(r),
                created_at=r.created_at,
            )
            for r in rses.list_all(session)
            if selected is None or r.name in selected
        ]


@router.get("/rses/{name}")
def show_rse(name: str, caller: Caller, request: Request) -> RSEOut:
    with unit(request) as session:
        return rse_out(session, rses.get(session, name))


@router.put("/rses/{name}/options")
def set_options(name: str, body: OptionsIn, caller: Caller, request: Request) -> RSEOut:
    """Replace the protocol options (admin only); the answer names them, never shows them."""
    with unit(request) as session:
        rse = rses.set_options(session, caller, name, body.options)
        session.flush()
        return rse_out(session, rse)


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
