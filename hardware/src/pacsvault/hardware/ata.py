"""ATA SMART attribute rules (SATA disks, SAT bridges, disks behind RAID HBAs).

Rules follow HEALTH_RULES.md sections 1 and 3. Attributes are keyed on their
numeric id, never on the name: vendors rename them (attribute 5 is
``Retired_Block_Count`` on Kingston SSDs).

Raw values are not compared naively. Seagate packs several counters into
one 48-bit raw value for 1, 7, 188 and 195, and temperatures pack min/max, so
counts are read from the first number of ``raw.string`` and 188 is unpacked;
1, 7 and 195 (error *rates*) are not judged on their raw value at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from pacsvault.hardware._coerce import as_dict, as_int, as_list, as_str, dig
from pacsvault.hardware.verdict import Assessment, Category, Reason, Verdict

SOURCE = "smartctl"

# Attributes whose raw value is a plain event count worth trending.
COUNTER_IDS: frozenset[int] = frozenset({5, 10, 184, 187, 188, 196, 197, 198, 199})

# Scrutiny's lowest 188 bucket (0-100) exists "to avoid notifications caused
# by low historical numbers of command timeouts (e.g. caused by a bad cable)".
COMMAND_TIMEOUT_WARN_ABOVE = 100
# Scrutiny/Backblaze AFR buckets: 1-15 reallocations barely move failure rate,
# 16+ triples it (0.075 -> 0.24), so 16 is where "warning" becomes "failing".
REALLOCATED_FAILING_AT = 16

_LEADING_INT = re.compile(r"^\s*(\d+)")


@dataclass(frozen=True)
class AtaAttribute:
    """One row of ``ata_smart_attributes.table`` with optional fields as None."""

    id: int
    name: str
    value: int | None
    thresh: int | None
    when_failed: str
    prefailure: bool
    raw_value: int | None
    raw_string: str

    @property
    def label(self) -> str:
        """``"5 Reallocated_Sector_Ct"`` style label for reasons."""
        return f"{self.id} {self.name}".strip()


def parse_attributes(data: Mapping[str, Any]) -> list[AtaAttribute]:
    """Read the attribute table of a smartctl JSON document.

    Rows without a usable numeric ``id`` are skipped; ``thresh`` is
    optional (the WD Red SA500 omits it).
    """
    rows: list[AtaAttribute] = []
    for row in as_list(dig(data, "ata_smart_attributes", "table")):
        row = as_dict(row)
        attr_id = as_int(row.get("id"))
        if attr_id is None:
            continue
        raw = as_dict(row.get("raw"))
        rows.append(
            AtaAttribute(
                id=attr_id,
                name=as_str(row.get("name")),
                value=as_int(row.get("value")),
                thresh=as_int(row.get("thresh")),
                when_failed=as_str(row.get("when_failed")).lower(),
                prefailure=bool(dig(row, "flags", "prefailure")),
                raw_value=as_int(raw.get("value")),
                raw_string=as_str(raw.get("string")),
            )
        )
    return rows


def unpack_seagate_words(raw: int) -> tuple[int, int, int]:
    """Split a 48-bit raw value into its three 16-bit counters (low first)."""
    return raw & 0xFFFF, (raw >> 16) & 0xFFFF, (raw >> 32) & 0xFFFF


def raw_count(attr: AtaAttribute) -> int | None:
    """Return the event count of a counter attribute after vendor decoding.

    The first number of ``raw.string`` is used because smartctl prints
    packed extras after it (``"2111 (12437 0)"``). For 188 a value above
    16 bits can only be Seagate's three packed counters (a real count above
    65535 timeouts is implausible); the largest of the three is taken so the
    decoding never understates the problem.
    """
    match = _LEADING_INT.match(attr.raw_string)
    count = int(match.group(1)) if match else attr.raw_value
    if count is None:
        return None
    if attr.id == 188 and count > 0xFFFF:
        return max(unpack_seagate_words(count))
    return count


def assess_ata(data: Mapping[str, Any], assessment: Assessment) -> bool:
    """Apply the ATA rules to a smartctl JSON document.

    Args:
        data: Parsed smartctl JSON.
        assessment: Assessment to add reasons and metrics to.

    Returns:
        True when an attribute table was found (health data present).
    """
    attributes = parse_attributes(data)
    for attr in attributes:
        _threshold_reasons(attr, assessment)
        count = raw_count(attr) if attr.id in COUNTER_IDS else None
        if count is None:
            continue
        assessment.metrics[f"ata.{attr.id}"] = float(count)
        reason = _counter_reason(attr, count)
        if reason is not None:
            assessment.add(reason)
    _log_notes(data, assessment)
    return bool(attributes)


def _threshold_reasons(attr: AtaAttribute, assessment: Assessment) -> None:
    shown = f"value {attr.value} thresh {attr.thresh}"
    if attr.when_failed == "now":
        if attr.prefailure:
            assessment.add(Reason(SOURCE, attr.label, shown, "pre-failure attribute at or below threshold now",
                                  Verdict.FAILED, Category.STATUS))
        else:
            # smartctl(8): an old-age attribute at threshold means end of
            # product life, not an impending failure.
            assessment.add(Reason(SOURCE, attr.label, shown, "old-age attribute at threshold (end of life)",
                                  Verdict.WARNING, Category.WEAR))
    elif attr.when_failed == "past":
        assessment.add(Reason(SOURCE, attr.label, shown, "attribute was at or below threshold in the past",
                              Verdict.WARNING, Category.STATUS))


def _counter_reason(attr: AtaAttribute, count: int) -> Reason | None:
    if count <= 0:
        return None
    value = str(count)
    if attr.id == 5:
        if count >= REALLOCATED_FAILING_AT:
            return Reason(SOURCE, attr.label, value, f"reallocated sectors >= {REALLOCATED_FAILING_AT} (Backblaze)",
                          Verdict.FAILING, Category.MEDIA)
        return Reason(SOURCE, attr.label, value, "reallocated sectors raw > 0 (Backblaze)",
                      Verdict.WARNING, Category.MEDIA)
    if attr.id in (187, 197, 198):
        return Reason(SOURCE, attr.label, value, "uncorrectable/pending sectors raw > 0 (Backblaze)",
                      Verdict.FAILING, Category.MEDIA)
    if attr.id == 188:
        if count > COMMAND_TIMEOUT_WARN_ABOVE:
            return Reason(SOURCE, attr.label, value, f"command timeouts > {COMMAND_TIMEOUT_WARN_ABOVE}",
                          Verdict.WARNING, Category.MEDIA)
        return Reason(SOURCE, attr.label, value, "a few command timeouts (often cabling); alert if growing",
                      Verdict.HEALTHY, Category.CABLING)
    if attr.id in (10, 184):
        return Reason(SOURCE, attr.label, value, "spin retries / end-to-end errors raw > 0",
                      Verdict.WARNING, Category.MEDIA)
    if attr.id == 199:
        return Reason(SOURCE, attr.label, value,
                      "interface CRC errors: check cable/backplane, not a media failure; alert if growing",
                      Verdict.HEALTHY, Category.CABLING)
    return None


def _log_notes(data: Mapping[str, Any], assessment: Assessment) -> None:
    errors = as_int(dig(data, "ata_smart_error_log", "summary", "count"))
    if errors is None:
        errors = as_int(dig(data, "ata_smart_error_log", "extended", "count"))
    if errors is not None:
        assessment.metrics["ata.error_log_count"] = float(errors)
    if errors:
        assessment.add(Reason(SOURCE, "ata_smart_error_log", str(errors), "ATA error log has entries (trend signal)",
                              Verdict.HEALTHY, Category.INFO))
    tests = as_list(dig(data, "ata_smart_self_test_log", "standard", "table"))
    failed = [t for t in tests if dig(t, "status", "passed") is False]
    if failed:
        assessment.add(Reason(SOURCE, "ata_smart_self_test_log", f"{len(failed)} failed",
                              "self-test log has failed tests", Verdict.HEALTHY, Category.INFO))
