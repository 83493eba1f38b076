"""File bytes through the API: streamed uploads and downloads.

Uploads are read from the socket on the event loop in blocks of ``VRE_BLOCK_SIZE`` and
written by an upload thread (``vre.api.limits``), so neither a slow storage element nor a
slow client blocks other requests; each upload holds one of a bounded number of slots.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from vre.api.deps import Caller, factory, unit
from vre.api.limits import UploadSlot, stream_to_thread
from vre.errors import Invalid
from vre.lake import catalogue, replicas, storage, upload
from vre.lake.names import parse_did

router = APIRouter(tags=["files"])


@router.put("/files/{scope}/{name:path}", status_code=201)
async def put_file(
    scope: str,
    name: str,
    caller: Caller,
    request: Request,
    _slot: UploadSlot,
    rse: str = Query(description="storage element to write to"),
    dataset: str | None = Query(default=None, description="add the file to SCOPE:NAME"),
    x_vre_meta: str | None = Header(default=None, description="JSON object of metadata"),
    x_vre_adler32: str | None = Header(default=None, description="expected adler32"),
    x_vre_md5: str | None = Header(default=None, description="expected md5"),
) -> dict[str, Any]:
    """Stream the request body to ``rse`` and register the file once it is stored."""
    try:
        meta_values = json.loads(x_vre_meta) if x_vre_meta else None
    except json.JSONDecodeError as exc:
        raise Invalid(f"X-VRE-Meta is not valid JSON: {exc.msg} at position {exc.pos}") from exc
    if meta_values is not None and not isinstance(meta_values, dict):
        raise Invalid("X-VRE-Meta must be a JSON object")
    target = parse_did(dataset, default_scope=scope) if dataset else None
    sessions = factory(request)
    result = await stream_to_thread(
        request,
        lambda blocks: upload.upload(
            sessions,
            caller,
            scope,
            name,
            rse,
            blocks,
            dataset=target,
            meta_values=meta_values,
            adler32=x_vre_adler32,
            md5=x_vre_md5,
        ),
    )
    return asdict(result)


@router.get("/files/{scope}/{name:path}")
def get_file(
    scope: str,
    name: str,
    caller: Caller,
    request: Request,
    rse: str | None = Query(default=None, description="read from this storage element"),
) -> StreamingResponse:
    """The bytes of one file from an available replica, with its checksums in headers."""
    with unit(request) as session:
        did = catalogue.readable(session, caller, scope, name)
        if did.type != "file":
            raise Invalid(f"{scope}:{name} is a {did.type}: download its files one by one")
        chosen, replica = replicas.pick_available(session, did, rse)
        url = storage.join(chosen.prefix, replica.path)
        options = dict(chosen.options or {})
    block_size = request.app.state.settings.block_size
    headers = {
        "Content-Length": str(did.bytes),
        "X-VRE-Adler32": did.adler32 or "",
        "X-VRE-Md5": did.md5 or "",
        "X-VRE-RSE": chosen.name,
    }
    return StreamingResponse(
        storage.read(url, block_size, options=options),
        media_type="application/octet-stream",
        headers=headers,
    )
