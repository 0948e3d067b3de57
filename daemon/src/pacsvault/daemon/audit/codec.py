"""One audit record as one line of the trail, and back.

With encryption off a line is the record's canonical JSON. With it on, a
line is ``{"seq": n, "sealed": base64(AES-GCM of the canonical JSON)}``:
whoever holds the disks learns how many records there are and how long each
is, nothing of who accessed which patient or study. The record inside is the
very one the chain tags (``prev`` and ``tag`` included), so the chain and its
checkpoints work on the same records either way.

``seq`` stays outside so a reader can find its place (the ATNA exporter's
cursor) without opening anything, and it is the associated data of the seal:
a line moved to another position, or renumbered, fails authentication like a
changed byte does.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from typing import Protocol

from pacsvault.daemon.crypto.sealing import SealingKey
from pacsvault.daemon.errors import DataLoss

_SEQ = struct.Struct(">Q")
AAD_PREFIX = b"pacsvault/v1/audit-record\x00"


class UnreadableRecord(Exception):
    """A line that yields no record; ``reason`` completes "line N ..."."""

    def __init__(self, reason: str, *, authentication: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # The line is well formed but does not open with these keys: changed, or another keyring's.
        self.authentication = authentication


class RecordCodec(Protocol):
    sealed: bool

    def encode(self, record: dict[str, object]) -> bytes:
        """One line, without its newline."""
        ...

    def decode(self, line: bytes) -> dict[str, object]:
        """The record of one line; UnreadableRecord when there is none."""
        ...


def canonical(record: dict[str, object]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class PlainCodec:
    """Records in the clear: encryption is off."""

    sealed = False

    def encode(self, record: dict[str, object]) -> bytes:
        return canonical(record)

    def decode(self, line: bytes) -> dict[str, object]:
        record = _json_object(line)
        if "sealed" in record:
            raise UnreadableRecord("is sealed: the trail was written with encryption on, and opens only "
                                   "with it on and the keyring it was written under", authentication=True)
        return record


class SealedCodec:
    """Records sealed with the keyring's audit-store key."""

    sealed = True

    def __init__(self, key: SealingKey) -> None:
        self._key = key

    def encode(self, record: dict[str, object]) -> bytes:
        seq = record["seq"]
        assert isinstance(seq, int)
        sealed = self._key.seal(canonical(record), _aad(seq))
        return canonical({"seq": seq, "sealed": base64.b64encode(sealed).decode()})

    def decode(self, line: bytes) -> dict[str, object]:
        outer = _json_object(line)
        seq, sealed = outer.get("seq"), outer.get("sealed")
        if sealed is None and "tag" in outer:
            raise UnreadableRecord("is not sealed: the trail was written with encryption off", authentication=True)
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or not isinstance(sealed, str):
            raise UnreadableRecord("is not a sealed record (damaged)")
        try:
            raw = base64.b64decode(sealed, validate=True)
        except (binascii.Error, ValueError):
            raise UnreadableRecord("is not a sealed record (damaged)") from None
        try:
            plaintext = self._key.open(raw, _aad(seq), f"audit record {seq}")
        except DataLoss:
            raise UnreadableRecord("fails authentication: changed at rest, or sealed under another keyring",
                                   authentication=True) from None
        record = _json_object(plaintext)
        if record.get("seq") != seq:  # cannot happen without the key: seq is the associated data
            raise UnreadableRecord(f"holds record {record.get('seq')} under number {seq} (forged)")
        return record


PLAIN = PlainCodec()


def _aad(seq: int) -> bytes:
    return AAD_PREFIX + _SEQ.pack(seq)


def _json_object(data: bytes) -> dict[str, object]:
    try:
        value = json.loads(data)
    except ValueError:
        raise UnreadableRecord("is not a record (damaged)") from None
    if not isinstance(value, dict):
        raise UnreadableRecord("is not a record (damaged)")
    return value
