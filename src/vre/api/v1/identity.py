"""Health, login, accounts and tokens."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from vre import __version__
from vre.api.deps import Caller, unit
from vre.identity import accounts, tokens
from vre.identity.models import Account, Token

router = APIRouter(tags=["identity"])


class LoginIn(BaseModel):
    account: str
    password: str
    lifetime_days: float = Field(default=30, gt=0)
    label: str = "login"


class TokenOut(BaseModel):
    id: int
    label: str
    created_at: datetime
    expires_at: datetime


class NewTokenOut(TokenOut):
    token: str
    account: str


class AccountIn(BaseModel):
    name: str
    password: str | None = None
    admin: bool = False
    kind: str = "user"
    email: str | None = None


class AccountOut(BaseModel):
    name: str
    kind: str
    admin: bool
    email: str | None
    created_at: datetime


class TokenIn(BaseModel):
    lifetime_days: float = Field(default=30, gt=0)
    label: str = ""


def account_out(account: Account) -> AccountOut:
    return AccountOut(
        name=account.name,
        kind=account.kind,
        admin=account.is_admin,
        email=account.email,
        created_at=account.created_at,
    )


def token_out(row: Token) -> TokenOut:
    return TokenOut(
        id=row.id, label=row.label, created_at=row.created_at, expires_at=row.expires_at
    )


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness for load balancers and `vre up`: no token needed."""
    return {"status": "ok", "version": __version__}


@router.post("/auth/login", status_code=201)
def login(body: LoginIn, request: Request) -> NewTokenOut:
    with unit(request) as session:
        account = accounts.authenticate(session, body.account, body.password)
        secret, row = tokens.issue(
            session, account, lifetime_days=body.lifetime_days, label=body.label
        )
        return NewTokenOut(token=secret, account=account.name, **token_out(row).model_dump())


@router.get("/whoami")
def whoami(caller: Caller) -> AccountOut:
    return account_out(caller)


@router.post("/accounts", status_code=201)
def add_account(body: AccountIn, caller: Caller, request: Request) -> AccountOut:
    with unit(request) as session:
        account = accounts.create(
            session,
            caller,
            body.name,
            password=body.password,
            is_admin=body.admin,
            kind=body.kind,
            email=body.email,
        )
        return account_out(account)


@router.get("/accounts")
def list_accounts(caller: Caller, request: Request) -> list[AccountOut]:
    with unit(request) as session:
        return [account_out(a) for a in accounts.list_all(session, caller)]


@router.post("/tokens", status_code=201)
def create_token(body: TokenIn, caller: Caller, request: Request) -> NewTokenOut:
    with unit(request) as session:
        secret, row = tokens.issue(
            session, caller, lifetime_days=body.lifetime_days, label=body.label
        )
        return NewTokenOut(token=secret, account=caller.name, **token_out(row).model_dump())


@router.get("/tokens")
def list_tokens(caller: Caller, request: Request) -> list[TokenOut]:
    with unit(request) as session:
        return [token_out(t) for t in tokens.list_for(session, caller)]


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: int, caller: Caller, request: Request) -> TokenOut:
    with unit(request) as session:
        return token_out(tokens.revoke(session, caller, token_id))
