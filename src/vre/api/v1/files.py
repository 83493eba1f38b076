"""File bytes through the API: streamed uploads and downloads.

Uploads are read from the socket on the event loop in blocks of ``VRE_BLOCK_SIZE`` and
written by a worker thread, so a slow storage element never blocks other requests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from vre.api.deps import Caller, factory, unit
from vre.errors import Invalid
from vre.lake import catalogue, replicas, storage, upload
from vre.lake.names import parse_did

router = APIRouter(tags=["files"])


class _Body:
    """The request body as a bounded queue of blocks between the event loop and a thread.

    The event loop keeps reading the socket while the writer thread hashes and
    writes the previous block, so receiving, hashing and writing overlap. A body that
    ends early (the client went away) raises in the writer, never looks complete.
    """

    def __init__(self, request: Request, depth: int = 4) -> None:
        self.request = request
        self.block_size: int = request.app.state.settings.block_size
        self.expected = int(request.headers.get("content-length") or -1)
        self.send, self.receive = anyio.create_memory_object_stream[bytes](max_buffer_size=depth)
        self.error: BaseException | None = None

    async def pump(self) -> None:
        received = 0
        try:
            async with self.send:
                parts: list[bytes] = []
                size = 0
                async for chunk in self.request.stream():
                    parts.append(chunk)
                    size += len(chunk)
                    if size >= self.block_size:
                        await self.send.send(b"".join(parts))
                        received += size
                        parts, size = [], 0
                if parts:
                    await self.send.send(b"".join(parts))
                    received += size
                if self.expected >= 0 and received != self.expected:
                    raise Invalid(f"body ended after {received} of {self.expected} bytes")
        except BaseException as exc:  # handed to the writer thread, not lost in a task group
            self.error = exc
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                raise

    def blocks(self) -> Iterator[bytes]:
        """Called from the writer thread."""
        while True:
            try:
                yield anyio.from_thread.run(self.receive.receive)
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                if self.error is not None:
                    raise Invalid(f"upload interrupted: {self.error}") from self.error
                return


@router.put("/files/{scope}/{name:path}", status_code=201)
async def put_file(
    scope: str,
    name: str,
    caller: Caller,
    request: Request,
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
        raise Invalid(f"X-VRE-Meta is not valid JSON: {exc}") from exc
    if meta_values is not None and not isinstance(meta_values, dict):
        raise Invalid("X-VRE-Meta must be a JSON object")
    target = parse_did(dataset, default_scope=scope) if dataset else None
    sessions = factory(request)
    body = _Body(request)
    failure: BaseException | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(body.pump)
        try:
            result = await anyio.to_thread.run_sync(
                lambda: upload.upload(
                    sessions,
                    caller,
                    scope,
                    name,
                    rse,
                    body.blocks(),
                    dataset=target,
                    meta_values=meta_values,
                    adler32=x_vre_adler32,
                    md5=x_vre_md5,
                )
            )
        except Exception as exc:  # re-raised outside the task group, unwrapped
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
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
