"""One bounded health pass over every disk and md array: ``run_once()``.

Scheduling, signals and threads live in the daemon; this class only does
one pass: discover, query each device through the injected command runner,
judge, compare with the previous pass (persisted, so restarts keep trends)
and return the events. Every failure of the outside world (tool missing,
hung, printing garbage) becomes an UNKNOWN assessment with a reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from pacsvault.hardware.discovery import BlockDevice, Transport
from pacsvault.hardware.events import HealthEvent, diff_assessments
from pacsvault.hardware.mdraid import MdArray, assess_array
from pacsvault.hardware.mdstat import parse_mdstat
from pacsvault.hardware.mdsysfs import read_sysfs_md
from pacsvault.hardware.nvme import assess_nvmecli_smart_log
from pacsvault.hardware.runner import CommandResult, CommandRunner, CommandStatus
from pacsvault.hardware.smart import assess_smartctl, is_standby
from pacsvault.hardware.state import DeviceRecord, PollerState, StateStore
from pacsvault.hardware.trend import DEFAULT_HOLD_S, apply_trends
from pacsvault.hardware.verdict import Assessment, Category, Reason, Verdict


class DiskSource(Protocol):
    """Anything that lists the physical disks to poll (e.g. ``Discovery``)."""

    def physical_disks(self) -> list[BlockDevice]:
        """Return the whole disks to check."""
        ...


@dataclass(frozen=True)
class PollerConfig:
    """Tunables of a poll; every default is the production choice.

    Attributes:
        mdstat_path: ``/proc/mdstat``.
        sysfs_root: sysfs mount point, for ``block/mdX/md``.
        smartctl: smartctl program.
        nvme: nvme-cli program.
        smartctl_args: Options before the device. ``-x`` reads the extended
            logs; ``--nocheck=standby`` never spins up a sleeping disk.
        timeout_s: Per-command timeout; a hung disk must not stall the pass.
        growth_hold_s: How long a counter increase keeps counting.
    """

    mdstat_path: str = "/proc/mdstat"
    sysfs_root: str = "/sys"
    smartctl: str = "smartctl"
    nvme: str = "nvme"
    smartctl_args: tuple[str, ...] = ("--json", "--nocheck=standby", "-x")
    timeout_s: float = 60.0
    growth_hold_s: float = DEFAULT_HOLD_S


@dataclass
class PollResult:
    """Outcome of one pass: current assessments by key, and what changed."""

    assessments: dict[str, Assessment] = field(default_factory=dict)
    events: list[HealthEvent] = field(default_factory=list)


class HealthPoller:
    """Polls disk and md health and reports changes.

    Args:
        runner: Runs smartctl and nvme-cli.
        clock: Returns the current time in seconds.
        state_path: JSON file remembering the previous pass.
        discovery: Source of physical disks.
        config: Paths, programs and timeouts.
    """

    def __init__(
        self,
        runner: CommandRunner,
        clock: Callable[[], float],
        state_path: str | Path,
        discovery: DiskSource,
        config: PollerConfig | None = None,
    ) -> None:
        self._runner = runner
        self._clock = clock
        self._store = StateStore(state_path)
        self._discovery = discovery
        self._config = config or PollerConfig()

    def run_once(self) -> PollResult:
        """Run one pass; see the module docstring."""
        now = self._clock()
        state = self._store.load()
        current: dict[str, Assessment] = {}
        nvme_missing = False
        for disk in self._discovery.physical_disks():
            key = disk_key(disk)
            assessment, nvme_missing = self._assess_disk(disk, state.devices.get(key), nvme_missing)
            current[key] = assessment
        for array in self._md_arrays():
            current[f"md:{array.name}"] = assess_array(array)
        new_state = PollerState(saved_at=now)
        for key, assessment in current.items():
            previous = state.devices.get(key)
            growth = apply_trends(assessment, previous.assessment.metrics if previous else {},
                                  previous.growth if previous else {}, now, self._config.growth_hold_s)
            new_state.devices[key] = DeviceRecord(assessment, growth)
        events = diff_assessments({k: r.assessment for k, r in state.devices.items()}, current, now)
        self._store.save(new_state)
        return PollResult(current, events)

    def _assess_disk(
        self, disk: BlockDevice, previous: DeviceRecord | None, nvme_missing: bool
    ) -> tuple[Assessment, bool]:
        if not disk.smart_capable:
            assessment = Assessment(kind=disk.transport.value, device=disk.node)
            assessment.add(Reason("poller", "transport", disk.transport.value,
                                  "no SMART on this transport (virtual or bridged disk)",
                                  Verdict.UNSUPPORTED, Category.TOOL))
        else:
            assessment = self._smartctl(disk, previous)
            if disk.transport is Transport.NVME and not nvme_missing:
                nvme_missing = self._merge_nvmecli(disk, assessment)
        assessment.model = assessment.model or disk.model
        assessment.serial = assessment.serial or disk.serial
        return assessment, nvme_missing

    def _smartctl(self, disk: BlockDevice, previous: DeviceRecord | None) -> Assessment:
        argv = [self._config.smartctl, *self._config.smartctl_args, disk.node]
        result = self._runner(argv, self._config.timeout_s)
        assessment = _from_json(result, disk.node, "smartctl", assess_smartctl)
        if is_standby(assessment) and previous is not None:
            # Polling must not wake sleeping disks; their health did not
            # change while asleep, so the last answer stands.
            carried = Assessment.from_json_dict(previous.assessment.to_json_dict())
            carried.reasons = [r for r in carried.reasons if r.category is not Category.TREND]
            carried.reasons.append(Reason("smartctl", "standby", "skipped", "disk asleep; last known health shown",
                                          Verdict.HEALTHY, Category.INFO))
            return carried
        return assessment

    def _merge_nvmecli(self, disk: BlockDevice, assessment: Assessment) -> bool:
        """Add nvme-cli's view; return True when nvme-cli is not installed."""
        argv = [self._config.nvme, "smart-log", "-o", "json", disk.node]
        result = self._runner(argv, self._config.timeout_s)
        if result.status is CommandStatus.NOT_FOUND:
            return True
        extra = _from_json(result, disk.node, "nvme-cli", assess_nvmecli_smart_log)
        has_smartctl_data = any(k.startswith("nvme.") for k in assessment.metrics)
        if not has_smartctl_data and any(k.startswith("nvme.") for k in extra.metrics):
            # smartctl could not read the log but nvme-cli could: its answer
            # replaces smartctl's "don't know", which stays visible as a note.
            no_answer = (Verdict.UNKNOWN, Verdict.UNSUPPORTED)
            kept = [r for r in assessment.reasons if r.verdict not in no_answer]
            notes = [_as_note(r) for r in assessment.reasons if r.verdict in no_answer]
            assessment.reasons, assessment.verdict, assessment.kind = [], Verdict.HEALTHY, "nvme"
            for reason in kept + notes:
                assessment.add(reason)
        known = {r.attribute for r in assessment.reasons}
        for reason in extra.reasons:
            if reason.attribute not in known and (reason.verdict is not Verdict.UNKNOWN or not has_smartctl_data):
                assessment.add(reason)
        for metric, value in extra.metrics.items():
            assessment.metrics.setdefault(metric, value)
        return False

    def _md_arrays(self) -> list[MdArray]:
        try:
            text = Path(self._config.mdstat_path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""  # no md driver loaded: no arrays, not an error
        arrays = {a.name: a for a in parse_mdstat(text)}
        # sysfs has one value per file and no layout quirks, so it wins when
        # both describe the same array; mdstat keeps its progress figure.
        for array in read_sysfs_md(self._config.sysfs_root):
            old = arrays.get(array.name)
            if old is not None and array.sync_percent is None:
                array.sync_percent = old.sync_percent
            arrays[array.name] = array
        return [arrays[name] for name in sorted(arrays)]


def disk_key(disk: BlockDevice) -> str:
    """Stable key for a disk: serial, else WWN, else device node.

    Serial first because kernel names (sda, sdb) can swap between boots.
    """
    if disk.serial:
        return f"serial:{disk.serial}"
    if disk.wwn:
        return f"wwn:{disk.wwn}"
    return f"node:{disk.node}"


def _as_note(reason: Reason) -> Reason:
    return Reason(reason.source, reason.attribute, reason.value, reason.rule, Verdict.HEALTHY, Category.TOOL)


def _from_json(
    result: CommandResult, device: str, tool: str, assess: Callable[..., Assessment]
) -> Assessment:
    """Turn a command result into an assessment, whatever went wrong."""
    if not result.ran:
        assessment = Assessment(kind="unknown", device=device)
        assessment.add(Reason(tool, result.status.value, result.error or result.status.value,
                              f"{tool} did not run to completion", Verdict.UNKNOWN, Category.TOOL))
        return assessment
    try:
        data = json.loads(result.stdout)
        if not isinstance(data, dict):
            raise ValueError("top level is not an object")
    except ValueError as exc:
        assessment = Assessment(kind="unknown", device=device)
        detail = (result.stderr.strip() or str(exc))[:200]
        assessment.add(Reason(tool, "output", f"exit {result.returncode}: {detail}",
                              f"{tool} output is not parseable JSON", Verdict.UNKNOWN, Category.TOOL))
        return assessment
    return assess(data, device=device)
