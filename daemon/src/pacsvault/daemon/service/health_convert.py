"""Health reports and events to their protobuf messages (and nothing else)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from pacsvault.daemon.health.model import ArrayState, DeviceState, Event, EventKind, TierState, VolumeState
from pacsvault.daemon.health.report import ApplianceReport
from pacsvault.hardware import Reason, Verdict
from pacsvault.v1 import appliance_pb2

STATES = {
    "healthy": appliance_pb2.HEALTH_STATE_HEALTHY,
    "warning": appliance_pb2.HEALTH_STATE_WARNING,
    "critical": appliance_pb2.HEALTH_STATE_CRITICAL,
}
VERDICTS = {v: appliance_pb2.Verdict.Value(f"VERDICT_{v.name}") for v in Verdict}
EVENT_KINDS = {k: appliance_pb2.HealthEventKind.Value(f"HEALTH_EVENT_KIND_{k.name}") for k in EventKind}
# A volume the monitor does not know (refused at start) keeps the archive's word.
_STATE_VERDICT = {"healthy": Verdict.HEALTHY, "warning": Verdict.WARNING, "critical": Verdict.FAILED}


def report_to_proto(report: ApplianceReport) -> appliance_pb2.GetApplianceHealthResponse:
    """The whole GetApplianceHealth answer."""
    archive, snapshot = report.archive, report.snapshot
    index = archive.index
    response = appliance_pb2.GetApplianceHealthResponse(
        state=STATES[report.state], reasons=report.reasons, version=archive.version,
        uptime_seconds=archive.uptime_s,
        index=appliance_pb2.IndexStatus(
            patients=index["patients"], studies=index["studies"], series=index["series"],
            instances=index["instances"], blobs=index["blobs"], stored_bytes=index["stored_bytes"],
            map_size_bytes=index["map_size"], map_used_bytes=index["map_used"],
        ),
    )
    monitored = {v.path: v for v in snapshot.volumes} if snapshot else {}
    for volume in archive.volumes:
        response.volumes.append(_volume(volume, monitored.get(volume.path)))
    if snapshot is not None:
        response.devices.extend(_device(d) for d in snapshot.devices)
        response.arrays.extend(_array(a) for a in snapshot.arrays)
        response.tiers.extend(_tier(t) for t in snapshot.tiers)
        if snapshot.polled_at is not None:
            response.polled_at.CopyFrom(_timestamp(snapshot.polled_at))
    return response


def event_to_proto(event: Event) -> appliance_pb2.HealthEvent:
    """One WatchHealth event."""
    return appliance_pb2.HealthEvent(
        kind=EVENT_KINDS[event.kind], sequence=event.sequence, at=_timestamp(event.at), subject=event.subject,
        device=event.device, old_verdict=_verdict(event.old_verdict), new_verdict=_verdict(event.new_verdict),
        reasons=_reasons(event.reasons), message=event.message,
    )


def _volume(volume: Any, state: VolumeState | None) -> appliance_pb2.VolumeStatus:
    """``volume`` is the archive's ``VolumeHealth``; ``state`` the monitor's view of it."""
    message = appliance_pb2.VolumeStatus(
        tier=volume.tier, path=volume.path, state=STATES[volume.state], reason=volume.reason,
        capacity_bytes=volume.capacity_bytes, used_bytes=volume.used_bytes, free_bytes=volume.free_bytes,
        accepts_writes=volume.accepts_writes,
    )
    if state is None:
        message.verdict = VERDICTS[_STATE_VERDICT[volume.state]]
        message.reasons.extend(_reasons(getattr(volume, "reasons", ())))
        return message
    message.verdict = VERDICTS[state.verdict]
    message.reasons.extend(_reasons(state.reasons))
    message.volume_id = state.volume_id
    message.filesystem = state.filesystem
    message.mountpoint = state.mountpoint
    message.devices.extend(state.devices)
    message.arrays.extend(state.arrays)
    return message


def _device(device: DeviceState) -> appliance_pb2.DeviceHealth:
    message = appliance_pb2.DeviceHealth(
        key=device.key, name=device.name, node=device.node, model=device.model, serial=device.serial,
        wwn=device.wwn, transport=device.transport, size_bytes=device.size_bytes, verdict=VERDICTS[device.verdict],
        reasons=_reasons(device.reasons), smart_supported=device.smart_supported, metrics=device.metrics,
        volumes=device.volumes,
    )
    if device.rotational is not None:
        message.rotational = device.rotational
    return message


def _array(array: ArrayState) -> appliance_pb2.ArrayHealth:
    return appliance_pb2.ArrayHealth(
        name=array.name, level=array.level, verdict=VERDICTS[array.verdict], reasons=_reasons(array.reasons),
        metrics=array.metrics, volumes=array.volumes,
    )


def _tier(tier: TierState) -> appliance_pb2.TierHealth:
    return appliance_pb2.TierHealth(
        name=tier.name, verdict=VERDICTS[tier.verdict], reasons=_reasons(tier.reasons),
        accepts_writes=tier.accepts_writes, capacity_bytes=tier.capacity_bytes, used_bytes=tier.used_bytes,
        free_bytes=tier.free_bytes,
    )


def _reasons(reasons: Iterable[Reason]) -> list[appliance_pb2.HealthReason]:
    return [
        appliance_pb2.HealthReason(source=r.source, attribute=r.attribute, value=r.value, rule=r.rule,
                                   verdict=VERDICTS[r.verdict], category=r.category.value)
        for r in reasons
    ]


def _verdict(verdict: Verdict | None) -> int:
    return VERDICTS[verdict] if verdict is not None else appliance_pb2.VERDICT_UNSPECIFIED


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
