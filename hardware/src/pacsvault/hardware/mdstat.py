"""Parse ``/proc/mdstat`` into :class:`~pacsvault.hardware.mdraid.MdArray`.

Lines are assigned to the array whose header came last, by content rather
than by indentation: some NAS kernels print the block-count line flush
left, the ``unused devices`` trailer may be missing, and the
``Personalities :`` line may carry trailing (even non-breaking) spaces.
"""

from __future__ import annotations

import re

from pacsvault.hardware.mdraid import MdArray, MdMember, MemberState

_HEADER = re.compile(r"^(md[\w.-]*)\s*:\s*(.*)$")
_LEVEL = re.compile(r"^(raid\d+|linear|multipath|faulty)$")
_MEMBER = re.compile(r"^(?P<name>[^\[\s]+)\[(?P<slot>\d+)\](?P<flags>(\([A-Za-z]\))*)$")
_COUNTS = re.compile(r"\[(\d+)/(\d+)\]")
_MAP = re.compile(r"\[([U_]+)\]")
_COPIES = re.compile(r"(\d+)\s+(?:near|far|offset)-copies")
_PROGRESS = re.compile(r"\b(recovery|resync|reshape|check|repair)\s*=\s*([\d.]+)%")
_WAITING = re.compile(r"\b(?:resync|recovery)\s*=\s*(DELAYED|PENDING)")
_FLAG_STATE = {"F": MemberState.FAILED, "S": MemberState.SPARE, "J": MemberState.JOURNAL}


def parse_mdstat(text: str) -> list[MdArray]:
    """Parse the text of ``/proc/mdstat``.

    Args:
        text: File content.

    Returns:
        One :class:`MdArray` per ``mdN :`` block, in file order.
    """
    arrays: list[MdArray] = []
    current: MdArray | None = None
    for raw_line in text.splitlines():
        line = raw_line.strip()
        header = _HEADER.match(line)
        if header:
            current = _parse_header(header.group(1), header.group(2))
            arrays.append(current)
        elif not line or line.startswith(("Personalities", "unused devices")):
            current = None if line.startswith("unused devices") else current
        elif current is not None:
            _parse_detail(current, line)
    for array in arrays:
        _finish(array)
    return arrays


def _parse_header(name: str, rest: str) -> MdArray:
    tokens = rest.split()
    array = MdArray(name=name, source="mdstat")
    state_words: list[str] = []
    if tokens and tokens[0] in ("active", "inactive"):
        array.running = tokens.pop(0) == "active"
        state_words.append("active" if array.running else "inactive")
    while tokens and tokens[0].startswith("("):
        state_words.append(tokens.pop(0))
    if tokens and _LEVEL.match(tokens[0]):
        array.level = tokens.pop(0)
    array.state_text = " ".join(state_words)
    for token in tokens:
        member = _parse_member(token)
        if member is not None:
            array.members.append(member)
    return array


def _parse_member(token: str) -> MdMember | None:
    match = _MEMBER.match(token)
    if not match:
        return None
    flags = re.findall(r"\(([A-Za-z])\)", match.group("flags"))
    state = MemberState.ACTIVE
    for flag in flags:
        # (W) write-mostly and (R) replacement leave the member active;
        # (F) wins over everything because a failed member is not serving.
        state = _FLAG_STATE.get(flag, state) if state is not MemberState.FAILED else state
    return MdMember(name=match.group("name"), state=state, slot=int(match.group("slot")))


def _parse_detail(array: MdArray, line: str) -> None:
    counts = _COUNTS.search(line)
    if counts:
        array.raid_disks = int(counts.group(1))
        array.missing = max(int(counts.group(1)) - int(counts.group(2)), 0)
    elif array.missing is None:
        slot_map = _MAP.search(line)
        if slot_map:
            array.raid_disks = len(slot_map.group(1))
            array.missing = slot_map.group(1).count("_")
    copies = _COPIES.search(line)
    if copies:
        array.copies = int(copies.group(1))
    if "super external:" in line and "external:/" not in line:
        array.container = True
    progress = _PROGRESS.search(line)
    if progress:
        array.sync_action = progress.group(1)
        array.sync_percent = float(progress.group(2))
    waiting = _WAITING.search(line)
    if waiting:
        array.sync_waiting = waiting.group(1)


def _finish(array: MdArray) -> None:
    # Striped and linear arrays print no [n/m]; every listed member is a slot
    # and a missing one would have stopped the array.
    if array.raid_disks is None and array.running and array.level in ("raid0", "linear"):
        array.raid_disks = len(array.members)
        array.missing = len(array.members_in(MemberState.FAILED))
