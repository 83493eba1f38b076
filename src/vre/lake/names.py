"""Names of scopes and DIDs, and the deterministic path of a file on an RSE.

Names may contain ``/`` (like Rucio's), so every path segment is checked: a name
can never climb out of the RSE root.
"""

from __future__ import annotations

import hashlib
import re

from vre.errors import Invalid, shown

SCOPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]{0,29}\Z")
NAME_CHARS = re.compile(r"^[A-Za-z0-9_\-.+/]{1,255}\Z")
# Every '/'-separated part of a name becomes a path component on the RSE (see
# ``deterministic_path``), and a file's last one carries ``.vre-part-TAG`` while it is written
# (``storage.part_url``; the longest tag, a transfer's ``tN.xxxxxxxx``, has 29 characters).
# Filesystems allow 255 bytes per component: a longer part would pass validation and then fail
# on storage. Names are ASCII, so characters are bytes.
PART_SUFFIX = len(".vre-part-") + 29
MAX_COMPONENT = 255 - PART_SUFFIX
MAX_PATH = 4096  # PATH_MAX: an RSE prefix plus a file's path must stay under it
# Wildcards are allowed in listing patterns only.
PATTERN_CHARS = re.compile(r"^[A-Za-z0-9_\-.+/*?]{1,255}\Z")


def check_scope(scope: str) -> str:
    if not SCOPE.match(scope or ""):
        raise Invalid(
            f"invalid scope name {shown(scope)}: use letters, digits, '_', '-' or '.'"
            " (at most 30 characters, starting with a letter or digit)"
        )
    return scope


def check_name(name: str) -> str:
    if not NAME_CHARS.match(name or ""):
        raise Invalid(
            f"invalid DID name {shown(name)}: use letters, digits, '_', '-', '.', '+' or '/'"
            " (at most 255 characters)"
        )
    segments = name.split("/")
    if any(part in ("", ".", "..") for part in segments):
        raise Invalid(
            f"invalid DID name {shown(name)}: no empty, '.' or '..' path segments"
            " (a name cannot leave its scope)"
        )
    if any(len(part) > MAX_COMPONENT for part in segments):
        raise Invalid(
            f"invalid DID name {shown(name)}: each '/'-separated part has at most"
            f" {MAX_COMPONENT} characters (it is a file or directory name on storage)"
        )
    return name


def parse_did(did: str, default_scope: str | None = None) -> tuple[str, str]:
    """``scope:name`` → (scope, name); a bare name takes ``default_scope``."""
    if ":" in did:
        scope, name = did.split(":", 1)
    elif default_scope:
        scope, name = default_scope, did
    else:
        raise Invalid(f"invalid DID {shown(did)}: expected SCOPE:NAME")
    return check_scope(scope), check_name(name)


def parse_pattern(pattern: str) -> tuple[str, str]:
    """``scope:pattern*`` for listings; the name part may hold ``*`` and ``?``."""
    if ":" not in pattern:
        raise Invalid(f"invalid DID pattern {shown(pattern)}: expected SCOPE:PATTERN")
    scope, name = pattern.split(":", 1)
    name = name or "*"
    if not PATTERN_CHARS.match(name):
        raise Invalid(f"invalid name pattern {shown(name)}")
    return check_scope(scope), name


def deterministic_path(scope: str, name: str) -> str:
    """``scope/ab/cd/name`` from md5(scope:name), like Rucio's default hash layout.

    Hash directories keep any one directory small however many files a scope holds.
    """
    digest = hashlib.md5(f"{scope}:{name}".encode()).hexdigest()
    return f"{scope}/{digest[0:2]}/{digest[2:4]}/{name}"
