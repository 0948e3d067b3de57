"""Patient-name wildcards (``*`` any run, ``?`` one character) matched without backtracking.

A caller's pattern never becomes a regular expression: ``*.*.*...!`` style
patterns make a backtracking engine take exponential time (while holding the
interpreter lock, so every other call waits). Instead the pattern is cut at
its stars into segments. The first segment must fit at the start of the
name, the last at its end, and each one in between is placed at its
leftmost fit after the previous one; leftmost is always safe for glob
patterns (any later fit leaves less room for what follows), so nothing is
ever retried. The cost is one forward scan per segment: linear in the name
for literal segments (``str.find``), at most name length times segment
length where a segment mixes ``?`` and letters.

Both sides are compared in the form ``keys.normalise_name`` gives them, so
matching stays case-insensitive exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from pacsvault.daemon.index import keys


def has_wildcards(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


@dataclass(frozen=True)
class _Segment:
    """A run of the pattern between stars: literal pieces at fixed offsets, ``?`` elsewhere."""

    length: int
    pieces: tuple[tuple[int, str], ...]  # (offset, literal text), in order

    @classmethod
    def parse(cls, text: str) -> _Segment:
        pieces = []
        at = 0
        for literal in text.split("?"):
            if literal:
                pieces.append((at, literal))
            at += len(literal) + 1
        return cls(len(text), tuple(pieces))

    def fits_at(self, name: str, at: int) -> bool:
        return at + self.length <= len(name) and all(name.startswith(lit, at + off) for off, lit in self.pieces)

    def leftmost(self, name: str, start: int, end: int) -> int:
        """The first position p in [start, end - length] where the segment fits; -1 if none."""
        last = end - self.length
        if not self.pieces:
            return start if start <= last else -1
        anchor_offset, anchor = self.pieces[0]
        at = start
        while at <= last:
            found = name.find(anchor, at + anchor_offset, last + anchor_offset + len(anchor))
            if found < 0:
                return -1
            at = found - anchor_offset
            if self.fits_at(name, at):
                return at
            at += 1
        return -1


class NamePattern:
    """A compiled patient-name pattern; ``matches`` says whether a whole name fits it."""

    def __init__(self, pattern: str) -> None:
        parts = keys.normalise_name(pattern).split("*")
        self._exact = len(parts) == 1
        self._head = _Segment.parse(parts[0])
        self._tail = _Segment.parse(parts[-1])
        self._middle = tuple(_Segment.parse(p) for p in parts[1:-1] if p)

    def matches(self, patient_name: str) -> bool:
        name = keys.normalise_name(patient_name)
        if self._exact:
            return len(name) == self._head.length and self._head.fits_at(name, 0)
        end = len(name) - self._tail.length
        if end < self._head.length or not self._head.fits_at(name, 0) or not self._tail.fits_at(name, end):
            return False
        at = self._head.length
        for segment in self._middle:
            found = segment.leftmost(name, at, end)
            if found < 0:
                return False
            at = found + segment.length
        return True
