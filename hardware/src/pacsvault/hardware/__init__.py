"""Disk and md-RAID health for pacsvault appliances.

Parsers turn smartctl, nvme-cli, /proc/mdstat, sysfs and mdadm output into
:class:`Assessment` objects; :class:`HealthPoller` runs them on a live
system and reports :class:`HealthEvent` changes; :class:`Discovery` finds
the disks (and the disks under a directory) with pyudev.
"""

from __future__ import annotations

from pacsvault.hardware.assess import FileFormat, assess_file, assess_text, report_rows, sniff_format
from pacsvault.hardware.discovery import BlockDevice, Discovery, FilesystemDevices, Transport, devices_under
from pacsvault.hardware.events import EventKind, HealthEvent
from pacsvault.hardware.mdadm import assess_mdadm_detail, assess_mdadm_examine, parse_mdadm_detail
from pacsvault.hardware.mdraid import MdArray, MdMember, MemberState, assess_array
from pacsvault.hardware.mdstat import parse_mdstat
from pacsvault.hardware.mdsysfs import read_sysfs_md
from pacsvault.hardware.nvme import assess_nvmecli_smart_log, decode_critical_warning
from pacsvault.hardware.poller import HealthPoller, PollerConfig, PollResult
from pacsvault.hardware.runner import CommandResult, CommandRunner, CommandStatus, SubprocessRunner
from pacsvault.hardware.smart import assess_smartctl
from pacsvault.hardware.spool import RecordingRunner, SpoolRunner
from pacsvault.hardware.verdict import Assessment, Category, Reason, Verdict, worst

__all__ = [
    "Assessment",
    "BlockDevice",
    "Category",
    "CommandResult",
    "CommandRunner",
    "CommandStatus",
    "Discovery",
    "EventKind",
    "FileFormat",
    "FilesystemDevices",
    "HealthEvent",
    "HealthPoller",
    "MdArray",
    "MdMember",
    "MemberState",
    "PollResult",
    "PollerConfig",
    "Reason",
    "RecordingRunner",
    "SpoolRunner",
    "SubprocessRunner",
    "Transport",
    "Verdict",
    "assess_array",
    "assess_file",
    "assess_mdadm_detail",
    "assess_mdadm_examine",
    "assess_nvmecli_smart_log",
    "assess_smartctl",
    "assess_text",
    "decode_critical_warning",
    "devices_under",
    "parse_mdadm_detail",
    "parse_mdstat",
    "read_sysfs_md",
    "report_rows",
    "sniff_format",
    "worst",
]
