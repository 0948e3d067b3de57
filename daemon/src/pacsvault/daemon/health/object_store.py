"""The health of an object-store tier: is it answering, how often in error, how fast.

Pure rules over the figures the back office keeps of its own calls to the
store (its looks every tiering pass and the mover's transfers, over the last
minutes). A store that is away is already a failed volume (critical: the
studies there cannot be read); here a store that answers badly becomes a
warning, and the figures are always there as notes.
"""

from __future__ import annotations

from pacsvault.daemon.storage.object_volume import ObjectStoreStatus
from pacsvault.hardware import Category, Reason, Verdict

SOURCE = "object-store"
# More than this share of calls in error, or a median call slower than this: a warning.
ERROR_RATIO_WARNING = 0.05
SLOW_P50_S = 1.0


def reasons(status: ObjectStoreStatus) -> list[Reason]:
    """The store's figures as reasons; WARNING ones for errors or slowness."""
    calls = status.calls
    minutes = f"in the last {calls.window_s / 60:.0f} minutes"
    errors = Verdict.WARNING if calls.errors and calls.error_ratio > ERROR_RATIO_WARNING else Verdict.HEALTHY
    last = f"; last: {calls.last_error}" if calls.last_error and errors is not Verdict.HEALTHY else ""
    found = [
        Reason(SOURCE, "errors", f"{calls.errors} of {calls.calls} calls",
               f"calls to the store {minutes}; a warning above {ERROR_RATIO_WARNING:.0%}{last}", errors),
        Reason(SOURCE, "latency", f"p50 {calls.p50_s * 1000:.0f} ms, p99 {calls.p99_s * 1000:.0f} ms",
               f"calls to the store {minutes}, retries included; a warning above {SLOW_P50_S:g} s at p50",
               Verdict.WARNING if calls.p50_s > SLOW_P50_S else Verdict.HEALTHY),
    ]
    if status.objects is not None:
        found.append(Reason(SOURCE, "objects", f"{status.objects} ({status.object_bytes} bytes)",
                            "under the tier's prefix, as the store lists them", Verdict.HEALTHY, Category.INFO))
    if status.object_lock is not None:
        found.append(Reason(SOURCE, "object lock", "on" if status.object_lock else "off",
                            "the bucket's S3 Object Lock: the store itself refuses an early delete",
                            Verdict.HEALTHY, Category.INFO))
    if status.next_probe_in_s is not None:
        found.append(Reason(SOURCE, "next look", f"in {status.next_probe_in_s:.0f} s",
                            "a store that is away is looked at again with backoff", Verdict.HEALTHY,
                            Category.INFO))
    return found
