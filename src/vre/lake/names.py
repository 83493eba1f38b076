"""Names of scopes and DIDs, and the deterministic path of a file on an RSE.

Names may contain ``/`` (like Rucio's), so every path segment is checked: a name
can never climb out of the RSE root.
"""

from __future__ import annotations

import hashlib
import re

from vre.errors import Invalid

SCOPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]{0,29}\Z")
NAME_CHARS = re.compile(r"^[A-Za-z0-9_\-.+/]{1,255}\Z")
# Wildcards are allowed in listing patterns only.
PATTERN_CHARS = re.compile(r"^[A-Za-z0-9_\-.+/*?]{1,255}\Z")


def check_scope(scope: str) -> str:
    if not SCOPE.match(scope or ""):
        raise Invalid(
            f"invalid scope name {scope!r}: use letters, digits, '_', '-' or '.'"
            " (at most 30 characters, starting with a letter or digit)"
        )
    return scope


def check_name(name: str) -> str:
    if not NAME_CHARS.match(name or ""):
        raise Invalid(
            f"invalid DID name {name!r}: use letters, digits, '_', '-', '.', '+' or '/'"
            " (at most 255 characters)"
        )
    segments = name.split("/")
    if any(part in ("", ".", "..") for part in segments):
        raise Invalid(
            f"invalid DID name {name!r}: no empty, '.' or '..' path segments"
            " (a name cannot leave its scope)"
        )
    return name


def parse_did(did: str, default_scope: str | None = None) -> tuple[str, str]:
    """``scope:name`` → (scope, name); a bare name takes ``default_scope``."""
    if ":" in did:
        scope, name = did.split(":", 1)
    elif default_scope:
        scope, name = default_scope, did
    else:
        raise Invalid(f"invalid DID {did!r}: expected SCOPE:NAME")
    return check_scope(scope), check_name(name)


def parse_pattern(pattern: str) -> tuple[str, str]:
    """``scope:pattern*`` for listings; the name part may hold ``*`` and ``?``."""
    if ":" not in pattern:
        raise Invalid(f"invalid DID pattern {pattern!r}: expected SCOPE:PATTERN")
    scope, name = pattern.split(":", 1)
    name = name or "*"
    if not PATTERN_CHARS.match(name):
        raise Invalid(f"invalid name pattern {name!r}")
    return check_scope(scope), name


def deterministic_path(scope: str, name: str) -> str:
    """``scope/ab/cd/name`` from md5(scope:name), like Rucio's default hash layout.

    Hash directories keep any one directory small however many files a scope holds.
    """
    digest = hashlib.md5(f"{scope}:{name}".encode()).hexdigest()
    return f"{scope}/{digest[0:2]}/{digest[2:4]}/{name}"
