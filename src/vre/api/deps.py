"""What every route needs: a unit of work and the calling account."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from vre.db import transaction
from vre.errors import Unauthorized
from vre.identity import tokens
from vre.identity.models import Account


def factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.sessions


@contextmanager
def unit(request: Request) -> Iterator[Session]:
    """One transaction per request, committed before the answer is sent."""
    with transaction(factory(request)) as session:
        yield session


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("missing credentials: send 'Authorization: Bearer TOKEN'")
    return value.strip()


def current_account(request: Request) -> Account:
    secret = bearer(request)
    with unit(request) as session:
        return tokens.resolve(session, secret)


Caller = Annotated[Account, Depends(current_account)]
