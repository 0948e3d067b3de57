"""NVMe SMART/Health log: one set of rules for smartctl and nvme-cli input.

smartctl (``nvme_smart_health_information_log``) and nvme-cli
(``nvme smart-log -o json``) expose the same log page under different names
and units; both are normalised into :class:`NvmeHealth` and judged by
:func:`assess_nvme_health`, so the rules live in exactly one place.

Rules follow HEALTH_RULES.md sections 2 and 3:

* critical_warning bits 0, 3, 4, 5 -> FAILED; bit 1 (temperature) -> WARNING;
  bit 2 (reliability degraded) -> FAILED, except the Samsung wear-out case
  (percentage_used >= 100, media_errors == 0, spare >= threshold), which is
  WARNING "worn out, not failing" (smartmontools#537).
* available_spare < available_spare_threshold -> FAILED; a threshold of 0
  means "not defined" (Optane), so only an exhausted spare is flagged.
* media_errors > 0 -> WARNING; percentage_used >= 100 -> WARNING (wear).
* num_err_log_entries is kept as a metric only: healthy drives log
  thousands of benign entries (unsupported-command probes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from pacsvault.hardware._coerce import as_dict, as_int, as_list, as_str, dig
from pacsvault.hardware.verdict import Assessment, Category, Reason, Verdict

# Kelvin offset: nvme-cli prints temperatures in Kelvin, smartctl in Celsius.
_KELVIN = 273


@dataclass(frozen=True)
class CriticalWarningBit:
    """Meaning of one bit of the NVMe critical_warning byte."""

    mask: int
    name: str
    words: str
    verdict: Verdict
    category: Category


CRITICAL_WARNING_BITS: tuple[CriticalWarningBit, ...] = (
    CriticalWarningBit(0x01, "spare_below_threshold", "available spare is below its threshold", Verdict.FAILED, Category.WEAR),
    CriticalWarningBit(
        0x02,
        "temperature_above_or_below_threshold",
        "temperature crossed the over- or under-temperature threshold",
        Verdict.WARNING,
        Category.TEMPERATURE,
    ),
    CriticalWarningBit(
        0x04,
        "reliability_degraded",
        "NVM subsystem reliability degraded by media or internal errors",
        Verdict.FAILED,
        Category.MEDIA,
    ),
    CriticalWarningBit(0x08, "media_read_only", "media placed in read-only mode", Verdict.FAILED, Category.MEDIA),
    CriticalWarningBit(
        0x10, "volatile_memory_backup_failed", "volatile memory backup device failed", Verdict.FAILED, Category.STATUS
    ),
    CriticalWarningBit(
        0x20,
        "persistent_memory_region_unreliable",
        "persistent memory region became read-only or unreliable",
        Verdict.FAILED,
        Category.MEDIA,
    ),
)
_KNOWN_BITS_MASK = 0x3F


@dataclass(frozen=True)
class NvmeHealth:
    """The NVMe SMART/Health log fields the rules use; ``None`` = not reported."""

    critical_warning: int | None = None
    available_spare: int | None = None
    available_spare_threshold: int | None = None
    percentage_used: int | None = None
    media_errors: int | None = None
    num_err_log_entries: int | None = None
    warning_temp_time: int | None = None
    critical_comp_time: int | None = None
    temperature_c: int | None = None
    power_on_hours: int | None = None

    def metrics(self) -> dict[str, float]:
        """Numeric counters for trend tracking, skipping missing ones."""
        fields = {
            "nvme.critical_warning": self.critical_warning,
            "nvme.available_spare": self.available_spare,
            "nvme.percentage_used": self.percentage_used,
            "nvme.media_errors": self.media_errors,
            "nvme.num_err_log_entries": self.num_err_log_entries,
            "nvme.warning_temp_time": self.warning_temp_time,
            "nvme.critical_comp_time": self.critical_comp_time,
            "temperature_c": self.temperature_c,
            "power_on_hours": self.power_on_hours,
        }
        return {k: float(v) for k, v in fields.items() if v is not None}


def decode_critical_warning(value: int) -> list[str]:
    """Describe each set bit of critical_warning in words.

    Args:
        value: The critical_warning byte.

    Returns:
        One phrase per set bit, including reserved bits 6 and 7.
    """
    words = [bit.words for bit in CRITICAL_WARNING_BITS if value & bit.mask]
    words += [f"reserved bit {n} set" for n in (6, 7) if value & (1 << n)]
    return words


def health_from_smartctl(log: Mapping[str, Any]) -> NvmeHealth:
    """Normalise smartctl's ``nvme_smart_health_information_log`` section."""
    return NvmeHealth(
        critical_warning=as_int(log.get("critical_warning")),
        available_spare=as_int(log.get("available_spare")),
        available_spare_threshold=as_int(log.get("available_spare_threshold")),
        percentage_used=as_int(log.get("percentage_used")),
        media_errors=as_int(log.get("media_errors")),
        num_err_log_entries=as_int(log.get("num_err_log_entries")),
        warning_temp_time=as_int(log.get("warning_temp_time")),
        critical_comp_time=as_int(log.get("critical_comp_time")),
        temperature_c=as_int(log.get("temperature")),
        power_on_hours=as_int(log.get("power_on_hours")),
    )


