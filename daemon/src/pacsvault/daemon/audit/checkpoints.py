"""Signed checkpoints of the audit trail: made by the appliance, kept locally and by the witness.

A checkpoint says "record ``seq`` of this trail has tag ``tag``", signed with
the appliance's Ed25519 checkpoint key over the canonical JSON of ``seq``,
``tag`` and ``time``. It also carries ``key``, the signer's public key
(base64 of its 32 raw bytes), so the witness can tell which key it was
signed with: the witness pins the first key its peer presents and refuses
checkpoints under any other (see ``audit.witness``). ``key`` is not signed:
a checkpoint that names another key than the one it verifies under is
simply not valid.

Only numbers, tags and signatures: a checkpoint holds nothing about any
access, so it stays readable with encryption on.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pacsvault.daemon.audit.codec import canonical

__all__ = ["public_key_of", "raw_public_key", "read_checkpoints", "seq_of", "sign", "signature_valid"]

_SIGNED_FIELDS = ("seq", "tag", "time")


def sign(signer: Ed25519PrivateKey, seq: int, tag: str, when: float) -> dict[str, object]:
    body = {"seq": seq, "tag": tag, "time": when}
    signature = base64.b64encode(signer.sign(canonical(body))).decode()
    key = base64.b64encode(raw_public_key(signer.public_key())).decode()
    return {**body, "signature": signature, "key": key}


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()


def seq_of(checkpoint: dict[str, object]) -> int | None:
    seq = checkpoint.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def public_key_of(checkpoint: dict[str, object]) -> bytes | None:
    """The raw public key a checkpoint names, or None when it names none (or not a plausible one)."""
    text = checkpoint.get("key")
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def signature_valid(checkpoint: dict[str, object], public_key: Ed25519PublicKey) -> bool:
    """Whether ``checkpoint`` (a number, a tag, a time) was signed with the key of ``public_key``."""
    if seq_of(checkpoint) is None or not isinstance(checkpoint.get("tag"), str):
        return False
    try:
        body = {k: checkpoint[k] for k in _SIGNED_FIELDS}
        signature = base64.b64decode(str(checkpoint["signature"]), validate=True)
        public_key.verify(signature, canonical(body))
    except (KeyError, binascii.Error, ValueError, InvalidSignature):
        return False
    return True


def read_checkpoints(path: Path) -> list[dict[str, object]]:
    """The signed checkpoints kept beside the trail, oldest first; lines that hold none are skipped."""
    if not path.exists():
        return []
    found = []
    with open(path, "rb") as source:
        for line in source:
            try:
                checkpoint = json.loads(line)
            except ValueError:
                continue
            if isinstance(checkpoint, dict) and "seq" in checkpoint:
                found.append(checkpoint)
    return found
