"""Bounded parameter types: every integer a route takes fits the database's 64 bits.

A number beyond them (``/rules/99999999999999999999999``) would reach SQLite or PostgreSQL
and fail there as a 500; bounded here, it is a 400 naming the parameter. Use ``Id`` for
every ``{…_id}`` in a path, ``Size`` for byte counts and ``Seconds`` for durations in bodies,
``SecondsQuery`` in queries (``le=MAX_INT`` on other integers), ``RunLabel`` for ``NAME.N``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, Field

from vre.errors import clip

MAX_INT = 2**63 - 1  # the largest BIGINT of SQLite and PostgreSQL
MAX_SECONDS = 100 * 365.25 * 86400  # a century: far beyond any lifetime, well within datetime

Id = Annotated[int, Path(ge=1, le=MAX_INT, description="a numeric id")]
Size = Annotated[int, Field(ge=0, le=MAX_INT, description="bytes")]
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, description="seconds")]
SecondsQuery = Annotated[float, Query(ge=0, le=MAX_SECONDS, description="seconds")]


def _run_label(label: str) -> str:
    """``NAME.N`` holds an integer too: bounded like every id."""
    number = label.rpartition(".")[2] if "." in label else ""
    if number.isdigit() and (len(number) > 19 or int(number) > MAX_INT):
        raise ValueError(f"run number {clip(number, 30)} is beyond {MAX_INT}")
    return label


RunLabel = Annotated[str, Path(description="NAME or NAME.N"), AfterValidator(_run_label)]
