"""How uvicorn serves the app: the connection-level limits no ASGI middleware can see.

``limits.BodyLimits`` times out slow bodies, but a request reaches the app only once its
headers are complete: a client that dribbles its headers (or opens connections and sends
nothing) would hold a socket and a file descriptor for ever. Here every connection must
complete its request headers within ``VRE_HEADER_TIMEOUT`` of opening (and of its previous
response), connections are capped in total (``VRE_MAX_CONNECTIONS``, 503 beyond) and per
client address (``VRE_MAX_CONNECTIONS_PER_ADDRESS``, closed at once beyond: one client
cannot take the total), and the process may open as many descriptors as its hard limit
allows.

Forwarded headers (``X-Forwarded-For``) are trusted only from ``VRE_FORWARDED_ALLOW_IPS``
(none by default): a client must not choose the address that login throttling counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from vre.config import Settings


class HeaderTimeout(HttpToolsProtocol):
    """uvicorn's HTTP protocol, closing connections whose request headers come too slowly."""

    header_timeout = 10.0
    per_address = 256
    open_by_address: dict[str, int]  # per server process, set on each configured subclass
    _deadline: asyncio.TimerHandle | None = None
    _counted: str | None = None

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else ""
        held = self.open_by_address.get(address, 0)
        if held >= self.per_address:
            transport.close()
            return
        self.open_by_address[address] = held + 1
        self._counted = address
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport is not None and not self.transport.is_closing():
            self._arm()  # the next request on this connection has the same time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted is not None:
            left = self.open_by_address.get(self._counted, 1) - 1
            if left > 0:
                self.open_by_address[self._counted] = left
            else:
                self.open_by_address.pop(self._counted, None)
            self._counted = None
        super().connection_lost(exc)


def _protocol(settings: Settings) -> type[HeaderTimeout]:
    limits = {
        "header_timeout": settings.header_timeout,
        "per_address": settings.max_connections_per_address,
        "open_by_address": {},
    }
    return type("VREHttp", (HeaderTimeout,), limits)


def open_files_to_the_limit() -> None:
    """Raise the soft limit on open descriptors to the hard one: sockets are cheap, and
    running out of descriptors refuses everyone."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def config(app: Any, settings: Settings, host: str, port: int, log_level: str) -> uvicorn.Config:
    open_files_to_the_limit()
    trusted = settings.forwarded_allow_ips.strip()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=_protocol(settings),
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        limit_concurrency=settings.max_connections or None,
        timeout_keep_alive=5,
    )
