"""Reading the audit trail's chain back, and checking it against its checkpoints.

Each record carries ``seq``, ``prev`` (the tag of the record before it) and
``tag`` = HMAC-SHA256(chain key, prev + canonical JSON of the record). Numbers
follow each other, with one exception: a *resumption* record. When the
appliance finds at start that its trail no longer reaches what a checkpoint
vouched for (the tail was cut while it was down), it records so in a
resumption record numbered past every vouched number, so that no number the
witness holds a checkpoint for is ever used again for another record. The
chain itself goes on through it (its ``prev`` is the tag of the record before
it), but the trail is not intact: ``verify`` names the first lost record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pacsvault.daemon.audit.checkpoints import seq_of, signature_valid
from pacsvault.daemon.audit.codec import PLAIN, RecordCodec, UnreadableRecord, canonical

__all__ = ["GENESIS", "RESUMED", "UNREADABLE", "Problem", "is_resumption", "read_records", "resumption_seq",
           "tag_of", "tags_at", "verify"]

GENESIS = "0" * 64
# The marker read_records yields for a line that holds no readable record.
UNREADABLE = "_unreadable_line"
# The action of a resumption record (see the module docstring).
RESUMED = "AuditTrailResumed"


@dataclass(frozen=True)
class Problem:
    seq: int
    reason: str


def tag_of(key: bytes, prev: str, body: dict[str, object]) -> str:
    return hmac.new(key, prev.encode() + canonical(body), hashlib.sha256).hexdigest()


def read_records(path: Path, codec: RecordCodec = PLAIN) -> Iterator[dict[str, object]]:
    """Every record, in file order; a line without a readable record yields an UNREADABLE marker.

    The marker holds the line number and a ``problem`` completing "line N ...".
    """
    if not path.exists():
        return
    with open(path, "rb") as source:
        for number, line in enumerate(source, start=1):
            try:
                yield codec.decode(line.rstrip(b"\n"))
            except UnreadableRecord as exc:
                yield {UNREADABLE: number, "problem": exc.reason}


def tags_at(path: Path, codec: RecordCodec, seqs: set[int]) -> dict[int, str]:
    """The stored tags of the records numbered ``seqs`` (those found), read from the end backwards.

    For checks of the tail: the records asked for are near the end, and the
    trail may be long. Only those lines are opened; the others' numbers are in
    the clear.
    """
    found: dict[int, str] = {}
    if not seqs:
        return found
    lowest = min(seqs)
    for line in _lines_backwards(path):
        try:
            seq = int(json.loads(line)["seq"])
        except (ValueError, KeyError, TypeError):
            continue
        if seq in seqs:
            try:
                found[seq] = str(codec.decode(line).get("tag"))
            except UnreadableRecord:
                pass  # a damaged record has no tag to agree with
        if seq <= lowest:
            break
    return found


def _lines_backwards(path: Path, block: int = 1 << 16) -> Iterator[bytes]:
    """The complete lines of ``path``, last first, without their newlines."""
    try:
        source = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with source:
        position = source.seek(0, os.SEEK_END)
        rest = b""
        while position > 0:
            step = min(block, position)
            position -= step
            source.seek(position)
            rest = source.read(step) + rest
            lines = rest.split(b"\n")
            rest = lines[0]
            for line in reversed(lines[1:]):
                if line:
                    yield line
        if rest:
            yield rest


def is_resumption(record: Mapping[str, object]) -> bool:
    return record.get("action") == RESUMED and all(
        isinstance(record.get(k), int) and not isinstance(record.get(k), bool) for k in ("cut_after", "vouched"))


def resumption_seq(chain_end: int, vouched: int) -> int:
    """The number a resumption record takes: past the chain's end and past everything vouched for."""
    return max(chain_end, vouched) + 1


