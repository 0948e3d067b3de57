"""Parse ``mdadm --detail``, ``--detail --export`` and ``--examine`` text.

``--detail`` is "Key : value" lines followed by a device table. ``State``
is a comma list (``clean, degraded, recovering``), often with a trailing
space. ``Failed Devices`` can be 0 while slots are ``removed``, so missing
members are derived from ``Raid Devices - Active Devices`` and from the
``removed`` rows, whichever is larger.

``--examine`` describes one member's superblock; its ``Array State`` line
(``AA.``) is that member's view of the array and is judged with the same
rules, under kind ``md_member``.
"""

from __future__ import annotations

import re

from pacsvault.hardware._coerce import as_int
from pacsvault.hardware.mdraid import MdArray, MdMember, MemberState, assess_array
from pacsvault.hardware.verdict import Assessment, Category, Reason, Verdict

_KEY_VALUE = re.compile(r"^\s*([A-Za-z][A-Za-z /]*?)\s*:\s*(.*?)\s*$")
_ROW = re.compile(r"^\s*(-|\d+)\s+(\d+)\s+(\d+)\s+(-|\d+)\s+(.*?)\s*(/dev/\S+)?\s*$")
_STATUS = re.compile(r"^(Rebuild|Reshape|Resync|Check)\s+Status$")
_PERCENT = re.compile(r"([\d.]+)%")
_COPIES = re.compile(r"(?:near|far|offset)=(\d+)")
_SYNC_WORDS = {"recovering": "recovery", "resyncing": "resync", "reshaping": "reshape", "checking": "check"}
_STATUS_ACTIONS = {"Rebuild": "recovery", "Reshape": "reshape", "Resync": "resync", "Check": "check"}


def looks_like_detail(text: str) -> bool:
    """True when ``text`` looks like ``mdadm --detail`` output."""
    return bool(re.search(r"^\s*Raid Level\s*:", text, re.M)) and bool(re.search(r"^\s*State\s*:", text, re.M)) \
        and "Array State" not in text


def looks_like_examine(text: str) -> bool:
    """True when ``text`` looks like ``mdadm --examine`` output."""
    return bool(re.search(r"^\s*Array State\s*:", text, re.M)) or bool(re.search(r"^\s*Magic\s*:", text, re.M))


def looks_like_export(text: str) -> bool:
    """True when ``text`` is ``mdadm --detail --export`` KEY=VALUE output."""
    lines = [line for line in text.splitlines() if line.strip()]
    return bool(lines) and all(re.match(r"^MD_[A-Z_]+=", line) for line in lines)


def _fields(text: str) -> tuple[str, dict[str, str], list[str]]:
    """Split into (first-line device, key/value fields, device-table rows)."""
    lines = text.splitlines()
    device = lines[0].strip().rstrip(":") if lines and lines[0].strip().startswith("/dev/") else ""
    fields: dict[str, str] = {}
    rows: list[str] = []
    in_table = False
    for line in lines[1:]:
        if re.match(r"^\s*Number\s+Major\s+Minor", line):
            in_table = True
            continue
        if in_table:
            if _ROW.match(line):
                rows.append(line)
            continue
        match = _KEY_VALUE.match(line)
        if match:
            fields.setdefault(match.group(1), match.group(2))
    return device, fields, rows


def parse_mdadm_detail(text: str) -> MdArray:
    """Parse ``mdadm --detail`` output into an :class:`MdArray`."""
    device, fields, rows = _fields(text)
    state_words = [w.strip() for w in fields.get("State", "").split(",") if w.strip()]
    array = MdArray(name=device.removeprefix("/dev/") or "md?", source="mdadm", state_text=", ".join(state_words))
    array.level = fields.get("Raid Level", "")
    array.raid_disks = as_int(fields.get("Raid Devices"))
    array.running = "inactive" not in state_words
    array.failed_flag = "FAILED" in state_words
    array.members = [_row_member(row) for row in rows]
    copies = _COPIES.search(fields.get("Layout", ""))
    array.copies = int(copies.group(1)) if copies else None
    array.missing = _missing(array, as_int(fields.get("Active Devices")), state_words)
    for word in state_words:
        if word in _SYNC_WORDS:
            array.sync_action = _SYNC_WORDS[word]
    for key, value in fields.items():
        status = _STATUS.match(key)
        percent = _PERCENT.search(value)
        if status and percent:
            array.sync_action = array.sync_action or _STATUS_ACTIONS[status.group(1)]
            array.sync_percent = float(percent.group(1))
    return array


def _row_member(row: str) -> MdMember:
    match = _ROW.match(row)
    assert match is not None  # rows were filtered by the same pattern
    words = match.group(5)
    name = (match.group(6) or "").removeprefix("/dev/") or "-"
    slot = as_int(match.group(4))
    if "faulty" in words:
        state = MemberState.FAILED
    elif "removed" in words:
        state = MemberState.REMOVED
    elif "rebuilding" in words:
        state = MemberState.REBUILDING
    elif "spare" in words:
        state = MemberState.SPARE
    elif "journal" in words:
        state = MemberState.JOURNAL
    elif "active" in words or "sync" in words:
        state = MemberState.ACTIVE
    else:
        state = MemberState.UNKNOWN
    return MdMember(name=name, state=state, slot=slot)


def _missing(array: MdArray, active: int | None, state_words: list[str]) -> int | None:
    slotted = [m for m in array.members if m.slot is not None]
    not_serving = len([m for m in slotted if m.state is not MemberState.ACTIVE])
    if array.raid_disks is not None and active is not None:
        return max(array.raid_disks - active, not_serving)
    if slotted:
        return not_serving
    return 1 if "degraded" in state_words else 0


def assess_mdadm_detail(text: str) -> Assessment:
    """Parse and judge ``mdadm --detail`` output."""
    return assess_array(parse_mdadm_detail(text))


def assess_mdadm_export(text: str) -> Assessment:
    """Judge ``mdadm --detail --export`` output.

    Only newer mdadm versions print ``MD_DEGRADED``; without it the output
    names the array but carries no state, so the verdict is UNKNOWN.
    """
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    array = MdArray(name=values.get("MD_DEVNAME", values.get("MD_NAME", "md?")), source="mdadm")
    array.level = values.get("MD_LEVEL", "")
    array.raid_disks = as_int(values.get("MD_DEVICES"))
    degraded = as_int(values.get("MD_DEGRADED"))
    if degraded is None:
        assessment = Assessment(kind="md_array", device=array.name, model=array.level)
        assessment.add(Reason("mdadm", "MD_DEGRADED", "absent", "export output carries no array state",
                              Verdict.UNKNOWN, Category.TOOL))
        return assessment
    array.missing = degraded
    return assess_array(array)


def assess_mdadm_examine(text: str) -> Assessment:
    """Judge one member's ``mdadm --examine`` view of its array.

    ``Array State`` uses ``A`` active, ``R`` replacing and ``.`` missing.
    """
    device, fields, _ = _fields(text)
    slots = fields.get("Array State", "").split(" ")[0]
    array = MdArray(name=device.removeprefix("/dev/") or "member", source="mdadm --examine")
    array.level = fields.get("Raid Level", "")
    array.raid_disks = as_int(fields.get("Raid Devices")) or (len(slots) or None)
    array.missing = slots.count(".") if slots else None
    array.state_text = fields.get("State", "")
    array.running = True
    assessment = assess_array(array)
    assessment.kind = "md_member"
    return assessment
