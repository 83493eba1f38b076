"""Who may do what: every permission decision of the VRE, in one place.

Services ask this module (``require``, ``allows``, ``visible_to``) and raise its
answer; the native API, the CLI and the Rucio- and REANA-compatible routers only
translate. ``POLICY`` is also the source of the table in ``docs/permissions.md``
(``table()``; a test keeps the two equal and probes every restricted action over HTTP).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import Select

from vre.errors import Forbidden, NotFound

if TYPE_CHECKING:
    from vre.identity.models import Account
    from vre.lake.models import Scope

Q = TypeVar("Q")


class Who(StrEnum):
    ANYONE = "any account"
    SELF = "the account itself, for itself only"
    ADMIN = "an admin"
    OWNER = "its owner, or an admin"
    SCOPE_READER = "the scope's owner, any account if the scope is public, an admin"
    SCOPE_WRITER = "the scope's owner, or an admin"


@dataclass(frozen=True)
class Permission:
    who: Who
    what: str
    # Others are told the thing does not exist (404) rather than that it is not
    # theirs (403): a rule, token or run id must not reveal that it exists.
    hidden: bool = False
    # A listing: others are not refused, they see their own rows only (``visible_to``).
    filtered: bool = False


POLICY: dict[str, Permission] = {
    "account.create": Permission(Who.ADMIN, "create an account"),
    "account.list": Permission(Who.ADMIN, "list every account"),
    "account.whoami": Permission(Who.ANYONE, "see one's own account"),
    "account.password": Permission(
        Who.OWNER, "change an account's password (the account itself gives the old one)"
    ),
    "account.disable": Permission(Who.ADMIN, "disable or enable another account"),
    "account.delete": Permission(Who.ADMIN, "delete another account and revoke its tokens"),
    "token.create": Permission(Who.SELF, "create an API token"),
    "token.list": Permission(Who.SELF, "list one's tokens"),
    "token.list_other": Permission(Who.ADMIN, "list another account's tokens"),
    "token.revoke": Permission(
        Who.OWNER, "revoke a token and the tokens made with it", hidden=True
    ),
    "scope.create": Permission(Who.ANYONE, "create a scope owned by oneself"),
    "scope.create_for_other": Permission(Who.ADMIN, "create a scope for another account"),
    "scope.list": Permission(Who.ANYONE, "list the scopes one can read"),
    "scope.read": Permission(
        Who.SCOPE_READER,
        "read a scope's DIDs, metadata, replicas and bytes, however they are reached",
    ),
    "scope.write": Permission(
        Who.SCOPE_WRITER,
        "add, attach, detach, upload, set metadata or erase DIDs; make the scope public",
    ),
    "rse.list": Permission(Who.ANYONE, "list RSEs and resolve RSE expressions"),
    "rse.manage": Permission(Who.ADMIN, "add an RSE, set its options and attributes"),
    "rule.create": Permission(Who.SCOPE_READER, "create a rule for oneself on a DID"),
    "rule.create_for_other": Permission(Who.ADMIN, "create a rule owned by another account"),
    "rule.read": Permission(Who.OWNER, "see a rule and its locks", hidden=True),
    "rule.delete": Permission(Who.OWNER, "delete a rule", hidden=True),
    "rule.list_all": Permission(Who.ADMIN, "list every account's rules", filtered=True),
    "quota.set": Permission(Who.ADMIN, "set an account's quota on an RSE"),
    "quota.show_other": Permission(Who.ADMIN, "see another account's quotas and usage"),
    "transfer.list_all": Permission(Who.ADMIN, "list every account's transfers", filtered=True),
    "reaper.run": Permission(Who.ADMIN, "see what the reaper would delete, run it now"),
    "metrics.read": Permission(Who.ADMIN, "read /metrics"),
    "run.create": Permission(Who.ANYONE, "create and start one's own runs"),
    "run.manage": Permission(
        Who.OWNER, "see, start, stop, restart, delete a run; its logs and files", hidden=True
    ),
    "run.list_all": Permission(Who.ADMIN, "list every account's runs", filtered=True),
    "secret.manage": Permission(Who.SELF, "add, list and delete one's secrets"),
}


def is_admin(actor: Account | None) -> bool:
    return bool(actor is not None and actor.is_admin)


def allows(
    actor: Account,
    action: str,
    *,
    owner_id: int | None = None,
    scope: Scope | None = None,
) -> bool:
    """Whether ``actor`` may do ``action`` (to the thing owned by ``owner_id`` / in ``scope``)."""
    who = POLICY[action].who
    if who in (Who.ANYONE, Who.SELF):
        return True
    if actor.is_admin:
        return True
    if who is Who.OWNER:
        return owner_id is not None and owner_id == actor.id
    if who is Who.SCOPE_WRITER:
        return scope is not None and scope.owner_id == actor.id
    if who is Who.SCOPE_READER:
        return scope is not None and (scope.is_public or scope.owner_id == actor.id)
    return False  # Who.ADMIN


def require(
    actor: Account,
    action: str,
    *,
    owner_id: int | None = None,
    scope: Scope | None = None,
    missing: str = "",
    message: str = "",
) -> None:
    """Raise what the caller should see when ``actor`` may not do ``action``.

    A hidden action raises ``NotFound(missing)``; any other ``Forbidden`` (``message``,
    or one built from the policy's own words)."""
    if allows(actor, action, owner_id=owner_id, scope=scope):
        return
    permission = POLICY[action]
    if permission.hidden:
        raise NotFound(missing or "not found")
    raise Forbidden(message or f"only {permission.who} can {permission.what}")


def visible_to(query: Q, actor: Account, owner_column: Any, action: str) -> Q:
    """Restrict a listing to the actor's own rows unless ``action`` lets them see all.

    ``allows`` without an owner answers for "every row": true for an admin only."""
    if allows(actor, action):
        return query
    return cast(Q, cast(Select[Any], query).where(owner_column == actor.id))


def scopes_visible_to(query: Q, actor: Account, scope_table: Any) -> Q:
    """Restrict a listing of scopes to those the actor can read (``scope.read``)."""
    if is_admin(actor):
        return query
    readable = scope_table.is_public.is_(True) | (scope_table.owner_id == actor.id)
    return cast(Q, cast(Select[Any], query).where(readable))


def table() -> str:
    """The Markdown table of ``POLICY`` that ``docs/permissions.md`` carries."""
    lines = [
        "| action | who may | what it covers | others get |",
        "|---|---|---|---|",
    ]
    for name, p in POLICY.items():
        others = (
            "—"
            if p.who in (Who.ANYONE, Who.SELF)
            else "their own rows only"
            if p.filtered
            else "404 (not found)"
            if p.hidden
            else "403"
        )
        lines.append(f"| `{name}` | {p.who} | {p.what} | {others} |")
    return "\n".join(lines) + "\n"
