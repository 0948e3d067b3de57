"""Turn poller results and volume states into the monitor's snapshot parts and events.

Pure functions; :mod:`.monitor` calls them inside its locked step.
"""

from __future__ import annotations

from collections.abc import Sequence

from pacsvault.daemon.health.model import ArrayState, DeviceState, Event, EventKind, TierState, VolumeState
from pacsvault.daemon.health.placement import summary
from pacsvault.hardware import Assessment, BlockDevice, HealthEvent, Reason, Verdict, worst
from pacsvault.hardware import EventKind as HwKind
from pacsvault.hardware.poller import disk_key

_HW_KINDS = {HwKind.DEVICE_ADDED: EventKind.DEVICE_ADDED, HwKind.DEVICE_REMOVED: EventKind.DEVICE_REMOVED,
             HwKind.VERDICT_CHANGED: EventKind.VERDICT_CHANGED}


def tiers(states: list[VolumeState]) -> tuple[TierState, ...]:
    order: dict[str, list[VolumeState]] = {}
    for state in states:
        order.setdefault(state.tier, []).append(state)
    tiers = []
    for name, members in order.items():
        bad = [Reason("volume", s.path, s.verdict.value, summary(s.reasons), s.verdict)
               for s in members if s.verdict not in (Verdict.HEALTHY, Verdict.UNSUPPORTED)]
        tiers.append(TierState(
            name=name, verdict=worst(s.verdict for s in members), reasons=tuple(bad),
            accepts_writes=any(s.accepts_writes for s in members),
            capacity_bytes=sum(s.capacity_bytes for s in members), used_bytes=sum(s.used_bytes for s in members),
            free_bytes=sum(s.free_bytes for s in members),
        ))
    return tuple(tiers)


def describe(disks: Sequence[BlockDevice], assessments: dict[str, Assessment]
              ) -> tuple[tuple[DeviceState, ...], tuple[ArrayState, ...]]:
    devices = []
    for disk in disks:
        key = disk_key(disk)
        assessment = assessments.get(key) or Assessment(kind="unknown", device=disk.node, verdict=Verdict.UNKNOWN)
        devices.append(DeviceState(
            key=key, name=disk.name, node=disk.node, model=assessment.model or disk.model,
            serial=assessment.serial or disk.serial, wwn=disk.wwn, transport=disk.transport.value,
            rotational=disk.rotational, size_bytes=disk.size_bytes, verdict=assessment.verdict,
            reasons=tuple(assessment.reasons), smart_supported=disk.smart_capable
            and assessment.verdict is not Verdict.UNSUPPORTED, metrics=dict(assessment.metrics),
        ))
    arrays = [
        ArrayState(key=key, name=a.device, level=a.model, verdict=a.verdict, reasons=tuple(a.reasons),
                   metrics=dict(a.metrics))
        for key, a in sorted(assessments.items()) if key.startswith("md:")
    ]
    return tuple(devices), tuple(arrays)


def from_hardware(event: HealthEvent) -> Event:
    kind = _HW_KINDS[event.kind]
    old, new = event.old_verdict, event.new_verdict
    if kind is EventKind.DEVICE_ADDED:
        message = f"{event.device} appeared ({new.value if new else '?'})"
    elif kind is EventKind.DEVICE_REMOVED:
        message = f"{event.device} is gone (was {old.value if old else '?'})"
    else:
        direction = "worse" if old and new and new.severity > old.severity else "better"
        message = f"{event.device} is now {new.value if new else '?'} (was {old.value if old else '?'}, {direction})"
        if event.reasons:
            message += f": {summary(event.reasons)}"
    return Event(kind, event.key, event.device, event.at, message, old, new, event.reasons)


def is_bad(event: Event) -> bool:
    if event.kind in (EventKind.DEVICE_REMOVED, EventKind.WRITES_STOPPED):
        return True
    old, new = event.old_verdict, event.new_verdict
    return bool(new and new.severity > (old.severity if old else 0) and new is not Verdict.UNSUPPORTED)
