"""How uvicorn serves the app: the connection-level limits no ASGI middleware can see.

``limits.BodyLimits`` times out slow bodies, but a request reaches the app only once its
headers are complete: a client that dribbles its headers (or opens connections and sends
nothing) would hold a socket and a file descriptor for ever. Here every connection must
complete its request headers within ``VRE_HEADER_TIMEOUT`` of opening (and of its previous
response), at most half of ``VRE_MAX_CONNECTIONS`` may still be sending headers (the
oldest such is closed beyond), connections are capped in total (503 beyond) and per
client address (``VRE_MAX_CONNECTIONS_PER_ADDRESS``, closed at once beyond: one client
cannot take the total), and the process may open as many descriptors as its hard limit
allows.

Forwarded headers (``X-Forwarded-For``) are trusted only from ``VRE_FORWARDED_ALLOW_IPS``
(none by default): a client must not choose the address that login throttling counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import resource
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from vre.config import Settings


class HeaderTimeout(HttpToolsProtocol):
    """uvicorn's HTTP protocol, closing connections whose request headers come too slowly."""

    header_timeout = 10.0
    per_address = 256
    waiting_budget = 500
    open_by_address: dict[str, int]  # per server process, set on each configured subclass
    waiting: dict[HeaderTimeout, None]  # connections still sending headers, oldest first
    _deadline: asyncio.TimerHandle | None = None
    _counted: str | None = None

    def _arm(self) -> None:
        """Start the header clock; beyond the budget of connections still sending headers
        the oldest of them is closed, so they never take the slots finished requests
        need (many addresses could each stay under the per-address cap)."""
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)
        self.waiting[self] = None
        while len(self.waiting) > self.waiting_budget:
            next(iter(self.waiting))._too_slow()

    def _disarm(self) -> None:
        self.waiting.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._disarm()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = _group(self.client[0]) if self.client else ""
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


def _group(address: str) -> str:
    """The unit the per-address cap counts: an IPv4 address, an IPv6 /64 (one host may
    hold a whole /64)."""
    if ":" not in address:
        return address
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return address


def _protocol(settings: Settings) -> type[HeaderTimeout]:
    limits = {
        "header_timeout": settings.header_timeout,
        "per_address": settings.max_connections_per_address,
        "waiting_budget": max(1, (settings.max_connections or 2000) // 2),
        "open_by_address": {},
        "waiting": {},
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
