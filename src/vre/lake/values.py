"""Metadata values typed on a command line (kept import-light for the CLI)."""

from __future__ import annotations

import math

Value = str | int | float | bool


def parse_value(text: str) -> Value:
    """Numbers become numbers, everything else stays text."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text  # "nan" and "inf" stay words
