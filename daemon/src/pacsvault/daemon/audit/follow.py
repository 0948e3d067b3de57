"""Following the audit trail from a cursor: the records written after it, in order.

Readers that act on records as they come (the ATNA export, the back office's
alert follower) keep a :class:`Cursor`: the number of the last record they
took and the byte offset just past it. Lines are read as the trail's codec
writes them (sealed or not); numbers follow each other, except across a
resumption record (see ``chain``), which numbers itself past a cut.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pacsvault.daemon.audit.chain import is_resumption
from pacsvault.daemon.audit.codec import RecordCodec, UnreadableRecord

__all__ = ["Cursor", "end_of", "records_after"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cursor:
    """The last record taken, and where the next one starts in the trail."""

    seq: int = 0
    offset: int = 0


def end_of(path: Path) -> Cursor:
    """A cursor at the trail's current end (its last complete line), to follow only what comes next."""
    try:
        source = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return Cursor()
    with source:
        size = source.seek(0, os.SEEK_END)
        window = min(size, 1 << 20)  # one line is far shorter than this
        source.seek(size - window)
        tail = source.read(window)
    end = tail.rfind(b"\n") + 1
    if end == 0:
        return Cursor()
    last = tail[:end - 1].rsplit(b"\n", 1)[-1]
    try:
        seq = int(json.loads(last)["seq"])  # in the clear in sealed lines too
    except (ValueError, KeyError, TypeError):
        seq = 0
    return Cursor(seq, size - window + end)


def records_after(path: Path, codec: RecordCodec, cursor: Cursor, label: str) -> Iterator[tuple[dict[str, object], int]]:
    """Complete records numbered after ``cursor.seq``, each with the offset just past it, in order.

    Stops (and logs, naming ``label``) at a line that does not open or a number
    that does not follow: ``pacsvault audit verify`` says what is wrong there.
    """
    try:
        source = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with source:
        start = cursor.offset if _offset_is_valid(source, cursor) else 0
        source.seek(start)
        position, expected = start, cursor.seq + 1
        for line in source:
            position += len(line)
            if not line.endswith(b"\n"):
                return  # the writer is mid-append; the rest comes next pass
            try:
                record = codec.decode(line[:-1])
                seq = int(record.get("seq", 0))  # type: ignore[call-overload]
            except (UnreadableRecord, TypeError, ValueError) as exc:
                log.error("%s: the trail line at byte %d %s; stopped there (run `pacsvault audit verify`)",
                          label, position - len(line), exc)
                return
            if seq < expected:
                continue  # scanning from the start after a lost offset
            if seq != expected and not (seq > expected and is_resumption(record)):
                log.error("%s: trail jumps from record %d to %d; stopped there (run `pacsvault audit verify`)",
                          label, expected - 1, seq)
                return
            expected = seq + 1
            yield record, position


def _offset_is_valid(source: BinaryIO, cursor: Cursor) -> bool:
    """The cursor's offset ends the line holding its record (the trail was not replaced or cut).

    Reads the line's ``seq``, which is in the clear in sealed lines too:
    a guess at where to resume, not trusted further (what follows is opened).
    """
    if cursor.offset == 0:
        return True
    try:
        source.seek(max(0, cursor.offset - 65536))
        tail = source.read(min(cursor.offset, 65536))
    except OSError:
        return False
    if len(tail) < min(cursor.offset, 65536) or not tail.endswith(b"\n"):
        return False
    last_line = tail[:-1].rsplit(b"\n", 1)[-1]
    try:
        return int(json.loads(last_line).get("seq", -1)) == cursor.seq
    except (ValueError, AttributeError):
        return False
