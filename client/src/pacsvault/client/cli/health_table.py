"""Text rendering of a health report for ``pacsvault health``.

Order: the overall state, then every reason it is not healthy, then the
index, disks, md arrays, volumes and tiers, worst first within each table,
with the reasons of anything not healthy indented under its row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pacsvault.client.units import human_bytes
from pacsvault.v1 import appliance_pb2

_QUIET = (appliance_pb2.VERDICT_HEALTHY, appliance_pb2.VERDICT_UNSUPPORTED, appliance_pb2.VERDICT_UNSPECIFIED)


def state_word(value: appliance_pb2.HealthState.ValueType) -> str:
    return appliance_pb2.HealthState.Name(value).removeprefix("HEALTH_STATE_").lower()


def verdict_word(value: appliance_pb2.Verdict.ValueType) -> str:
    return appliance_pb2.Verdict.Name(value).removeprefix("VERDICT_").lower()


def render(report: appliance_pb2.GetApplianceHealthResponse, serving: str, show_all: bool = False) -> str:
    """The whole report as text; ``serving`` is the grpc.health.v1 answer ("" to omit)."""
    about = [f"grpc.health.v1: {serving}"] if serving else []
    about.append(f"version {report.version}")
    if report.HasField("polled_at"):
        about.append(f"disks polled {report.polled_at.ToDatetime().strftime('%Y-%m-%d %H:%M:%S')} UTC")
    elif report.volumes:
        about.append("disks not polled yet")
    lines = [f"state: {state_word(report.state).upper()}   ({', '.join(about)})"]
    lines += [f"  ! {reason}" for reason in report.reasons]
    i = report.index
    lines += ["", f"index: {i.patients} patients, {i.studies} studies, {i.series} series, {i.instances} instances, "
                  f"{human_bytes(i.stored_bytes)} stored; map {human_bytes(i.map_used_bytes)} of "
                  f"{human_bytes(i.map_size_bytes)}"]
    if report.devices:
        lines += ["", "disks:"]
        rows = []
        for d in _worst_first(report.devices):
            rows.append(([verdict_word(d.verdict), d.node, d.model or "-", d.serial or "-", d.transport,
                          human_bytes(d.size_bytes), _rotation(d), "yes" if d.smart_supported else "no",
                          _names(d.volumes)], _reason_lines(d.reasons, d.verdict, show_all)))
        lines += _table(["VERDICT", "DEVICE", "MODEL", "SERIAL", "TRANSPORT", "SIZE", "MEDIA", "SMART", "VOLUMES"],
                        rows)
    if report.arrays:
        lines += ["", "md arrays:"]
        rows = [([verdict_word(a.verdict), a.name, a.level or "-", _names(a.volumes)],
                 _reason_lines(a.reasons, a.verdict, show_all)) for a in _worst_first(report.arrays)]
        lines += _table(["VERDICT", "ARRAY", "LEVEL", "VOLUMES"], rows)
    if report.volumes:
        lines += ["", "volumes:"]
        rows = []
        for v in sorted(report.volumes, key=lambda v: (-v.verdict, -v.state)):
            used = 100.0 * v.used_bytes / v.capacity_bytes if v.capacity_bytes else 0.0
            beneath = ", ".join([*v.arrays, *v.devices]) or (v.filesystem or "-")
            extra = [f"      - {v.reason}"] if v.reason and not v.reasons else []
            rows.append(([verdict_word(v.verdict) if v.verdict else state_word(v.state),
                          "yes" if v.accepts_writes else "NO", v.tier, v.path, f"{used:.0f}%",
                          f"{human_bytes(v.free_bytes)} of {human_bytes(v.capacity_bytes)}", beneath],
                         extra + _reason_lines(v.reasons, v.verdict, show_all)))
        lines += _table(["VERDICT", "WRITES", "TIER", "PATH", "USED", "FREE", "ON"], rows)
    if report.tiers:
        lines += ["", "tiers:"]
        rows = [([verdict_word(t.verdict), t.name, "yes" if t.accepts_writes else "NO",
                  f"{human_bytes(t.free_bytes)} of {human_bytes(t.capacity_bytes)}"], []) for t in report.tiers]
        lines += _table(["VERDICT", "TIER", "WRITES", "FREE"], rows)
    return "\n".join(lines)


def event_line(event: appliance_pb2.HealthEvent) -> str:
    """One WatchHealth event as one line."""
    when = event.at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
    kind = appliance_pb2.HealthEventKind.Name(event.kind).removeprefix("HEALTH_EVENT_KIND_").lower()
    return f"{when} UTC  #{event.sequence}  {kind}: {event.message}"


def _worst_first(items: Iterable) -> list:  # type: ignore[type-arg]
    return sorted(items, key=lambda x: (-x.verdict, getattr(x, "node", "") or x.name))


def _names(paths: Sequence[str]) -> str:
    return ", ".join(paths) or "-"


def _rotation(device: appliance_pb2.DeviceHealth) -> str:
    if not device.HasField("rotational"):
        return "-"
    return "hdd" if device.rotational else "ssd"


def _reason_lines(reasons: Iterable[appliance_pb2.HealthReason], verdict: int, show_all: bool) -> list[str]:
    if verdict in _QUIET and not show_all:
        return []
    return [f"      - {verdict_word(r.verdict)}: {r.attribute} = {r.value} ({r.rule})" for r in reasons
            if show_all or r.verdict not in _QUIET]


def _table(header: list[str], rows: list[tuple[list[str], list[str]]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *(cells for cells, _ in rows))]

    def line(cells: Sequence[str]) -> str:
        return "  " + "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [line(header)]
    for cells, notes in rows:
        out.append(line(cells))
        out += notes
    return out
