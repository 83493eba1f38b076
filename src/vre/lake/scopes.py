"""Scopes: namespaces owned by an account, private unless made public."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from vre import policy
from vre.errors import Conflict, Forbidden, NotFound
from vre.identity import accounts
from vre.identity.models import Account
from vre.lake.models import Scope
from vre.lake.names import check_scope

USER_PREFIX = "user."


def reserved_for(name: str) -> str | None:
    """The account a ``user.ACCOUNT`` scope belongs to (Rucio's convention), else None.

    The prefix is matched whatever its case, so ``User.Root`` cannot pass for root's."""
    if name[: len(USER_PREFIX)].lower() == USER_PREFIX:
        return name[len(USER_PREFIX) :]
    return None


def _check_reserved(name: str, owner: Account) -> None:
    """``user.ACCOUNT`` is ACCOUNT's own: nobody else may hold it, not even an admin
    (an admin creates it *for* ACCOUNT). This holds for names of no account too, so
    nobody can take ``user.carol`` before carol's account is made."""
    account = reserved_for(name)
    if account is None or (name.startswith(USER_PREFIX) and account == owner.name):
        return
    raise Forbidden(
        f"scope {name!r} is reserved: a scope named 'user.ACCOUNT' belongs to that"
        f" account only (lower-case 'user.', the account's exact name); account"
        f" {owner.name!r} may create 'user.{owner.name}'"
    )


def add(
    session: Session, actor: Account, name: str, *, owner: str | None = None, public: bool = False
) -> Scope:
    """A user may create scopes for themself; only an admin creates them for others;
    ``user.ACCOUNT`` is for ACCOUNT only (``_check_reserved``)."""
    check_scope(name)
    owner_account = accounts.get(session, owner) if owner else actor
    if owner_account.id != actor.id:
        policy.require(
            actor,
            "scope.create_for_other",
            message="only an admin can create a scope for another account",
        )
    _check_reserved(name, owner_account)
    if session.get(Scope, name) is not None:
        raise Conflict(f"scope {name!r} already exists")
    scope = Scope(name=name, owner_id=owner_account.id, is_public=public)
    session.add(scope)
    session.flush()
    return scope


def get(session: Session, name: str) -> Scope:
    check_scope(name)
    scope = session.get(Scope, name)
    if scope is None:
        raise NotFound(f"scope {name!r} does not exist")
    return scope


def can_read(scope: Scope, actor: Account) -> bool:
    return policy.allows(actor, "scope.read", scope=scope)


def can_write(scope: Scope, actor: Account) -> bool:
    return policy.allows(actor, "scope.write", scope=scope)


def readable(session: Session, actor: Account, name: str) -> Scope:
    scope = get(session, name)
    if not can_read(scope, actor):
        raise Forbidden(f"scope {name!r} is private: account {actor.name!r} cannot read it")
    return scope


def writable(session: Session, actor: Account, name: str) -> Scope:
    scope = get(session, name)
    if not can_write(scope, actor):
        raise Forbidden(f"account {actor.name!r} cannot write into scope {name!r}")
    return scope


def require_writable(session: Session, actor: Account, names: Iterable[str]) -> None:
    """Check many scopes with one query (bulk registration)."""
    wanted = {check_scope(n) for n in names}
    found = {s.name: s for s in session.scalars(select(Scope).where(Scope.name.in_(wanted)))}
    for name in sorted(wanted):
        if name not in found:
            raise NotFound(f"scope {name!r} does not exist")
        if not can_write(found[name], actor):
            raise Forbidden(f"account {actor.name!r} cannot write into scope {name!r}")


def list_visible(session: Session, actor: Account) -> list[tuple[Scope, str]]:
    """Scopes the actor can read, with their owner's name."""
    query = select(Scope, Account.name).join(Account, Account.id == Scope.owner_id)
    query = policy.scopes_visible_to(query, actor, Scope)
    return [(s, owner) for s, owner in session.execute(query.order_by(Scope.name))]


def set_public(session: Session, actor: Account, name: str, public: bool) -> Scope:
    scope = writable(session, actor, name)
    scope.is_public = public
    return scope
