"""Assess ``smartctl --json`` output for ATA, SAT-behind-RAID, SCSI and NVMe.

This module reads the envelope (format version, exit-status bitmask,
messages, identity, overall status) and hands the protocol sections to
:mod:`ata`, :mod:`scsi` and :mod:`nvme`. Unknown keys are ignored and every
section is optional: smartctl output varies with the options used, the
version and what the device (or the bridge in front of it) answers.

States that are not "the disk is failing" stay distinct:

* device open failed, or in standby with ``--nocheck=standby`` -> UNKNOWN;
* a device smartctl cannot drive (virtio) or that has no SMART at all (a
  hardware-RAID virtual volume) -> UNSUPPORTED;
* attributes without an overall status (``-A`` only) -> UNKNOWN plus
  whatever the attributes show.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from pacsvault.hardware._coerce import as_dict, as_int, as_list, as_str, dig
from pacsvault.hardware.ata import assess_ata
from pacsvault.hardware.nvme import assess_nvme_health, health_from_smartctl
from pacsvault.hardware.scsi import assess_scsi
from pacsvault.hardware.verdict import Assessment, Category, Reason, Verdict

SOURCE = "smartctl"

# smartctl.h exit-status bits.
FAILCMD, FAILDEV, FAILSMART, FAILSTATUS, FAILATTR, FAILAGE, FAILERR, FAILLOG = (1 << n for n in range(8))

_STANDBY = re.compile(r"\bin (STANDBY|SLEEP|IDLE\w*) mode\b", re.IGNORECASE)
_NO_DEVICE_TYPE = re.compile(r"unable to detect device type|unknown device type", re.IGNORECASE)
_KINDS = {"ATA": "ata", "SCSI": "scsi", "NVME": "nvme"}


def is_standby(assessment: Assessment) -> bool:
    """True when smartctl skipped the device because it was spun down."""
    return any(r.source == SOURCE and r.attribute == "standby" for r in assessment.reasons)


def assess_smartctl(data: Mapping[str, Any], device: str = "") -> Assessment:
    """Assess one smartctl JSON document.

    Args:
        data: Parsed JSON of ``smartctl --json -a``/``-x``/``-H``/``-A``.
        device: Device path to report when the output does not name it.

    Returns:
        An assessment whose ``kind`` is ``ata``, ``scsi``, ``nvme`` or
        ``unknown``.
    """
    protocol = as_str(dig(data, "device", "protocol")).upper()
    assessment = Assessment(
        kind=_KINDS.get(protocol, "unknown"),
        device=_device_label(data) or device or _argv_device(data),
        model=_model(data),
        serial=as_str(data.get("serial_number")),
    )
    _format_notes(data, assessment)
    exit_status = as_int(dig(data, "smartctl", "exit_status")) or 0
    messages = [as_str(dig(m, "string")) for m in as_list(dig(data, "smartctl", "messages"))]
    if _stopped_early(exit_status, messages, assessment):
        return assessment
    _common_metrics(data, assessment)
    found = _protocol_sections(data, protocol, assessment)
    has_status = isinstance(dig(data, "smart_status", "passed"), bool)
    _overall_status(data, protocol, exit_status, assessment)
    if not found and not has_status:
        _no_health_data(data, exit_status, assessment)
    elif not has_status:
        assessment.add(Reason(SOURCE, "smart_status", "missing", "no overall health status in the output",
                              Verdict.UNKNOWN, Category.TOOL))
    _exit_notes(exit_status, messages, assessment)
    return assessment


def _device_label(data: Mapping[str, Any]) -> str:
    name = as_str(dig(data, "device", "name"))
    dev_type = as_str(dig(data, "device", "type"))
    # megaraid,N / cciss,N / areca,N address one disk behind a controller
    # node that several disks share, so the type is part of its identity.
    return f"{name} [{dev_type}]" if name and "," in dev_type else name


def _argv_device(data: Mapping[str, Any]) -> str:
    # An open failure prints no "device" section; the argv still names it.
    paths = [as_str(a) for a in as_list(dig(data, "smartctl", "argv")) if as_str(a).startswith("/dev/")]
    return paths[-1] if paths else ""


def _model(data: Mapping[str, Any]) -> str:
    for key in ("model_name", "scsi_model_name"):
        model = as_str(data.get(key))
        if model:
            return model
    vendor = as_str(data.get("scsi_vendor")) or as_str(data.get("vendor"))
    product = as_str(data.get("scsi_product")) or as_str(data.get("product"))
    return f"{vendor} {product}".strip()


def _format_notes(data: Mapping[str, Any], assessment: Assessment) -> None:
    version = as_list(data.get("json_format_version"))
    major = as_int(version[0]) if version else None
    if major is None:
        note = "no json_format_version (trimmed or hand-edited output); parsed best-effort"
    elif major == 0:
        note = "pre-1.0 JSON format (smartctl < 7.0); parsed best-effort"
    elif major > 1:
        note = "newer JSON format than 1.x; unknown fields ignored"
    else:
        return
    assessment.add(Reason(SOURCE, "json_format_version", str(version or "missing"), note,
                          Verdict.HEALTHY, Category.TOOL))


def _stopped_early(exit_status: int, messages: list[str], assessment: Assessment) -> bool:
    """Handle outputs that carry no device data at all; True if handled."""
    text = "; ".join(m for m in messages if m) or f"exit status {exit_status}"
    if any(_STANDBY.search(m) for m in messages):
        assessment.add(Reason(SOURCE, "standby", text, "device in low-power mode; not woken (--nocheck=standby)",
                              Verdict.UNKNOWN, Category.TOOL))
        return True
    if exit_status & FAILCMD and any(_NO_DEVICE_TYPE.search(m) for m in messages):
        assessment.add(Reason(SOURCE, "device type", text, "smartctl cannot talk SMART to this device",
                              Verdict.UNSUPPORTED, Category.TOOL))
        return True
    if exit_status & (FAILCMD | FAILDEV):
        rule = "device open failed" if exit_status & FAILDEV else "smartctl command failed"
        assessment.add(Reason(SOURCE, "exit_status", text, rule, Verdict.UNKNOWN, Category.TOOL))
        return True
    return False


def _common_metrics(data: Mapping[str, Any], assessment: Assessment) -> None:
    temperature = as_int(dig(data, "temperature", "current"))
    if temperature:
        assessment.metrics["temperature_c"] = float(temperature)
    hours = as_int(dig(data, "power_on_time", "hours"))
    if hours is not None:
        assessment.metrics["power_on_hours"] = float(hours)


def _protocol_sections(data: Mapping[str, Any], protocol: str, assessment: Assessment) -> bool:
    found = False
    if protocol == "ATA" or "ata_smart_attributes" in data:
        found |= assess_ata(data, assessment)
    if protocol == "SCSI" or "scsi_grown_defect_list" in data:
        found |= assess_scsi(data, assessment)
    log = as_dict(data.get("nvme_smart_health_information_log"))
    if log:
        assess_nvme_health(health_from_smartctl(log), assessment, SOURCE)
        found = True
    return found


def _overall_status(data: Mapping[str, Any], protocol: str, exit_status: int, assessment: Assessment) -> None:
    passed = dig(data, "smart_status", "passed")
    nvme_decoded = protocol == "NVME" and "nvme_smart_health_information_log" in data
    if passed is False and not nvme_decoded:
        assessment.add(Reason(SOURCE, "smart_status.passed", "false", "SMART overall-health self-assessment failed",
                              Verdict.FAILED, Category.STATUS))
    elif passed is False:
        # NVMe PASS/FAIL is derived from critical_warning only, whose bits the
        # NVMe rules already judged (including the worn-out exception).
        warning = as_int(dig(data, "nvme_smart_health_information_log", "critical_warning"))
        if not warning:
            assessment.add(Reason(SOURCE, "smart_status.passed", "false", "SMART overall-health failed",
                                  Verdict.FAILED, Category.STATUS))
    elif passed is None and exit_status & FAILSTATUS:
        assessment.add(Reason(SOURCE, "exit_status", f"{exit_status} (bit 3)", "smartctl reports DISK FAILING",
                              Verdict.FAILED, Category.STATUS))
    failed_now = any(r.rule.startswith("pre-failure attribute") for r in assessment.reasons)
    if exit_status & FAILATTR and not failed_now:
        assessment.add(Reason(SOURCE, "exit_status", f"{exit_status} (bit 4)",
                              "a pre-failure attribute is at or below threshold now", Verdict.FAILED, Category.STATUS))


def _no_health_data(data: Mapping[str, Any], exit_status: int, assessment: Assessment) -> None:
    identified = bool(dig(data, "device", "name")) or bool(assessment.model)
    if dig(data, "smart_support", "available") is False or identified:
        # Identity answered but no SMART at all: a RAID virtual volume, a
        # USB bridge without SAT, or a device with SMART absent.
        assessment.add(Reason(SOURCE, "smart_support", f"exit status {exit_status}",
                              "no SMART data (e.g. hardware-RAID virtual volume)",
                              Verdict.UNSUPPORTED, Category.TOOL))
        return
    assessment.add(Reason(SOURCE, "output", "no device data", "smartctl output carries no device or health data",
                          Verdict.UNKNOWN, Category.TOOL))


def _exit_notes(exit_status: int, messages: list[str], assessment: Assessment) -> None:
    notes = [
        (FAILSMART, "a SMART or ATA command failed (common behind RAID controllers)"),
        (FAILERR, "device error log has entries"),
        (FAILLOG, "self-test log reports errors"),
    ]
    for bit, words in notes:
        if exit_status & bit:
            assessment.add(Reason(SOURCE, "exit_status", str(exit_status), words, Verdict.HEALTHY, Category.INFO))
    for message in messages:
        if message:
            assessment.add(Reason(SOURCE, "message", message, "smartctl message", Verdict.HEALTHY, Category.INFO))
