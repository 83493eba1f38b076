"""Quotas per account and RSE, and the usage that rule locks add up to.

No quota row means no limit (the laptop default); an admin sets limits where
storage is shared, admins' own accounts included (no account is exempt by role).
Usage counts the bytes of every lock an account's rules hold.

Every replica the catalogue learns of is held by a lock, and every lock is placed through
``charge`` (rules placing locks, an upload's rule, a bulk registration's rules): one check,
whatever path brings the bytes. Transfers and repairs only fill locks already charged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from vre import policy
from vre.db import is_postgres, take_write_lock
from vre.errors import Invalid, QuotaExceeded
from vre.identity import accounts
from vre.identity.models import Account
from vre.lake import rses
from vre.lake.models import RSE
from vre.lake.rule_models import Quota, Usage


@dataclass
class QuotaView:
    account: str
    rse: str
    limit: int | None
    used: int
    files: int


def set_quota(session: Session, actor: Account, account: str, rse_name: str, limit: int) -> None:
    policy.require(actor, "quota.set", message="only an admin can set quotas")
    if limit < 0:
        raise Invalid("a quota must not be negative")
    owner = accounts.get(session, account)
    rse = rses.get(session, rse_name)
    row = session.get(Quota, (owner.id, rse.id))
    if row is None:
        session.add(Quota(account_id=owner.id, rse_id=rse.id, bytes=limit))
    else:
        row.bytes = limit


def show(session: Session, actor: Account, account: str | None = None) -> list[QuotaView]:
    """Quotas and usage of one account (yours unless you are an admin)."""
    name = account or actor.name
    if name != actor.name:
        policy.require(
            actor, "quota.show_other", message="only an admin can look at another account's quotas"
        )
    owner = accounts.get(session, name)
    limits = dict(
        session.execute(select(Quota.rse_id, Quota.bytes).where(Quota.account_id == owner.id)).all()
    )
    used = {
        r.rse_id: (r.bytes, r.files)
        for r in session.scalars(select(Usage).where(Usage.account_id == owner.id))
    }
    names = dict(session.execute(select(RSE.id, RSE.name)).all())
    return [
        QuotaView(owner.name, names[i], limits.get(i), *used.get(i, (0, 0)))
        for i in sorted(set(limits) | set(used), key=lambda i: names[i])
    ]


def _limits_and_usage(
    session: Session, account_id: int, ids: list[int]
) -> tuple[dict[int, int], dict[int, int]]:
    """Quota limits and bytes used per RSE, read fresh (not from the identity map)."""
    limits = session.execute(
        select(Quota.rse_id, Quota.bytes).where(
            Quota.account_id == account_id, Quota.rse_id.in_(ids)
        )
    )
    used = session.execute(
        select(Usage.rse_id, Usage.bytes).where(
            Usage.account_id == account_id, Usage.rse_id.in_(ids)
        )
    )
    return {r: b for r, b in limits}, {r: b for r, b in used}


def free(session: Session, account_id: int, rse_ids: Iterable[int]) -> dict[int, float]:
    """Bytes the account may still lock per RSE (infinite without a quota)."""
    ids = list(rse_ids)
    limits, used = _limits_and_usage(session, account_id, ids)
    return {i: (limits[i] - used.get(i, 0)) if i in limits else float("inf") for i in ids}


def require(session: Session, account_id: int, needed: dict[int, int]) -> None:
    """Refuse, naming the RSE, limit and usage, if new locks would not fit.

    The caller holds the RSE rows (``rules``), so usage read here is what the last
    writer committed."""
    if not needed:
        return
    limits, used = _limits_and_usage(session, account_id, list(needed))
    for rse_id, want in needed.items():
        if rse_id in limits and used.get(rse_id, 0) + want > limits[rse_id]:
            name = session.scalar(select(RSE.name).where(RSE.id == rse_id))
            raise QuotaExceeded(
                f"quota exceeded on {name}: limit {limits[rse_id]} bytes,"
                f" {used.get(rse_id, 0)} used, {want} more needed"
            )


def hold(session: Session, rse_ids: Iterable[int]) -> None:
    """Take the RSE rows (PostgreSQL, in id order, ``FOR NO KEY UPDATE``; SQLite: its one
    write lock): placements on them wait for each other, so two never pass one quota
    check on the same usage (see ``rules._hold_rses``)."""
    take_write_lock(session)
    query = select(RSE.id).where(RSE.id.in_(sorted(rse_ids))).order_by(RSE.id)
    session.execute(query.with_for_update(key_share=True))


def charge(session: Session, account_id: int, usage: dict[int, tuple[int, int]]) -> None:
    """Count new locks' (bytes, files) per RSE on the account, refusing (``QuotaExceeded``,
    nothing counted) what would not fit. The RSE rows are held first (a no-op when the
    caller holds them already, as rule placement does)."""
    if not usage:
        return
    hold(session, usage)
    require(session, account_id, {rse_id: size for rse_id, (size, _) in usage.items()})
    add_usage(session, account_id, usage)


def add_usage(session: Session, account_id: int, deltas: dict[int, tuple[int, int]]) -> None:
    """Move usage by (bytes, files) per RSE: one upsert for every RSE touched, so two
    transactions creating the first usage row of an account never collide."""
    rows = [
        {"account_id": account_id, "rse_id": rse_id, "bytes": size, "files": files}
        for rse_id, (size, files) in sorted(deltas.items())
        if size or files
    ]
    if not rows:
        return
    insert = pg_insert if is_postgres(session) else sqlite_insert
    statement = insert(Usage).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[Usage.account_id, Usage.rse_id],
            set_={
                "bytes": Usage.bytes + statement.excluded.bytes,
                "files": Usage.files + statement.excluded.files,
            },
        ),
        execution_options={"synchronize_session": False},
    )


def tally(rows: Iterable[tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """(rse_id, bytes) pairs → per-RSE (bytes, files)."""
    totals: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for rse_id, size in rows:
        totals[rse_id][0] += size
        totals[rse_id][1] += 1
    return {k: (v[0], v[1]) for k, v in totals.items()}