def health_from_nvmecli(data: Mapping[str, Any]) -> NvmeHealth:
    """Normalise ``nvme smart-log -o json`` output (nvme-cli 1.x/2.x).

    Handles critical_warning as an integer (<= 2.3) or an object with
    ``value`` (2.11), numbers as ints, floats or strings, and the Kelvin
    temperature.
    """
    warning = data.get("critical_warning")
    if isinstance(warning, Mapping):
        warning = warning.get("value")
    kelvin = as_int(data.get("temperature"))
    return NvmeHealth(
        critical_warning=as_int(warning),
        available_spare=as_int(_first(data, "avail_spare", "available_spare")),
        available_spare_threshold=as_int(_first(data, "spare_thresh", "available_spare_threshold")),
        percentage_used=as_int(_first(data, "percent_used", "percentage_used")),
        media_errors=as_int(data.get("media_errors")),
        num_err_log_entries=as_int(data.get("num_err_log_entries")),
        warning_temp_time=as_int(data.get("warning_temp_time")),
        critical_comp_time=as_int(data.get("critical_comp_time")),
        temperature_c=kelvin - _KELVIN if kelvin is not None and kelvin > 0 else None,
        power_on_hours=as_int(data.get("power_on_hours")),
    )


def _first(data: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in data:
            return data[key]
    return None


def assess_nvme_health(health: NvmeHealth, assessment: Assessment, source: str) -> None:
    """Apply the NVMe rules to ``health``, adding reasons and metrics.

    Args:
        health: Normalised log.
        assessment: Assessment to add reasons and metrics to.
        source: Tool name to record on each reason.
    """
    assessment.metrics.update(health.metrics())
    _critical_warning_reasons(health, assessment, source)
    _spare_reasons(health, assessment, source)
    if health.media_errors:
        assessment.add(
            Reason(source, "media_errors", str(health.media_errors),
                   "unrecovered data integrity errors > 0", Verdict.WARNING, Category.MEDIA)
        )
    if health.percentage_used is not None and health.percentage_used >= 100:
        assessment.add(
            Reason(source, "percentage_used", f"{health.percentage_used}%",
                   "rated endurance used up: worn out, not failing; plan replacement",
                   Verdict.WARNING, Category.WEAR)
        )
    for name in ("warning_temp_time", "critical_comp_time"):
        minutes = getattr(health, name)
        if minutes:
            # Lifetime minutes above WCTEMP/CCTEMP; only growth is alarming,
            # which the poller checks, so the absolute value is a note.
            assessment.add(Reason(source, name, f"{minutes} min", "time spent above the temperature threshold",
                                  Verdict.HEALTHY, Category.TEMPERATURE))


def _critical_warning_reasons(health: NvmeHealth, assessment: Assessment, source: str) -> None:
    value = health.critical_warning
    if not value:
        return
    for bit in CRITICAL_WARNING_BITS:
        if not value & bit.mask:
            continue
        verdict, rule = bit.verdict, bit.words
        if bit.mask == 0x04 and _is_worn_out_not_failing(health):
            # Samsung via Hetzner (smartmontools#537): bit 2 is raised when
            # percentage_used passes 100; with no media errors and spare
            # intact the drive is out of warranty, not broken.
            verdict = Verdict.WARNING
            rule = f"{bit.words}; set because endurance is used up (worn out, not failing)"
        assessment.add(Reason(source, f"critical_warning.{bit.name}", f"0x{value:02x}", rule, verdict, bit.category))
    if value & ~_KNOWN_BITS_MASK & 0xFF:
        assessment.add(Reason(source, "critical_warning", f"0x{value:02x}", "reserved critical_warning bit set",
                              Verdict.WARNING, Category.STATUS))


def _is_worn_out_not_failing(health: NvmeHealth) -> bool:
    spare_ok = (
        health.available_spare is not None
        and health.available_spare_threshold is not None
        and health.available_spare >= health.available_spare_threshold
    )
    return (health.percentage_used or 0) >= 100 and health.media_errors == 0 and spare_ok


def _spare_reasons(health: NvmeHealth, assessment: Assessment, source: str) -> None:
    spare, threshold = health.available_spare, health.available_spare_threshold
    if spare is None:
        return
    if threshold:
        if spare < threshold:
            assessment.add(Reason(source, "available_spare", f"{spare}% < threshold {threshold}%",
                                  "available spare below threshold", Verdict.FAILED, Category.WEAR))
    elif spare == 0:
        # Threshold 0 means the vendor defines none (Optane), so "spare <
        # threshold" can never fire; an empty spare pool still deserves a flag.
        assessment.add(Reason(source, "available_spare", "0%", "spare exhausted (no threshold defined)",
                              Verdict.WARNING, Category.WEAR))


def assess_nvmecli_smart_log(data: Mapping[str, Any], device: str = "") -> Assessment:
    """Assess one ``nvme smart-log -o json`` document.

    Args:
        data: Parsed JSON.
        device: Device path the log was read from; the log itself does not
            name it.

    Returns:
        An ``nvme`` assessment.
    """
    assessment = Assessment(kind="nvme", device=device or as_str(data.get("device")))
    health = health_from_nvmecli(data)
    if health.critical_warning is None and health.available_spare is None and health.percentage_used is None:
        assessment.add(Reason("nvme-cli", "smart-log", "no health fields", "unrecognised smart-log output",
                              Verdict.UNKNOWN, Category.TOOL))
        return assessment
    assess_nvme_health(health, assessment, "nvme-cli")
    return assessment


def assess_nvme_list(data: Mapping[str, Any]) -> list[Assessment]:
    """List the namespaces of ``nvme list -o json`` as inventory entries.

    Both the flat 2.3 ``Devices[]`` form and the 2.11
    ``Devices[].Subsystems[].Controllers[].Namespaces[]`` tree are read. A
    listing has no health data, so each entry is UNKNOWN with that reason.
    """
    found: list[Assessment] = []
    for entry in as_list(data.get("Devices")):
        entry = as_dict(entry)
        if "DevicePath" in entry:
            found.append(_listed(as_str(entry.get("DevicePath")), entry))
        for subsystem in as_list(entry.get("Subsystems")):
            for ctrl in as_list(as_dict(subsystem).get("Controllers")):
                ctrl = as_dict(ctrl)
                for ns in as_list(ctrl.get("Namespaces")):
                    found.append(_listed("/dev/" + as_str(dig(ns, "NameSpace")), ctrl))
    return found


def _listed(device: str, info: Mapping[str, Any]) -> Assessment:
    assessment = Assessment(
        kind="inventory", device=device,
        model=as_str(info.get("ModelNumber")), serial=as_str(info.get("SerialNumber")),
    )
    assessment.add(Reason("nvme-cli", "list", "listed", "inventory listing only, no health data",
                          Verdict.UNKNOWN, Category.INFO))
    return assessment
