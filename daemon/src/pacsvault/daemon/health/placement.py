"""Should new data land on a volume, given the disks and arrays beneath it?

Pure rules, no I/O; the monitor applies the answer to the tier volumes.

* A volume directly on disks (partitions, plain or dm layers) takes no new
  data while any disk beneath it is FAILING or FAILED: nothing else holds a
  second copy.
* A volume on an md array takes no new data while the array itself is
  FAILING or FAILED (the hardware rules grade "degraded with no redundancy
  left" FAILING), or while its missing members plus its failing member
  disks exceed what the RAID level tolerates (a RAID-0 with one failing
  disk; a two-way mirror with both disks failing). One failing disk in a
  mirror that still has redundancy is a warning: the array protects the
  data, and a human should replace the disk.
* WARNING and UNKNOWN beneath a volume make the volume WARNING / UNKNOWN
  but never stop writes: a missing smartctl must not stop an archive.

Reads are never affected; only placement of new blobs consults this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pacsvault.hardware import Category, Reason, Verdict
from pacsvault.hardware.mdraid import redundancy


@dataclass(frozen=True)
class Beneath:
    """What a volume's filesystem sits on.

    Attributes:
        filesystem: Filesystem type (``ext4``, ``tmpfs``, ...).
        mountpoint: Its mount point.
        devices: Kernel names of the physical disks beneath, through
            partitions, md and dm.
        arrays: md arrays between the filesystem and the disks.
        array_members: For each array, the physical disks beneath it.
        note: Why ``devices`` is empty, in words.
    """

    filesystem: str = ""
    mountpoint: str = ""
    devices: tuple[str, ...] = ()
    arrays: tuple[str, ...] = ()
    array_members: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Judged:
    """A verdict input: what a disk or array beneath looks like."""

    label: str
    verdict: Verdict
    reasons: tuple[Reason, ...] = ()
    level: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Placement:
    """The answer for one volume.

    Attributes:
        block_reason: Why no new data may land here, ``""`` when it may.
        reasons: What beneath the volume is not healthy, one reason per
            disk or array, for the volume's verdict.
    """

    block_reason: str
    reasons: tuple[Reason, ...]


def decide(beneath: Beneath, disks: Mapping[str, Judged], arrays: Mapping[str, Judged]) -> Placement:
    """Apply the module's rules to one volume.

    Args:
        beneath: The volume's filesystem and what is under it.
        disks: Judged physical disks by kernel name.
        arrays: Judged md arrays by kernel name.

    Returns:
        Whether writes must stop, and the reasons for the volume's verdict.
    """
    blocks: list[str] = []
    reasons: list[Reason] = []
    covered: set[str] = set()
    for name in beneath.arrays:
        members = beneath.array_members.get(name, ())
        covered.update(members)
        array = arrays.get(name)
        if array is None:
            continue
        if array.verdict.is_failure:
            blocks.append(f"md array {name} is {array.verdict.value}: {summary(array.reasons)}")
            reasons.append(_about("array", array))
            continue
        if array.verdict is not Verdict.HEALTHY:
            reasons.append(_about("array", array))
        failing = [disks[m] for m in members if m in disks and disks[m].verdict.is_failure]
        tolerable = redundancy(array.level, _int(array.metrics.get("md.raid_disks")))
        missing = _int(array.metrics.get("md.missing")) or 0
        if failing and (tolerable is None or missing + len(failing) > tolerable):
            blocks.append(
                f"md array {name} ({array.level or 'unknown level'}) would lose data: {missing} member(s) missing "
                f"and {', '.join(d.label for d in failing)} {'is' if len(failing) == 1 else 'are'} "
                f"{'/'.join(sorted({d.verdict.value for d in failing}))}, more than it tolerates "
                f"({tolerable if tolerable is not None else 'unknown'})")
        for disk in failing:
            reasons.append(_about("disk", disk, cap=None if blocks else Verdict.WARNING,
                                  context=f" (member of md array {name})"))
    for name in beneath.devices:
        disk = disks.get(name)
        if disk is None or name in covered and disk.verdict.is_failure:
            continue  # failing members were judged with their array above
        if disk.verdict.is_failure:
            blocks.append(f"disk {disk.label} is {disk.verdict.value}: {summary(disk.reasons)}")
        if disk.verdict not in (Verdict.HEALTHY, Verdict.UNSUPPORTED):
            reasons.append(_about("disk", disk))
    if not beneath.devices and beneath.note:
        reasons.append(Reason("placement", "devices", "none", beneath.note, Verdict.HEALTHY, Category.INFO))
    return Placement("; ".join(blocks), tuple(reasons))


def summary(reasons: tuple[Reason, ...] | list[Reason]) -> str:
    """The worst reason in one line: ``attribute = value (rule)``."""
    bad = [r for r in reasons if r.verdict is not Verdict.HEALTHY]
    if not bad:
        return "no reason given"
    worst_first = sorted(bad, key=lambda r: -r.verdict.severity)
    top = worst_first[0]
    more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
    return f"{top.attribute} = {top.value} ({top.rule}){more}"


def _about(what: str, judged: Judged, cap: Verdict | None = None, context: str = "") -> Reason:
    verdict = judged.verdict
    if cap is not None and verdict.severity > cap.severity:
        verdict = cap
    return Reason("placement", f"{what} {judged.label}", judged.verdict.value, summary(judged.reasons) + context,
                  verdict, Category.STATUS)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
