"""Metadata values typed on a command line (kept import-light for the CLI)."""

from __future__ import annotations

Value = str | int | float | bool


def parse_value(text: str) -> Value:
    """Numbers become numbers, everything else stays text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