def verify(path: Path, key: bytes, public_key: Ed25519PublicKey, checkpoints: list[dict[str, object]],
           codec: RecordCodec = PLAIN) -> Problem | None:
    """The first bad record, or None when the chain is whole and reaches every checkpoint."""
    vouched = {seq for seq in map(seq_of, checkpoints) if seq is not None}
    prev, seq = GENESIS, 0
    tags: dict[int, str] = {}
    cuts: list[tuple[int, int, Problem]] = []  # (first lost, last lost, why): from resumption records
    for record in read_records(path, codec):
        seq += 1
        if UNREADABLE in record:
            return _first(cuts, Problem(seq, f"line {record[UNREADABLE]} {record['problem']}"))
        if record.get("seq") != seq:
            if not (is_resumption(record) and record.get("seq") == resumption_seq(seq - 1, record["vouched"])  # type: ignore[arg-type]
                    and record["cut_after"] < seq):  # type: ignore[operator]
                return _first(cuts, Problem(seq, f"expected record {seq}, found {record.get('seq')} "
                                                 "(deleted or reordered)"))
            seq = int(record["seq"])  # type: ignore[call-overload]
        body = {k: v for k, v in record.items() if k != "tag"}
        if body.get("prev") != prev:
            return _first(cuts, Problem(seq, "does not follow the previous record (deleted or reordered)"))
        expected = tag_of(key, prev, body)
        if not hmac.compare_digest(expected, str(record.get("tag"))):
            return _first(cuts, Problem(seq, "its tag does not match its content (altered or forged)"))
        prev = expected
        if seq in vouched:  # only these are compared below; the trail may be long
            tags[seq] = expected
        if is_resumption(record):
            cuts.append(_cut(record))
    return _first(cuts, _check_checkpoints(seq, tags, public_key, checkpoints, cuts))


def _cut(record: Mapping[str, object]) -> tuple[int, int, Problem]:
    after, vouched = int(record["cut_after"]), int(record["vouched"])  # type: ignore[call-overload]
    return after + 1, vouched, Problem(after + 1, (
        f"the trail was cut: at a start it ended at record {after} while a checkpoint vouched for record "
        f"{vouched}, so records {after + 1}..{vouched} were cut off (found and recorded as record "
        f"{record['seq']}, after which the trail goes on)"))


def _first(cuts: list[tuple[int, int, Problem]], problem: Problem | None) -> Problem | None:
    """The earliest of the problems found: a cut recorded in the trail, or ``problem``."""
    candidates = [p for _, _, p in cuts] + ([problem] if problem is not None else [])
    return min(candidates, key=lambda p: p.seq, default=None)


def _check_checkpoints(last_seq: int, tags: dict[int, str], public_key: Ed25519PublicKey,
                       checkpoints: list[dict[str, object]], cuts: list[tuple[int, int, Problem]]) -> Problem | None:
    agreed = 0  # the newest checkpoint so far that the trail agrees with
    for checkpoint in sorted(checkpoints, key=lambda c: seq_of(c) or 0):
        cp_seq = seq_of(checkpoint)
        if not signature_valid(checkpoint, public_key):
            return Problem(cp_seq or 0, "a checkpoint's signature is invalid")
        assert cp_seq is not None  # a valid checkpoint has a number
        if any(first <= cp_seq <= last for first, last, _ in cuts):
            continue  # it vouches for a record that was cut off, which a resumption record already says
        if cp_seq > last_seq:
            return Problem(last_seq + 1, f"the trail ends at record {last_seq} but a checkpoint vouches "
                                         f"for {cp_seq}: records {last_seq + 1}..{cp_seq} were cut off")
        if cp_seq and tags.get(cp_seq) != checkpoint["tag"]:
            # The chain itself holds, so these records were written with the chain key: the trail was
            # cut after the last checkpoint it agrees with, at the latest, and written again.
            return Problem(agreed + 1, f"records {agreed + 1}..{cp_seq} differ from what the checkpoint of "
                                       f"record {cp_seq} vouched for: cut after record {agreed} at the latest "
                                       "and written again")
        agreed = max(agreed, cp_seq)
    return None
