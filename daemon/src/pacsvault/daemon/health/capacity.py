"""Capacity of one volume: usage, the warning threshold, and its reasons.

Pure functions over numbers; the monitor measures (statvfs) and remembers
which side of the threshold each volume was on.
"""

from __future__ import annotations

from dataclasses import dataclass

from pacsvault.hardware import Category, Reason, Verdict

# A volume that crossed the threshold must fall this many percentage points
# below it before it counts as back under: one blob more or less must not
# raise an event on every check.
HYSTERESIS_PERCENT = 1.0


@dataclass(frozen=True)
class Usage:
    """``shutil.disk_usage`` figures, or the error that prevented them."""

    total: int = 0
    used: int = 0
    free: int = 0
    error: str = ""

    @property
    def used_percent(self) -> float:
        """Used share as ``df`` shows it (root-reserved blocks excluded)."""
        room = self.used + self.free
        return 100.0 * self.used / room if room else 0.0


def above_threshold(usage: Usage, threshold_percent: float, was_above: bool | None) -> bool:
    """Whether the volume counts as above the warning threshold now.

    Args:
        usage: Current figures.
        threshold_percent: ``health.capacity_warning_percent``.
        was_above: The previous answer; ``None`` on the first check.
    """
    if usage.error:
        return bool(was_above)
    limit = threshold_percent - HYSTERESIS_PERCENT if was_above else threshold_percent
    return usage.used_percent >= limit


def capacity_reasons(usage: Usage, threshold_percent: float, above: bool, room: bool, failed: str) -> list[Reason]:
    """Reasons about a volume's own state (not the disks beneath it).

    Args:
        usage: Current figures.
        threshold_percent: The warning threshold.
        above: Result of :func:`above_threshold`.
        room: The storage layer would place new data here (below its high
            watermark and above its reserve, not failed).
        failed: Why the storage layer stopped writes to it (an I/O error, a
            missing marker), ``""`` if it did not.
    """
    reasons: list[Reason] = []
    if usage.error:
        reasons.append(Reason("capacity", "path", usage.error, "volume directory unreachable",
                              Verdict.FAILED, Category.STATUS))
        return reasons
    if failed:
        reasons.append(Reason("storage", "failed", failed, "the storage layer stopped writes to this volume",
                              Verdict.FAILED, Category.STATUS))
    if above:
        reasons.append(Reason("capacity", "used", f"{usage.used_percent:.1f}%",
                              f"at or above health.capacity_warning_percent ({threshold_percent:g}%)",
                              Verdict.WARNING, Category.STATUS))
    if not room and not failed:
        reasons.append(Reason("capacity", "free", f"{usage.free} bytes",
                              "past the tier's high watermark or the volume's reserve: no new data",
                              Verdict.WARNING, Category.STATUS))
    return reasons
