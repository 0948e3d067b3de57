"""SCSI/SAS health rules (HEALTH_RULES.md section 1.6).

SAS drives have no attribute table. The grown defect list is the SAS
analogue of reallocated sectors, and the error counter log counts errors
the drive could not correct. Both are WARNING on their own; growth between
polls is judged by the poller.
"""

from __future__ import annotations

from typing import Any, Mapping

from pacsvault.hardware._coerce import as_int, dig
from pacsvault.hardware.verdict import Assessment, Category, Reason, Verdict

SOURCE = "smartctl"
_DIRECTIONS = ("read", "write", "verify")


def assess_scsi(data: Mapping[str, Any], assessment: Assessment) -> bool:
    """Apply the SAS rules to a smartctl JSON document.

    Args:
        data: Parsed smartctl JSON.
        assessment: Assessment to add reasons and metrics to.

    Returns:
        True when SCSI health pages (defect list or error log) were found.
    """
    found = False
    defects = as_int(data.get("scsi_grown_defect_list"))
    if defects is not None:
        found = True
        assessment.metrics["scsi.grown_defects"] = float(defects)
        if defects > 0:
            assessment.add(Reason(SOURCE, "scsi_grown_defect_list", str(defects),
                                  "grown defects > 0 (SAS analogue of reallocated sectors)",
                                  Verdict.WARNING, Category.MEDIA))
    for direction in _DIRECTIONS:
        errors = as_int(dig(data, "scsi_error_counter_log", direction, "total_uncorrected_errors"))
        if errors is None:
            continue
        found = True
        assessment.metrics[f"scsi.uncorrected_{direction}"] = float(errors)
        if errors > 0:
            assessment.add(Reason(SOURCE, f"scsi_error_counter_log.{direction}.total_uncorrected_errors",
                                  str(errors), "uncorrected errors > 0", Verdict.WARNING, Category.MEDIA))
    _wear(data, assessment)
    _trip_temperature(data, assessment)
    return found


def _wear(data: Mapping[str, Any], assessment: Assessment) -> None:
    used = as_int(data.get("scsi_percentage_used_endurance_indicator"))
    if used is None:
        return
    assessment.metrics["scsi.percentage_used"] = float(used)
    if used >= 100:
        assessment.add(Reason(SOURCE, "scsi_percentage_used_endurance_indicator", f"{used}%",
                              "rated endurance used up: worn out, not failing; plan replacement",
                              Verdict.WARNING, Category.WEAR))


def _trip_temperature(data: Mapping[str, Any], assessment: Assessment) -> None:
    current = as_int(dig(data, "temperature", "current"))
    trip = as_int(dig(data, "temperature", "drive_trip"))
    # A trip point of 0 means "not reported" (RAID volumes print 0/0).
    if current is not None and trip and current >= trip:
        assessment.add(Reason(SOURCE, "temperature.current", f"{current} C >= trip {trip} C",
                              "temperature at or above the drive trip point", Verdict.WARNING, Category.TEMPERATURE))
