"""Linux md RAID: one array model and the rules that judge it.

The parsers (:mod:`mdstat`, :mod:`mdsysfs`, :mod:`mdadm`) all produce an
:class:`MdArray`; :func:`assess_array` is the single place that decides.

Rules (HEALTH_RULES.md section 5 gives the signals; the grading is ours):

* all members present and no sync running -> HEALTHY;
* a ``check``/``repair`` scrub, or ``resync=DELAYED``/``PENDING`` -> still
  HEALTHY with a note: a scrub is not degradation;
* ``resync`` running -> WARNING: parity is not guaranteed until it finishes;
* members missing, rebuild (``recovery``) or ``reshape`` running -> WARNING
  with the progress: the system is already repairing itself;
* members missing, nothing running, redundancy left -> WARNING;
* members missing, nothing running, no redundancy left -> FAILING: the next
  member loss loses data, so a human must add a disk now;
* more members missing than the level tolerates, ``FAILED`` in mdadm's
  state, or ``broken`` in sysfs -> FAILED;
* ``inactive`` (not running, data unavailable) -> FAILED, except an
  external-metadata container (IMSM/DDF), which is always inactive and
  whose health is carried by its member arrays -> HEALTHY with a note.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pacsvault.hardware.verdict import Assessment, Category, Reason, Verdict


class MemberState(enum.StrEnum):
    """Role of one member device in an array."""

    ACTIVE = "active"
    SPARE = "spare"
    REBUILDING = "rebuilding"
    FAILED = "failed"
    REMOVED = "removed"
    JOURNAL = "journal"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class MdMember:
    """One member device as reported by mdstat, sysfs or mdadm."""

    name: str
    state: MemberState
    slot: int | None = None


@dataclass
class MdArray:
    """An md array, whatever source it was read from.

    Attributes:
        name: Kernel name, e.g. ``md0`` or ``md_d0``.
        level: ``raid1``, ``raid5``, ... or ``""`` when not reported.
        running: False for ``inactive`` arrays.
        raid_disks: Slots the array should have (``n`` in ``[n/m]``).
        missing: Slots without a working member (``n - m``), when known.
        members: Member devices.
        sync_action: ``recovery``, ``resync``, ``reshape``, ``check``,
            ``repair`` or ``""`` when idle.
        sync_percent: Progress of ``sync_action``.
        sync_waiting: ``DELAYED``/``PENDING`` when a sync is queued.
        failed_flag: mdadm printed ``FAILED`` or sysfs says ``broken``.
        container: External-metadata container (IMSM/DDF).
        copies: Data copies for raid10 (``2 near-copies``), when known.
        state_text: The state words as the source printed them.
        source: ``mdstat``, ``sysfs`` or ``mdadm``.
    """

    name: str
    level: str = ""
    running: bool = True
    raid_disks: int | None = None
    missing: int | None = None
    members: list[MdMember] = field(default_factory=list)
    sync_action: str = ""
    sync_percent: float | None = None
    sync_waiting: str = ""
    failed_flag: bool = False
    container: bool = False
    copies: int | None = None
    state_text: str = ""
    source: str = "mdstat"

    def members_in(self, state: MemberState) -> list[MdMember]:
        """Members with the given state."""
        return [m for m in self.members if m.state is state]


def redundancy(level: str, raid_disks: int | None, copies: int | None = None) -> int | None:
    """How many members the level can lose without losing data.

    Args:
        level: md level name.
        raid_disks: Number of slots.
        copies: raid10 copies; 2 when not reported (mdadm's default).

    Returns:
        Guaranteed tolerable losses, or ``None`` for an unknown level. For
        raid10 this is ``copies - 1``: more losses survive only when they hit
        different mirror sets, which we do not count on.
    """
    level = level.lower()
    if level in ("raid0", "linear"):
        return 0
    if level in ("raid1", "multipath"):
        return max((raid_disks or 1) - 1, 0)
    if level in ("raid4", "raid5"):
        return 1
    if level == "raid6":
        return 2
    if level == "raid10":
        return (copies or 2) - 1
    return None


def assess_array(array: MdArray) -> Assessment:
    """Judge one array; see the module docstring for the rules.

    Args:
        array: Parsed array.

    Returns:
        An ``md_array`` assessment with reasons and metrics.
    """
    assessment = Assessment(kind="md_array", device=array.name, model=array.level)
    _metrics(array, assessment)
    if not array.running:
        _inactive(array, assessment)
        return assessment
    _membership(array, assessment)
    _sync(array, assessment)
    return assessment


def _metrics(array: MdArray, assessment: Assessment) -> None:
    if array.raid_disks is not None:
        assessment.metrics["md.raid_disks"] = float(array.raid_disks)
    if array.missing is not None:
        assessment.metrics["md.missing"] = float(array.missing)
    assessment.metrics["md.failed_members"] = float(len(array.members_in(MemberState.FAILED)))
    assessment.metrics["md.spares"] = float(len(array.members_in(MemberState.SPARE)))
    if array.sync_percent is not None:
        assessment.metrics["md.sync_percent"] = array.sync_percent


def _inactive(array: MdArray, assessment: Assessment) -> None:
    if array.container:
        assessment.add(Reason(array.source, "state", "inactive container",
                              "external-metadata container; health is on its member arrays",
                              Verdict.HEALTHY, Category.RAID))
        return
    assessment.add(Reason(array.source, "state", array.state_text or "inactive",
                          "array not running (inactive): data unavailable until reassembled",
                          Verdict.FAILED, Category.RAID))


def _membership(array: MdArray, assessment: Assessment) -> None:
    missing = array.missing or 0
    tolerable = redundancy(array.level, array.raid_disks, array.copies)
    shown = f"{missing} of {array.raid_disks} missing" if array.raid_disks else f"{missing} missing"
    if array.failed_flag or (tolerable is not None and missing > tolerable):
        rule = f"more members lost than {array.level or 'the level'} tolerates ({tolerable})"
        if array.failed_flag:
            rule = f"array state says failed ({array.state_text})"
        assessment.add(Reason(array.source, "members", shown, rule, Verdict.FAILED, Category.RAID))
    elif missing > 0:
        repairing = array.sync_action in ("recovery", "reshape")
        left = None if tolerable is None else tolerable - missing
        if repairing:
            verdict, rule = Verdict.WARNING, f"degraded, {array.sync_action} in progress"
        elif left == 0:
            verdict, rule = Verdict.FAILING, "degraded with no redundancy left: next member loss loses data"
        else:
            verdict, rule = Verdict.WARNING, "degraded within redundancy"
        assessment.add(Reason(array.source, "members", shown, rule, verdict, Category.RAID))
    failed = array.members_in(MemberState.FAILED)
    if failed:
        names = ",".join(m.name for m in failed)
        assessment.add(Reason(array.source, "failed members", names, "member marked faulty; replace it",
                              Verdict.WARNING, Category.RAID))


def _sync(array: MdArray, assessment: Assessment) -> None:
    action = array.sync_action
    progress = f"{array.sync_percent:.1f}%" if array.sync_percent is not None else "running"
    if action in ("check", "repair"):
        assessment.add(Reason(array.source, action, progress, "scrub in progress (not degradation)",
                              Verdict.HEALTHY, Category.RAID))
    elif action == "resync":
        assessment.add(Reason(array.source, action, progress, "resync in progress: redundancy not guaranteed yet",
                              Verdict.WARNING, Category.RAID))
    elif action in ("recovery", "reshape"):
        assessment.add(Reason(array.source, action, progress, f"{action} in progress", Verdict.WARNING, Category.RAID))
    if array.sync_waiting:
        assessment.add(Reason(array.source, "resync", array.sync_waiting, "resync queued",
                              Verdict.HEALTHY, Category.RAID))
