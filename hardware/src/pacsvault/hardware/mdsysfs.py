"""Read md arrays from sysfs (``<root>/block/mdX/md/``).

sysfs is more robust than ``/proc/mdstat``: one value per file, no layout
quirks. The root is a parameter so tests can point it at a copied fixture
tree; in production it is ``/sys``.
"""

from __future__ import annotations

import re
from pathlib import Path

from pacsvault.hardware._coerce import as_int
from pacsvault.hardware.mdraid import MdArray, MdMember, MemberState

_SYNC_NAMES = {"recover": "recovery", "resync": "resync", "reshape": "reshape", "check": "check", "repair": "repair"}
_COMPLETED = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def read_sysfs_md(root: str | Path = "/sys") -> list[MdArray]:
    """Read every md array under ``<root>/block``.

    Args:
        root: sysfs mount point (or a fixture copy of it).

    Returns:
        Arrays sorted by name; an unreadable or missing tree gives ``[]``.
    """
    block = Path(root) / "block"
    try:
        md_dirs = sorted(p for p in block.iterdir() if p.name.startswith("md") and (p / "md").is_dir())
    except OSError:
        return []
    return [_read_array(p.name, p / "md") for p in md_dirs]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _read_array(name: str, md: Path) -> MdArray:
    state = _read(md / "array_state")
    array = MdArray(name=name, source="sysfs", level=_read(md / "level"), state_text=state)
    array.running = state not in ("inactive", "clear", "")
    array.failed_flag = state == "broken"
    array.raid_disks = as_int(_read(md / "raid_disks"))
    metadata = _read(md / "metadata_version")
    array.container = metadata.startswith("external:") and "/" not in metadata
    array.members = _read_members(md)
    degraded = as_int(_read(md / "degraded"))
    if degraded is not None:
        array.missing = degraded
    elif array.running:
        # raid0/linear have no "degraded" file; a running one is complete.
        array.missing = 0
    action = _read(md / "sync_action")
    array.sync_action = _SYNC_NAMES.get(action, "")
    completed = _COMPLETED.match(_read(md / "sync_completed"))
    if array.sync_action and completed and int(completed.group(2)) > 0:
        array.sync_percent = round(100.0 * int(completed.group(1)) / int(completed.group(2)), 1)
    return array


def _read_members(md: Path) -> list[MdMember]:
    members: list[MdMember] = []
    for dev in sorted(md.glob("dev-*")):
        flags = set(_read(dev / "state").split(","))
        slot = as_int(_read(dev / "slot"))
        members.append(MdMember(name=dev.name[len("dev-"):], state=_member_state(flags), slot=slot))
    return members


def _member_state(flags: set[str]) -> MemberState:
    if "faulty" in flags:
        return MemberState.FAILED
    if "journal" in flags:
        return MemberState.JOURNAL
    if "spare" in flags:
        return MemberState.SPARE
    if "in_sync" in flags:
        return MemberState.ACTIVE
    return MemberState.UNKNOWN
