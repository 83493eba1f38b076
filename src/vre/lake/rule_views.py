"""How rules are shown: listings with their owners and DIDs, and a rule's locks.

Read-only views for the API and CLI; what a rule does lives in ``vre.lake.rules``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vre import policy
from vre.identity.models import Account
from vre.lake import catalogue
from vre.lake.models import DID, RSE
from vre.lake.rule_models import Lock, Rule


def list_rules(
    session: Session,
    actor: Account,
    *,
    did: tuple[str, str] | None = None,
    account: str | None = None,
) -> list[tuple[Rule, str, str, str]]:
    """Rules with (account name, scope, name); non-admins see their own only."""
    query = (
        select(Rule, Account.name, DID.scope, DID.name)
        .join(Account, Account.id == Rule.account_id)
        .join(DID, DID.id == Rule.did_id)
    )
    query = policy.visible_to(query, actor, Rule.account_id, "rule.list_all")
    if account:
        query = query.where(Account.name == account)
    if did:
        query = query.where(DID.scope == did[0], DID.name == did[1])
    return [tuple(row) for row in session.execute(query.order_by(Rule.id))]  # type: ignore[misc]


def names_of(session: Session, rule: Rule) -> tuple[str, str]:
    """(owner's account name, ``scope:name``) for display."""
    account = session.get(Account, rule.account_id)
    did = session.get(DID, rule.did_id)
    return (account.name if account else "?", f"{did.scope}:{did.name}" if did else "?")


def locks_of(session: Session, rule: Rule) -> list[dict[str, Any]]:
    """The rule's locks on files its owner may read (``catalogue.rights``): a rule made
    before read rights were applied to collections shows nothing more than it covers now."""
    owner = session.get(Account, rule.account_id)
    seen = catalogue.rights(session, owner) if owner else catalogue.Rights(frozenset())
    query = (
        select(DID.scope, DID.name, RSE.name, Lock.state, Lock.bytes)
        .join(DID, DID.id == Lock.did_id)
        .join(RSE, RSE.id == Lock.rse_id)
        .where(Lock.rule_id == rule.id)
        .order_by(DID.scope, DID.name, RSE.name)
    )
    return [
        {"scope": s, "name": n, "rse": r, "state": st, "bytes": b}
        for s, n, r, st, b in session.execute(query)
        if seen(s)
    ]
