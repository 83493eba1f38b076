"""What one slow or greedy client may take from the server: time, memory, threads.

- :class:`BodyLimits` (ASGI middleware) bounds how long a request body may take: a body
  that stalls ``VRE_BODY_TIMEOUT`` seconds, or averages under ``VRE_BODY_MIN_RATE`` after
  that, ends with 408 and a closed connection. Bodies parsed in memory (JSON) are also
  bounded in size (``VRE_MAX_REQUEST_BODY``, 413); uploads stream and are not.
- :class:`Uploads` bounds the uploads in progress, per account (429) and in total (503),
  and gives them a thread pool of their own: a held upload never takes one of the threads
  that serve every other request (sync routes and dependencies run on anyio's default pool).
- :func:`stream_to_thread` feeds an upload's body to a writer thread block by block.

Only time spent waiting for the client counts towards the body's clock: a server that is
slow to read (its storage is busy) never makes a client's upload time out.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import Depends, Request
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vre.api.deps import Caller
from vre.config import Settings
from vre.errors import Invalid, TooManyRequests, Unavailable

T = TypeVar("T")

# Routes whose body streams to storage or a workspace rather than being parsed in memory.
STREAMED = re.compile(r"^/api/v1/(files/|runs/[^/]+/workspace/)")
RETRY_AFTER = 5  # seconds a refused upload is told to wait


class _Clock:
    """The receive side of one request: counts bytes and the time spent waiting for them."""

    def __init__(self, receive: Receive, settings: Settings, limit: int | None) -> None:
        self._receive = receive
        self.timeout, self.min_rate = settings.body_timeout, settings.body_min_rate
        self.limit = limit
        self.received = 0
        self.waited = 0.0
        self.done = False
        self.failure: tuple[int, str, str] | None = None

    def budget(self) -> float:
        """Seconds the next chunk may take: the stall bound, and the average-rate bound."""
        budget = self.timeout
        if self.min_rate > 0:
            budget = min(budget, self.timeout + self.received / self.min_rate - self.waited)
        return max(budget, 0.0)

    async def receive(self) -> Message:
        if self.failure is not None:
            return {"type": "http.disconnect"}
        if self.done:  # the body is complete: this waits for a disconnect, on no clock
            return await self._receive()
        start = anyio.current_time()
        with anyio.move_on_after(self.budget()):
            message = await self._receive()
            self.waited += anyio.current_time() - start
            return self._count(message)
        self.failure = (
            408,
            "request_timeout",
            f"the request body arrived too slowly (it may stall at most {self.timeout:g} s"
            f" and must average {self.min_rate:g} bytes/s): the connection is closed",
        )
        return {"type": "http.disconnect"}

    def _count(self, message: Message) -> Message:
        if message["type"] != "http.request":
            return message
        self.received += len(message.get("body", b""))
        self.done = not message.get("more_body", False)
        if self.limit is not None and self.received > self.limit:
            self.failure = _too_large(self.limit)
            return {"type": "http.disconnect"}
        return message


def _too_large(limit: int) -> tuple[int, str, str]:
    return (
        413,
        "too_large",
        f"the request body is larger than {limit} bytes (VRE_MAX_REQUEST_BODY)",
    )


async def _answer(send: Send, failure: tuple[int, str, str]) -> None:
    status, code, message = failure
    payload = json.dumps({"error": code, "message": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),  # the rest of the body is never read: drop the socket
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class BodyLimits:
    """ASGI middleware: a request body that is too slow (408) or too big (413) is cut off.

    The application sees the client disconnect; whatever it answers then is replaced by
    the 408/413, sent with ``Connection: close``."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        streamed = scope["method"] == "PUT" and STREAMED.match(scope["path"])
        limit = None if streamed else self.settings.max_request_body
        length = Headers(scope=scope).get("content-length", "")
        if limit is not None and length.isdigit() and int(length) > limit:
            await _answer(send, _too_large(limit))
            return
        clock = _Clock(receive, self.settings, limit)
        started = replaced = False

        async def guarded(message: Message) -> None:
            nonlocal started, replaced
            if replaced:  # our answer went out instead of the application's
                return
            if clock.failure is not None and not started:
                started = replaced = True
                await _answer(send, clock.failure)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, clock.receive, guarded)
        except Exception:
            if clock.failure is None or (started and not replaced):
                raise
        if clock.failure is not None and not started:
            await _answer(send, clock.failure)


class Uploads:
    """Uploads in progress in this server process, and the threads that write them.

    Counted on the event loop only (the slot dependency is async), so no lock is needed."""

    def __init__(self, settings: Settings) -> None:
        self.total, self.per_account = settings.max_uploads, settings.max_uploads_per_account
        self.active: Counter[int] = Counter()
        self._threads: anyio.CapacityLimiter | None = None

    @property
    def threads(self) -> anyio.CapacityLimiter:
        """One thread per upload slot, apart from anyio's default pool (made in the loop)."""
        if self._threads is None:
            self._threads = anyio.CapacityLimiter(self.total)
        return self._threads

    @contextmanager
    def slot(self, account_id: int, account: str) -> Iterator[None]:
        if self.active[account_id] >= self.per_account:
            raise TooManyRequests(
                f"account {account!r} already has {self.per_account} uploads in progress"
                " (VRE_MAX_UPLOADS_PER_ACCOUNT): wait for one to finish",
                retry_after=RETRY_AFTER,
            )
        if sum(self.active.values()) >= self.total:
            raise Unavailable(
                f"the server is receiving {self.total} uploads already (VRE_MAX_UPLOADS):"
                " try again shortly",
                retry_after=RETRY_AFTER,
            )
        self.active[account_id] += 1
        try:
            yield
        finally:
            self.active[account_id] -= 1
            if self.active[account_id] <= 0:
                del self.active[account_id]


async def upload_slot(request: Request, caller: Caller) -> AsyncIterator[None]:
    uploads: Uploads = request.app.state.uploads
    with uploads.slot(caller.id, caller.name):
        yield


UploadSlot = Annotated[None, Depends(upload_slot)]


class _Pump:
    """The request body as a bounded queue of blocks between the event loop and a thread.

    The event loop keeps reading the socket while the writer thread hashes and writes
    the previous block, so receiving, hashing and writing overlap. A body that ends early
    (the client went away, or was too slow) raises in the writer, never looks complete.
    """

    def __init__(self, request: Request, depth: int = 4) -> None:
        self.request = request
        self.block_size: int = request.app.state.settings.block_size
        length = request.headers.get("content-length", "")
        self.expected = int(length) if length.isdigit() else -1
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


async def stream_to_thread(request: Request, consume: Callable[[Iterator[bytes]], T]) -> T:
    """Run ``consume(blocks)`` in an upload thread while the event loop reads the body.

    The thread comes from the uploads' own pool (as many as upload slots), so however
    slow the clients, anyio's default pool stays free for every other request."""
    body = _Pump(request)
    limiter = request.app.state.uploads.threads
    result: list[T] = []
    failure: list[Exception] = []
    async with anyio.create_task_group() as group:
        group.start_soon(body.pump)
        try:
            result.append(
                await anyio.to_thread.run_sync(lambda: consume(body.blocks()), limiter=limiter)
            )
        except Exception as exc:  # re-raised outside the task group, unwrapped
            failure.append(exc)
        group.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return result[0]
