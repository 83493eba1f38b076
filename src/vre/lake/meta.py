"""DID metadata: free key/values, and the filters that query them.

Values are stored as JSON text so a number comes back as a number; numeric values
are mirrored in a float column so ``key>N`` is an indexed range query.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from vre import bulk
from vre.config import get_settings
from vre.errors import Invalid, NotFound, shown
from vre.lake.models import DID, DIDMeta
from vre.lake.values import Value, parse_value

KEY = re.compile(r"^[A-Za-z0-9_\-.]+\Z")  # its length is VRE_MAX_META_KEY_LENGTH
MAX_FILTER_TERMS = 100
FILTER = re.compile(r"^\s*([A-Za-z0-9_\-.]+)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*\Z")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    return None


def check(meta: dict[str, Any]) -> dict[str, Value]:
    """Refuse metadata beyond the operator's limits, read at each call (never frozen at import)."""
    settings = get_settings()
    if len(meta) > settings.max_meta_keys:
        raise Invalid(f"too many metadata keys: {len(meta)} (at most {settings.max_meta_keys})")
    for key, value in meta.items():
        if not KEY.match(key) or len(key) > settings.max_meta_key_length:
            raise Invalid(
                f"invalid metadata key {shown(key, 40)}: use letters, digits, '_', '-' or '.'"
                f" (at most {settings.max_meta_key_length} characters)"
            )
        if not isinstance(value, str | int | float | bool):
            raise Invalid(f"metadata value of {shown(key)} must be a string, number or boolean")
        if isinstance(value, float) and not math.isfinite(value):
            raise Invalid(f"metadata value of {key!r} must be a finite number")
        if isinstance(value, int) and abs(value) > sys.float_info.max:
            raise Invalid(f"metadata value of {key!r} is out of range")
        size = len(value) if isinstance(value, str) else len(json.dumps(value))
        if size > settings.max_meta_value_length:
            raise Invalid(
                f"metadata value of {key!r} is too large"
                f" (at most {settings.max_meta_value_length} characters)"
            )
    return meta


def rows(did_id: int, meta: dict[str, Value]) -> list[dict[str, Any]]:
    return [
        {"did_id": did_id, "key": k, "value": json.dumps(v), "number": _number(v)}
        for k, v in meta.items()
    ]


def set_many(session: Session, did_ids: list[int], meta: dict[str, Value]) -> None:
    """Upsert ``meta`` on each DID (delete then insert: portable and bulk)."""
    check(meta)
    if not meta or not did_ids:
        return
    session.execute(delete(DIDMeta).where(DIDMeta.did_id.in_(did_ids), DIDMeta.key.in_(list(meta))))
    bulk.insert_rows(session, DIDMeta.__table__, [r for d in did_ids for r in rows(d, meta)])
    limit = get_settings().max_meta_keys
    counts = session.execute(
        select(DIDMeta.did_id, func.count())
        .where(DIDMeta.did_id.in_(did_ids))
        .group_by(DIDMeta.did_id)
        .having(func.count() > limit)
    ).first()
    if counts is not None:
        raise Invalid(f"too many metadata keys on one DID (at most {limit})")


def get_all(session: Session, did_id: int) -> dict[str, Value]:
    return {
        k: json.loads(v)
        for k, v in session.execute(
            select(DIDMeta.key, DIDMeta.value).where(DIDMeta.did_id == did_id).order_by(DIDMeta.key)
        )
    }


def unset(session: Session, did_id: int, key: str) -> None:
    result = session.execute(delete(DIDMeta).where(DIDMeta.did_id == did_id, DIDMeta.key == key))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"metadata key {shown(key)} is not set")


@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    value: str


def parse_filters(expression: str | None) -> list[Condition]:
    """``key=value,key>N`` → conditions joined by AND, at most ``MAX_FILTER_TERMS``.

    Each term is a subquery; SQLite refuses a statement whose expression tree is more
    than 1000 deep (about 500 terms), so the bound is a clear 400 well before that."""
    if not expression or not expression.strip():
        return []
    parts = expression.split(",")
    if len(parts) > MAX_FILTER_TERMS:
        raise Invalid(
            f"a metadata filter has at most {MAX_FILTER_TERMS} terms, this one has {len(parts)}"
        )
    conditions = []
    for part in parts:
        match = FILTER.match(part)
        if not match or not match.group(3):
            raise Invalid(
                f"invalid metadata filter {shown(part.strip())}: expected KEY=VALUE, KEY!=VALUE,"
                " KEY>N, KEY<N, KEY>=N or KEY<=N, separated by ','"
            )
        key, op, value = match.groups()
        if op in (">", "<", ">=", "<=") and _number(parse_value(value)) is None:
            raise Invalid(f"invalid metadata filter {shown(part.strip())}: {op} needs a number")
        conditions.append(Condition(key, op, value))
    return conditions


def _matches(cond: Condition) -> ColumnElement[bool]:
    value = parse_value(cond.value)
    number = _number(value)
    if cond.op in ("=", "!="):
        stored_forms = [json.dumps(cond.value), json.dumps(value)]
        if cond.value.lower() in ("true", "false"):
            stored_forms.append(json.dumps(cond.value.lower() == "true"))
        same: ColumnElement[bool] = DIDMeta.value.in_(stored_forms)
        if number is not None:
            same = or_(same, DIDMeta.number == number)
        return and_(DIDMeta.key == cond.key, same)
    column = DIDMeta.number
    compare = {">": column > number, "<": column < number, ">=": column >= number}.get(
        cond.op, column <= number
    )
    return and_(DIDMeta.key == cond.key, compare)


def where(conditions: list[Condition]) -> list[ColumnElement[bool]]:
    """SQL conditions on ``DID.id``, one indexed subquery per filter."""
    clauses = []
    for cond in conditions:
        subquery = select(DIDMeta.did_id).where(_matches(cond))
        if cond.op == "!=":  # the key is set, to something else
            has_key = select(DIDMeta.did_id).where(DIDMeta.key == cond.key)
            clauses.append(and_(DID.id.in_(has_key), DID.id.not_in(subquery)))
        else:
            clauses.append(DID.id.in_(subquery))
    return clauses
