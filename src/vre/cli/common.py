"""Shared CLI plumbing: the client, DID arguments, key=value options."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from vre.cli.output import fail
from vre.client import APIError, Client, NotLoggedIn
from vre.errors import VREError
from vre.lake.names import parse_did
from vre.lake.values import parse_value


@contextmanager
def errors_as_exit() -> Iterator[None]:
    """API and input errors become one line and exit code 2; outages exit 1."""
    try:
        yield
    except APIError as exc:
        fail(exc.message, 2 if exc.status < 500 else 1)
    except VREError as exc:
        fail(exc.message, 2)
    except NotLoggedIn as exc:
        fail(str(exc), 2)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the VRE server: {exc}", 1)


def client() -> Client:
    return Client()


def did(text: str) -> tuple[str, str]:
    return parse_did(text)


def key_values(items: list[str] | None, what: str = "metadata") -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"invalid {what} {item!r}: expected KEY=VALUE")
        result[key.strip()] = parse_value(value.strip())
    return result
