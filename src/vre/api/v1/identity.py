"""Health, login, accounts and tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from vre import __version__
from vre.api.deps import Caller, bearer, unit
from vre.api.params import Id
from vre.identity import accounts, tokens
from vre.identity.models import Account, Token

router = APIRouter(tags=["identity"])


class LoginIn(BaseModel):
    account: str = Field(max_length=64)
    password: str = Field(max_length=accounts.MAX_PASSWORD)
    lifetime_days: float = Field(default=30, gt=0)
    label: str = "login"


class TokenOut(BaseModel):
    id: int
    label: str
    created_at: datetime
    expires_at: datetime
    parent: int | None = None


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
    status: str


class TokenIn(BaseModel):
    lifetime_days: float = Field(default=30, gt=0)
    label: str = ""


class PasswordIn(BaseModel):
    password: str = Field(max_length=accounts.MAX_PASSWORD)
    old_password: str | None = Field(default=None, max_length=accounts.MAX_PASSWORD)


class Revoked(BaseModel):
    account: str
    revoked_tokens: int


def account_out(account: Account) -> AccountOut:
    return AccountOut(
        name=account.name,
        kind=account.kind,
        admin=account.is_admin,
        email=account.email,
        created_at=account.created_at,
        status=account.status,
    )


def token_out(row: Token) -> TokenOut:
    return TokenOut(
        id=row.id,
        label=row.label,
        created_at=row.created_at,
        expires_at=row.expires_at,
        parent=row.parent_id,
    )


def current_token(request: Request) -> tuple[Account, Token]:
    """The caller and the token it came with (a new token's parent)."""
    secret = bearer(request)
    with unit(request) as session:
        return tokens.resolve_token(session, secret)


CallerToken = Annotated[tuple[Account, Token], Depends(current_token)]


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness for load balancers and `vre up`: no token needed."""
    return {"status": "ok", "version": __version__}


@router.post("/auth/login", status_code=201)
def login(body: LoginIn, request: Request) -> NewTokenOut:
    """Throttled per account name and per client address: 429 with Retry-After."""
    settings = request.app.state.settings
    address = request.client.host if request.client else None
    with unit(request) as session:
        account = accounts.authenticate(
            session, body.account, body.password, address=address, settings=settings
        )
        secret, row = tokens.issue(
            session,
            account,
            lifetime_days=body.lifetime_days,
            label=body.label,
            longest_days=settings.token_max_days,
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


@router.put("/accounts/{name}/password")
def change_password(
    name: str, body: PasswordIn, credential: CallerToken, request: Request
) -> Revoked:
    """One's own (with ``old_password``; one's other tokens are revoked) or, for an
    admin, anyone's (every token of the account is revoked)."""
    caller, used = credential
    with unit(request) as session:
        revoked = accounts.change_password(
            session,
            caller,
            name,
            body.password,
            old_password=body.old_password,
            keep_token=used.id,
        )
        return Revoked(account=name, revoked_tokens=revoked)


@router.post("/accounts/{name}/disable")
def disable_account(name: str, caller: Caller, request: Request) -> AccountOut:
    """Log-ins and tokens refused until enabled again (the tokens are kept)."""
    with unit(request) as session:
        return account_out(accounts.set_disabled(session, caller, name, True))


@router.post("/accounts/{name}/enable")
def enable_account(name: str, caller: Caller, request: Request) -> AccountOut:
    with unit(request) as session:
        return account_out(accounts.set_disabled(session, caller, name, False))


@router.delete("/accounts/{name}")
def delete_account(name: str, caller: Caller, request: Request) -> Revoked:
    """Marks the account deleted and revokes its tokens; what it owns stays."""
    with unit(request) as session:
        account, revoked = accounts.delete(session, caller, name)
        return Revoked(account=account.name, revoked_tokens=revoked)


@router.post("/tokens", status_code=201)
def create_token(body: TokenIn, credential: CallerToken, request: Request) -> NewTokenOut:
    """A child of the token the request came with: same account, expires no later."""
    caller, parent = credential
    with unit(request) as session:
        secret, row = tokens.issue(
            session,
            caller,
            lifetime_days=body.lifetime_days,
            label=body.label,
            parent=parent,
            longest_days=request.app.state.settings.token_max_days,
        )
        return NewTokenOut(token=secret, account=caller.name, **token_out(row).model_dump())


@router.get("/tokens")
def list_tokens(caller: Caller, request: Request, account: str | None = None) -> list[TokenOut]:
    """One's own live tokens; an admin lists another account's with ``?account=NAME``."""
    with unit(request) as session:
        return [token_out(t) for t in tokens.list_for(session, caller, account)]


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: Id, caller: Caller, request: Request) -> TokenOut:
    with unit(request) as session:
        return token_out(tokens.revoke(session, caller, token_id))
