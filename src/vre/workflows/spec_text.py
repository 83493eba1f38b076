"""From ``reana.yaml`` text to a document: bounded in size and depth, without references.

A specification is text from a user, parsed on the server: a 517-byte file of nested
aliases (the billion laughs) once took 64 s and 3.5 GB to expand. Anchors and aliases are
refused from the parser's events, before anything is built (REANA's specifications never
need them), the text is capped at ``VRE_MAX_SPECIFICATION_SIZE`` and its nesting at
``MAX_DEPTH``. :func:`canonical` gives the JSON form a run stores.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import yaml

from vre.config import get_settings
from vre.errors import Invalid, clip

MAX_DEPTH = 32  # nesting of mappings and lists: REANA's deepest is about 6
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SpecError(Invalid, ValueError):
    """An invalid specification; ``errors`` lists every problem, each naming its key path."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid reana.yaml: " + "; ".join(self.errors))


def canonical(value: Any) -> Any:
    """JSON form of a YAML value (keys as text, dates in ISO, sets as sorted lists, no NaN)
    so that key sorting works and the database's JSON column can store it."""
    if isinstance(value, dict):
        return {_key(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((canonical(v) for v in value), key=repr)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        raise SpecError(["a number is too large: integers have at most 19 digits"])
    return value.hex() if isinstance(value, bytes) else value


def _key(key: Any) -> str:
    return key.isoformat() if isinstance(key, date) else str(key)


def _refuse_references(text: str) -> None:
    """Refuse anchors and aliases, and nesting deeper than ``MAX_DEPTH``, from the parser's
    events: before anything is built, so ``&a [*b, *b, ...]`` chains (the billion laughs)
    cost their text, never their expansion. REANA's own specifications never need them."""
    depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        line = event.start_mark.line + 1 if event.start_mark else 0
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            kind, sign = (
                ("aliases", "*") if isinstance(event, yaml.AliasEvent) else ("anchors", "&")
            )
            raise SpecError(
                [
                    f"line {line}: YAML {kind} ({sign}{clip(anchor, 40)}) are not allowed in"
                    " a specification: write the value out"
                ]
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecError([f"line {line}: nested more than {MAX_DEPTH} levels deep"])
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def load(text: str) -> Any:
    """The YAML document of a ``reana.yaml``, within the size and shape limits."""
    limit = get_settings().max_specification_size
    size = len(text.encode("utf-8", errors="replace"))
    if size > limit:
        raise SpecError(
            [f"the specification is {size} bytes, more than {limit} (VRE_MAX_SPECIFICATION_SIZE)"]
        )
    try:
        _refuse_references(text)
        return yaml.load(text, Loader=_LOADER)
    except ValueError as exc:  # a scalar YAML cannot build: an integer of 5000 digits
        if isinstance(exc, SpecError):
            raise
        raise SpecError([f"invalid YAML: a value cannot be read ({clip(str(exc))})"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = clip(getattr(exc, "problem", None) or exc)
        raise SpecError([f"invalid YAML{where}: {problem}"]) from exc
