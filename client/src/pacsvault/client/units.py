"""Sizes for people."""

from __future__ import annotations


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "PiB":
            break
        value /= 1024
    else:
        unit = "PiB"
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
