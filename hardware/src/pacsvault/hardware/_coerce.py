"""Tolerant accessors for tool JSON whose types drift between versions.

nvme-cli has printed the same counter as ``310``, ``310.0`` and ``"310"``
depending on version and build; smartctl sections come and go with the
options used. These helpers turn "missing or odd" into ``None`` instead of
an exception, so one odd field never hides the rest of a report.
"""

from __future__ import annotations

from typing import Any, Mapping


def as_int(value: Any) -> int | None:
    """Coerce ``value`` to int like ``int(float(x))``; ``None`` if impossible.

    Booleans are rejected on purpose: a ``true`` where a counter belongs is a
    format change, not the number 1.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return as_int(float(text))
        except ValueError:
            return None
    return None


def as_dict(value: Any) -> Mapping[str, Any]:
    """Return ``value`` if it is a mapping, else an empty mapping."""
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    """Return ``value`` if it is a list, else an empty list."""
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str:
    """Return ``value`` stripped if it is a string, else ``""``."""
    return value.strip() if isinstance(value, str) else ""


def dig(data: Any, *keys: str) -> Any:
    """Follow ``keys`` through nested mappings; ``None`` when any is missing."""
    current = data
    for key in keys:
        if not isinstance(current, Mapping) or key not in current:
            return None
        current = current[key]
    return current
