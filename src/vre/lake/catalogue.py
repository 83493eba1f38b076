"""DIDs: files, datasets and containers, and what is attached to what.

Who may see a DID is one rule (``Rights``, ``Under``): its own scope decides (policy
``scope.read``), however it is reached. A collection shows another account only the
members it may read; one it may not read shows nothing of what it holds, not even
through a container above it. Listings omit the rest and say nothing of it; stage-in
refuses instead (``replicas.list_for(..., refuse_unreadable=True)``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import ColumnElement, Row, Select, delete, func, select
from sqlalchemy.orm import Session

from vre import bulk, policy
from vre.db import utcnow
from vre.errors import Conflict, Invalid, NotFound
from vre.identity.models import Account
from vre.lake import meta, scopes
from vre.lake.models import (
    CONTAINER,
    DATASET,
    DID,
    DID_TYPES,
    FILE,
    Attachment,
    CollectionUpdate,
    Scope,
)
from vre.lake.names import check_name, check_scope, parse_pattern


def get(session: Session, scope: str, name: str) -> DID:
    did = session.scalar(select(DID).where(DID.scope == scope, DID.name == name))
    if did is None:
        raise NotFound(f"DID {scope}:{name} does not exist")
    return did


def readable(session: Session, actor: Account, scope: str, name: str) -> DID:
    scopes.readable(session, actor, scope)
    return get(session, check_scope(scope), check_name(name))


def writable(session: Session, actor: Account, scope: str, name: str) -> DID:
    scopes.writable(session, actor, scope)
    return get(session, scope, check_name(name))


class _Scoped(Protocol):
    @property
    def scope(self) -> str: ...


T = TypeVar("T", bound=_Scoped)


@dataclass(frozen=True)
class Rights:
    """The scopes one account may read (``scope.read``), looked up once per request."""

    scopes: frozenset[str] | None  # None: every scope (an admin)

    def __call__(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes

    def keep(self, items: Iterable[T]) -> list[T]:
        return [i for i in items if self(i.scope)]


def rights(session: Session, actor: Account) -> Rights:
    """``scope.read`` for every scope at once: one query however many DIDs are checked."""
    if policy.is_admin(actor):
        return Rights(None)
    query = policy.scopes_visible_to(select(Scope.name), actor, Scope)
    return Rights(frozenset(session.scalars(query)))


@dataclass(frozen=True)
class Under:
    """What an account may see under some roots it may read: the DIDs of ``sources()``
    whose own scope ``rights`` allows. ``reached``: the collections it may pass through
    when a collection on the way is hidden (None when none is: the usual, fast case)."""

    rights: Rights
    roots: Sequence[int] | Select[Any]
    reached: frozenset[int] | None

    def sources(self) -> list[Any]:
        """Id queries whose union holds every candidate DID (the roots included)."""
        if self.reached is None:
            return [descendant_ids(self.roots)]
        return [
            select(DID.id).where(DID.id.in_(self.roots)),
            select(Attachment.child_id).where(Attachment.parent_id.in_(self.roots)),
            *(
                select(Attachment.child_id).where(Attachment.parent_id.in_(chunk))
                for chunk in bulk.chunks(sorted(self.reached))
            ),
        ]


def under(session: Session, actor: Account, roots: Sequence[int] | Select[Any]) -> Under:
    """Who sees what below ``roots``. Datasets hold files only, so only containers can
    hide a collection: no query at all unless a root is a container, then one over the
    containers (never the files), and a walk that stops at collections one may not read."""
    seen = rights(session, actor)
    if seen.scopes is None:
        return Under(seen, roots, None)
    start = select(DID.id).where(DID.id.in_(roots), DID.type == CONTAINER)
    tops = set(session.scalars(start))
    if not tops:
        return Under(seen, roots, None)
    down = start.cte("containers", recursive=True)
    step = (
        select(Attachment.child_id)
        .join(down, Attachment.parent_id == down.c.id)
        .join(DID, DID.id == Attachment.child_id)
        .where(DID.type == CONTAINER)
    )
    tree = down.union(step)
    edges: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for parent, child, scope in session.execute(
        select(Attachment.parent_id, Attachment.child_id, DID.scope)
        .join(DID, DID.id == Attachment.child_id)
        .where(Attachment.parent_id.in_(select(tree.c.id)))
    ):
        edges[parent].append((child, scope))
    if all(seen(scope) for children in edges.values() for _, scope in children):
        return Under(seen, roots, None)
    reached, todo = set(tops), list(tops)
    while todo:
        for child, scope in edges.get(todo.pop(), ()):
            if child not in reached and seen(scope):
                reached.add(child)
                todo.append(child)
    return Under(seen, roots, frozenset(reached))


def visible(session: Session, seen: Under, query: Select[Any]) -> list[DID]:
    """The DIDs of ``query`` (ordered by scope and name) that ``seen`` shows, no repeats."""
    found: dict[int, DID] = {}
    sources = seen.sources()
    for source in sources:
        for did in session.scalars(query.where(DID.id.in_(source))):
            if did.id not in found and seen.rights(did.scope):
                found[did.id] = did
    if len(sources) == 1:
        return list(found.values())  # in the query's order
    return sorted(found.values(), key=lambda d: (d.scope, d.name))


def files_for(session: Session, actor: Account, dids: Sequence[DID]) -> list[DID]:
    """``files_of`` as ``actor`` may see them (what a rule of ``actor`` covers)."""
    if not dids:
        return []
    seen = under(session, actor, [d.id for d in dids])
    return visible(session, seen, select(DID).where(DID.type == FILE).order_by(DID.scope, DID.name))


def contents_for(session: Session, actor: Account, parent: DID) -> list[DID]:
    """A collection's content as ``actor`` may see it: members it may not read are left
    out, and nothing says they are there."""
    return rights(session, actor).keep(contents(session, parent))


def lengths_for(session: Session, actor: Account, ids: Sequence[int]) -> dict[int, int]:
    """``child_counts`` of the members ``actor`` may see (a length must not reveal more)."""
    if not ids:
        return {}
    seen = rights(session, actor)
    lengths: dict[int, int] = defaultdict(int)
    for parent, scope, count in session.execute(
        select(Attachment.parent_id, DID.scope, func.count())
        .join(DID, DID.id == Attachment.child_id)
        .where(Attachment.parent_id.in_(ids))
        .group_by(Attachment.parent_id, DID.scope)
    ):
        if seen(scope):
            lengths[parent] += count
    return dict(lengths)


def add_collection(
    session: Session,
    actor: Account,
    scope: str,
    name: str,
    kind: str,
    *,
    meta_values: dict[str, Any] | None = None,
) -> DID:
    if kind not in (DATASET, CONTAINER):
        raise Invalid(f"invalid collection type {kind!r}: dataset or container")
    scopes.writable(session, actor, scope)
    check_name(name)
    if session.scalar(select(DID.id).where(DID.scope == scope, DID.name == name)) is not None:
        raise Conflict(f"DID {scope}:{name} already exists")
    did = DID(scope=scope, name=name, type=kind, account_id=actor.id, is_open=True)
    session.add(did)
    session.flush()
    if meta_values:
        meta.set_many(session, [did.id], meta_values)
    return did


def set_open(session: Session, actor: Account, scope: str, name: str, is_open: bool) -> DID:
    did = writable(session, actor, scope, name)
    if did.type == FILE:
        raise Invalid(f"{scope}:{name} is a file: only collections can be opened or closed")
    did.is_open = is_open
    return did


LOOKUP = (DID.id, DID.scope, DID.name, DID.type, DID.bytes, DID.adler32, DID.md5)


def find_many(
    session: Session, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Row[Any]]:
    """Look DIDs up by (scope, name): light rows, one ``name IN (…)`` query per scope chunk.

    ``scope = :s AND name IN (…)`` uses the unique index on both back ends, where a
    row-value ``IN`` makes PostgreSQL filter a long OR list row by row.
    """
    by_scope: dict[str, list[str]] = defaultdict(list)
    for scope, name in pairs:
        by_scope[scope].append(name)
    found: dict[tuple[str, str], Row[Any]] = {}
    for scope, names in by_scope.items():
        for batch in bulk.chunks(names):
            query = select(*LOOKUP).where(DID.scope == scope, DID.name.in_(batch))
            for row in session.execute(query):
                found[(row.scope, row.name)] = cast(Row[Any], row)
    return found


def find_all(session: Session, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Row[Any]]:
    """Like ``find_many``, but every DID must exist."""
    found = find_many(session, pairs)
    missing = [f"{s}:{n}" for s, n in pairs if (s, n) not in found]
    if missing:
        raise NotFound(f"DID {missing[0]} does not exist" + _more(len(missing)))
    return found


def ancestors(session: Session, did_id: int) -> set[int]:
    """Every collection that contains ``did_id``, at any depth (for cycle checks)."""
    first = select(Attachment.parent_id.label("id")).where(Attachment.child_id == did_id)
    up = first.cte("up", recursive=True)
    step = select(Attachment.parent_id).join(up, Attachment.child_id == up.c.id)
    whole = up.union(step)
    return set(session.scalars(select(whole.c.id)))


def attach(
    session: Session,
    actor: Account,
    parent_scope: str,
    parent_name: str,
    children: Sequence[tuple[str, str]],
) -> int:
    """Attach children to a dataset (files) or container (collections); returns new count."""
    parent = writable(session, actor, parent_scope, parent_name)
    if parent.type == FILE:
        raise Invalid(f"{parent_scope}:{parent_name} is a file: attach into a collection")
    if not parent.is_open:
        raise Invalid(f"{parent_scope}:{parent_name} is closed: nothing can be attached")
    for scope, name in children:
        check_scope(scope)
        check_name(name)
    for scope in {s for s, _ in children}:
        scopes.readable(session, actor, scope)
    found = find_all(session, children)
    wanted = {FILE} if parent.type == DATASET else {DATASET, CONTAINER}
    for (scope, name), did in found.items():
        if did.type not in wanted:
            raise Invalid(
                f"cannot attach {did.type} {scope}:{name} to {parent.type}"
                f" {parent_scope}:{parent_name}: a {parent.type} holds "
                + (" and ".join(sorted(wanted)) + "s")
            )
    if parent.type == CONTAINER:
        forbidden = ancestors(session, parent.id) | {parent.id}
        for (scope, name), did in found.items():
            if did.id in forbidden:
                raise Invalid(
                    f"attaching {scope}:{name} to {parent_scope}:{parent_name} would make a cycle"
                )
    return link(session, parent.id, [found[c].id for c in dict.fromkeys(children)])


def open_dataset(session: Session, actor: Account, scope: str, name: str) -> DID:
    """A dataset the actor may add files to."""
    did = writable(session, actor, scope, name)
    if did.type != DATASET:
        raise Invalid(f"{scope}:{name} is a {did.type}, not a dataset")
    if not did.is_open:
        raise Invalid(f"dataset {scope}:{name} is closed: nothing can be added")
    return did


def link(session: Session, parent_id: int, child_ids: Sequence[int]) -> int:
    """Insert the attachments not there yet (callers have checked kinds and cycles)."""
    existing: set[int] = set()
    for batch in bulk.chunks(child_ids):
        existing |= set(
            session.scalars(
                select(Attachment.child_id).where(
                    Attachment.parent_id == parent_id, Attachment.child_id.in_(batch)
                )
            )
        )
    now = utcnow()
    new = [
        {"parent_id": parent_id, "child_id": i, "created_at": now}
        for i in child_ids
        if i not in existing
    ]
    bulk.insert_rows(session, Attachment.__table__, new)
    if new:  # rules over this collection pick the new files up (the worker evaluates them)
        session.add(CollectionUpdate(parent_id=parent_id))
    return len(new)


def detach(
    session: Session,
    actor: Account,
    parent_scope: str,
    parent_name: str,
    children: Sequence[tuple[str, str]],
) -> int:
    """Detach children, also of scopes the actor may no longer read (the collection is
    theirs). For those, a missing DID is "not attached" too: no answer tells another
    account whether a private DID exists."""
    parent = writable(session, actor, parent_scope, parent_name)
    found = find_many(session, children)
    seen = rights(session, actor)
    for scope, name in children:
        if (scope, name) not in found:
            if seen(scope):
                raise NotFound(f"DID {scope}:{name} does not exist")
            raise NotFound(f"{scope}:{name} is not attached to {parent_scope}:{parent_name}")
    ids = [d.id for d in found.values()]
    attached = set(
        session.scalars(
            select(Attachment.child_id).where(
                Attachment.parent_id == parent.id, Attachment.child_id.in_(ids)
            )
        )
    )
    for (scope, name), did in found.items():
        if did.id not in attached:
            raise NotFound(f"{scope}:{name} is not attached to {parent_scope}:{parent_name}")
    session.execute(
        delete(Attachment).where(Attachment.parent_id == parent.id, Attachment.child_id.in_(ids))
    )
    session.add(CollectionUpdate(parent_id=parent.id))
    return len(ids)


def contents(session: Session, parent: DID) -> list[DID]:
    query = (
        select(DID)
        .join(Attachment, Attachment.child_id == DID.id)
        .where(Attachment.parent_id == parent.id)
        .order_by(DID.scope, DID.name)
    )
    return list(session.scalars(query))


def descendant_ids(roots: Iterable[int] | Select[Any]) -> Select[Any]:
    """A query of every DID id under ``roots`` (and the roots), by recursive CTE."""
    seed_ids = roots if isinstance(roots, Select) else list(roots)
    seed = select(DID.id.label("id")).where(DID.id.in_(seed_ids)).cte("down", recursive=True)
    step = select(Attachment.child_id).join(seed, Attachment.parent_id == seed.c.id)
    down = seed.union(step)
    return select(down.c.id)


def files_of(session: Session, dids: Sequence[DID]) -> list[DID]:
    """Every file under the given DIDs (a file stands for itself), sorted, no repeats."""
    if not dids:
        return []
    query = (
        select(DID)
        .where(DID.id.in_(descendant_ids(d.id for d in dids)), DID.type == FILE)
        .order_by(DID.scope, DID.name)
    )
    return list(session.scalars(query))


def _matches_pattern(session: Session, pattern: str) -> ColumnElement[bool]:
    """Case-sensitive wildcards on both back ends (SQLite's LIKE ignores ASCII case).

    Pattern characters are restricted (no ``[``), so a pattern is a valid GLOB as is.
    """
    if session.get_bind().dialect.name == "sqlite":
        return DID.name.op("GLOB")(pattern)
    return DID.name.like(_like(pattern), escape="\\")


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def list_dids(
    session: Session,
    actor: Account,
    pattern: str,
    *,
    kind: str | None = None,
    filters: str | None = None,
    recursive: bool = False,
    limit: int | None = None,
) -> list[DID]:
    """DIDs matching ``scope:pattern`` and metadata filters.

    With ``recursive``, the contents of matching collections are listed too.
    """
    scope, name_pattern = parse_pattern(pattern)
    scopes.readable(session, actor, scope)
    if kind is not None and kind not in (*DID_TYPES, "collection", "all"):
        raise Invalid(f"invalid DID type {kind!r}: file, dataset, container, collection or all")
    conditions = [DID.scope == scope, *meta.where(meta.parse_filters(filters))]
    if name_pattern != "*":
        if "*" in name_pattern or "?" in name_pattern:
            conditions.append(_matches_pattern(session, name_pattern))
        else:
            conditions.append(DID.name == name_pattern)
    matched = select(DID.id).where(*conditions)
    query = select(DID)
    if kind == "collection":
        query = query.where(DID.type.in_((DATASET, CONTAINER)))
    elif kind in DID_TYPES:
        query = query.where(DID.type == kind)
    if not recursive:
        query = query.where(DID.id.in_(matched)).order_by(DID.scope, DID.name)
        return list(session.scalars(query.limit(limit) if limit else query))
    # Contents may live in other scopes: keep what the actor may see (``under``). Filtering
    # in Python, not SQL, keeps PostgreSQL's planner off a nested loop over the recursive CTE.
    shown = visible(session, under(session, actor, matched), query.order_by(DID.scope, DID.name))
    return shown[:limit] if limit else shown


def _more(count: int) -> str:
    return f" (and {count - 1} more)" if count > 1 else ""


def child_counts(session: Session, ids: Sequence[int]) -> dict[int, int]:
    if not ids:
        return {}
    return dict(
        session.execute(
            select(Attachment.parent_id, func.count())
            .where(Attachment.parent_id.in_(ids))
            .group_by(Attachment.parent_id)
        ).all()
    )


def delete_collection(session: Session, actor: Account, scope: str, name: str) -> None:
    """Remove a collection; what it held stays (file deletion needs the reaper, issue 3)."""
    did = writable(session, actor, scope, name)
    if did.type == FILE:
        raise Invalid("deleting files goes through their replicas (a later issue)")
    session.execute(delete(Attachment).where(Attachment.parent_id == did.id))
    session.delete(did)
