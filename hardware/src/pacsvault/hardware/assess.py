"""Assess captured tool output files: sniff the format, dispatch, never raise.

Backs ``pacsvault hw assess FILE... [--json]``. Field engineers hand us
whatever they captured, so the format is recognised from the content, not
the file name, and anything unrecognised or unreadable becomes one UNKNOWN
assessment with the reason, instead of an exception.
"""

from __future__ import annotations

import enum
import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from pacsvault.hardware import mdadm
from pacsvault.hardware._coerce import as_dict, as_list, as_str
from pacsvault.hardware.mdraid import assess_array
from pacsvault.hardware.mdstat import parse_mdstat
from pacsvault.hardware.nvme import assess_nvme_list, assess_nvmecli_smart_log
from pacsvault.hardware.smart import assess_smartctl
from pacsvault.hardware.verdict import Assessment, Category, Reason, Verdict

# Captures are small text files; anything bigger is not one of ours.
MAX_FILE_BYTES = 8 * 1024 * 1024

_MDSTAT_HEADER = re.compile(r"^\s*md[\w.-]*\s*:\s*(active|inactive)\b", re.M)
_SMARTCTL_KEYS = ("smart_status", "ata_smart_attributes", "nvme_smart_health_information_log",
                  "scsi_grown_defect_list", "scsi_error_counter_log", "device")


class FileFormat(enum.StrEnum):
    """Formats :func:`sniff_format` recognises."""

    SMARTCTL = "smartctl_json"
    SMARTCTL_SCAN = "smartctl_scan_json"
    NVME_SMART_LOG = "nvme_smart_log_json"
    NVME_LIST = "nvme_list_json"
    MDSTAT = "proc_mdstat"
    MDADM_DETAIL = "mdadm_detail"
    MDADM_EXPORT = "mdadm_detail_export"
    MDADM_EXAMINE = "mdadm_examine"
    MDADM_BRIEF = "mdadm_detail_brief"
    UNKNOWN = "unknown"


def sniff_format(text: str) -> FileFormat:
    """Recognise the format of a captured file from its content."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            return FileFormat.UNKNOWN
        return _sniff_json(data) if isinstance(data, Mapping) else FileFormat.UNKNOWN
    if stripped.startswith("Personalities") or _MDSTAT_HEADER.search(text):
        return FileFormat.MDSTAT
    if mdadm.looks_like_examine(text):
        return FileFormat.MDADM_EXAMINE
    if mdadm.looks_like_detail(text):
        return FileFormat.MDADM_DETAIL
    if mdadm.looks_like_export(text):
        return FileFormat.MDADM_EXPORT
    if stripped.startswith("ARRAY "):
        return FileFormat.MDADM_BRIEF
    return FileFormat.UNKNOWN


def _sniff_json(data: Mapping[str, Any]) -> FileFormat:
    if isinstance(data.get("devices"), list) and "device" not in data:
        return FileFormat.SMARTCTL_SCAN
    if "smartctl" in data or any(key in data for key in _SMARTCTL_KEYS):
        return FileFormat.SMARTCTL
    if isinstance(data.get("Devices"), list):
        return FileFormat.NVME_LIST
    if "critical_warning" in data and any(k in data for k in ("avail_spare", "percent_used", "spare_thresh")):
        return FileFormat.NVME_SMART_LOG
    return FileFormat.UNKNOWN


def assess_text(text: str, name: str = "") -> tuple[FileFormat, list[Assessment]]:
    """Assess the content of one captured file.

    Args:
        text: File content.
        name: Label used as the device of an unrecognised file.

    Returns:
        The recognised format and one assessment per device or array (an
        mdstat with no arrays gives an empty list).
    """
    fmt = sniff_format(text)
    handler = _HANDLERS.get(fmt)
    if handler is None:
        return fmt, [_unknown(name, "unrecognised content (not smartctl/nvme-cli JSON, mdstat or mdadm output)")]
    try:
        assessments = handler(text)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # Parsers are written to be tolerant; this is the last line of defence
        # so one odd capture cannot abort a batch of files.
        return fmt, [_unknown(name, f"could not parse {fmt.value}: {exc!r}")]
    for assessment in assessments:
        # nvme smart-log output never names its device; the file name is the
        # best label a person reading the report has.
        assessment.device = assessment.device or name
    return fmt, assessments


def assess_file(path: str | Path) -> list[Assessment]:
    """Assess one captured file; see :func:`assess_text`."""
    return assess_file_with_format(path)[1]


def assess_file_with_format(path: str | Path) -> tuple[FileFormat, list[Assessment]]:
    """Like :func:`assess_file` but also return the recognised format."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return FileFormat.UNKNOWN, [_unknown(str(path), f"file larger than {MAX_FILE_BYTES} bytes")]
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return FileFormat.UNKNOWN, [_unknown(str(path), f"cannot read file: {exc.strerror or exc}")]
    return assess_text(text, name=str(path))


def report_rows(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Rows for ``pacsvault hw assess --json``: one per assessment.

    Each row is :meth:`Assessment.to_json_dict` plus ``file`` and
    ``format``.
    """
    rows: list[dict[str, Any]] = []
    for path in paths:
        fmt, assessments = assess_file_with_format(path)
        for assessment in assessments:
            rows.append({"file": str(path), "format": fmt.value, **assessment.to_json_dict()})
    return rows


def _unknown(name: str, why: str) -> Assessment:
    assessment = Assessment(kind="unknown", device=name)
    assessment.add(Reason("assess", "file", name, why, Verdict.UNKNOWN, Category.TOOL))
    return assessment


def _smartctl(text: str) -> list[Assessment]:
    return [assess_smartctl(json.loads(text))]


def _smartctl_scan(text: str) -> list[Assessment]:
    found = []
    for entry in as_list(json.loads(text).get("devices")):
        entry = as_dict(entry)
        name, dev_type = as_str(entry.get("name")), as_str(entry.get("type"))
        assessment = Assessment(kind="inventory", device=f"{name} [{dev_type}]" if "," in dev_type else name)
        assessment.add(Reason("smartctl", "scan", dev_type or "listed", "inventory listing only, no health data",
                              Verdict.UNKNOWN, Category.INFO))
        found.append(assessment)
    return found


def _mdadm_brief(text: str) -> list[Assessment]:
    found = []
    for line in text.splitlines():
        if line.startswith("ARRAY "):
            assessment = Assessment(kind="md_array", device=line.split()[1])
            assessment.add(Reason("mdadm", "ARRAY", "brief", "configuration line only, no array state",
                                  Verdict.UNKNOWN, Category.INFO))
            found.append(assessment)
    return found


_HANDLERS: dict[FileFormat, Callable[[str], list[Assessment]]] = {
    FileFormat.SMARTCTL: _smartctl,
    FileFormat.SMARTCTL_SCAN: _smartctl_scan,
    FileFormat.NVME_SMART_LOG: lambda text: [assess_nvmecli_smart_log(json.loads(text))],
    FileFormat.NVME_LIST: lambda text: assess_nvme_list(json.loads(text)),
    FileFormat.MDSTAT: lambda text: [assess_array(a) for a in parse_mdstat(text)],
    FileFormat.MDADM_DETAIL: lambda text: [mdadm.assess_mdadm_detail(text)],
    FileFormat.MDADM_EXPORT: lambda text: [mdadm.assess_mdadm_export(text)],
    FileFormat.MDADM_EXAMINE: lambda text: [mdadm.assess_mdadm_examine(text)],
    FileFormat.MDADM_BRIEF: _mdadm_brief,
}
