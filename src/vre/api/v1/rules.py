"""Replication rules, quotas, transfers, the reaper and DID deletion."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from vre.api.deps import Caller, factory, unit
from vre.api.params import Id, Seconds, SecondsQuery, Size
from vre.identity.models import Account
from vre.lake import quotas, reaper, rule_views, rules, transfers
from vre.lake.names import parse_did
from vre.lake.rule_models import Rule

router = APIRouter(tags=["rules"])


class RuleIn(BaseModel):
    did: str = Field(description="SCOPE:NAME")
    rse_expression: str
    copies: int = 1
    lifetime: Seconds | None = None
    account: str | None = None
    comment: str = ""


class RuleOut(BaseModel):
    id: int
    did: str
    account: str
    rse_expression: str
    copies: int
    state: str
    locks_ok: int
    locks_replicating: int
    locks_stuck: int
    expires_at: datetime | None
    comment: str
    error: str | None
    created_at: datetime


class RuleDetail(RuleOut):
    locks: list[dict[str, Any]]


class QuotaIn(BaseModel):
    bytes: Size


def rule_out(rule: Rule, account: str, did: str) -> RuleOut:
    return RuleOut(
        id=rule.id,
        did=did,
        account=account,
        rse_expression=rule.rse_expression,
        copies=rule.copies,
        state=rule.state,
        locks_ok=rule.locks_ok,
        locks_replicating=rule.locks_replicating,
        locks_stuck=rule.locks_stuck,
        expires_at=rule.expires_at,
        comment=rule.comment,
        error=rule.error,
        created_at=rule.created_at,
    )


def _one(session: Session, caller: Account, rule_id: int) -> RuleOut:
    rule = rules.get(session, caller, rule_id)
    return rule_out(rule, *rule_views.names_of(session, rule))


@router.post("/rules", status_code=201)
def add_rule(body: RuleIn, caller: Caller, request: Request) -> RuleOut:
    scope, name = parse_did(body.did)
    with unit(request) as session:
        rule = rules.add(
            session,
            caller,
            scope,
            name,
            body.rse_expression,
            copies=body.copies,
            lifetime=body.lifetime,
            account=body.account,
            comment=body.comment,
        )
        session.flush()
        session.refresh(rule)
        return _one(session, caller, rule.id)


@router.get("/rules")
def list_rules(
    caller: Caller, request: Request, did: str | None = None, account: str | None = None
) -> list[RuleOut]:
    with unit(request) as session:
        found = rule_views.list_rules(
            session, caller, did=parse_did(did) if did else None, account=account
        )
        return [rule_out(r, a, f"{s}:{n}") for r, a, s, n in found]


@router.get("/rules/{rule_id}")
def show_rule(rule_id: Id, caller: Caller, request: Request) -> RuleDetail:
    with unit(request) as session:
        out = _one(session, caller, rule_id)
        locks = rule_views.locks_of(session, rules.get(session, caller, rule_id))
        return RuleDetail(**out.model_dump(), locks=locks)


@router.delete("/rules/{rule_id}")
def delete_rule(rule_id: Id, caller: Caller, request: Request) -> dict[str, int]:
    with unit(request) as session:
        rules.remove(session, caller, rule_id)
        return {"deleted": rule_id}


@router.put("/quotas/{account}/{rse}")
def set_quota(account: str, rse: str, body: QuotaIn, caller: Caller, request: Request) -> Any:
    with unit(request) as session:
        quotas.set_quota(session, caller, account, rse, body.bytes)
        session.flush()
        return [asdict(q) for q in quotas.show(session, caller, account)]


@router.get("/quotas")
def show_quotas(caller: Caller, request: Request, account: str | None = None) -> Any:
    with unit(request) as session:
        return [asdict(q) for q in quotas.show(session, caller, account)]


@router.get("/transfers")
def list_transfers(
    caller: Caller,
    request: Request,
    state: str | None = Query(default=None, description="queued, submitted, done, failed"),
    rse: str | None = None,
    limit: int = Query(default=1000, gt=0, le=100_000),
) -> Any:
    """Your transfers (all of them for an admin), newest first, with rates."""
    with unit(request) as session:
        found = transfers.list_transfers(session, caller, state=state, rse=rse, limit=limit)
        return [asdict(t) for t in found]


def _retry(request: Request) -> timedelta:
    return timedelta(seconds=request.app.state.settings.reaper_retry)


@router.get("/reaper")
def reaper_candidates(caller: Caller, request: Request, grace: SecondsQuery = 0.0) -> Any:
    """What the reaper would delete now (admin): the dry run."""
    with unit(request) as session:
        return [
            asdict(c) | {"options": None}
            for c in reaper.preview(
                session, caller, timedelta(seconds=grace), retry=_retry(request)
            )
        ]


@router.post("/reaper")
def reaper_run(caller: Caller, request: Request, grace: SecondsQuery = 0.0) -> Any:
    """Run one reaper pass now (admin)."""
    gone = reaper.reap_now(
        factory(request), caller, timedelta(seconds=grace), retry=_retry(request)
    )
    return [asdict(c) | {"options": None} for c in gone]


@router.delete("/dids/{scope}/{name:path}")
def erase(
    scope: str, name: str, caller: Caller, request: Request, force: bool = False
) -> dict[str, str]:
    with unit(request) as session:
        outcome = reaper.erase(session, caller, scope, name, force=force)
        return {"did": f"{scope}:{name}", "status": outcome}
