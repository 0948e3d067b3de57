"""This appliance as the witness of its peer's audit trail.

The peer hands over each signed checkpoint of its trail; the witness keeps it
so that the peer can later prove its trail was not cut, even by someone who
emptied the peer's own disks. For that the witness is append-only: the first
checkpoint it holds for a sequence number stays, and one with other content
for the same number is refused and raised as a security alert here (it means
the peer's trail was cut and written again, or someone holding a copy of the
peer's certificate tries to overwrite the evidence).

Which checkpoints are the peer's: those signed with the key pinned for it.
The witness pins the first key the peer presents (trust on first use), over
the pair's mutual TLS, so only the holder of the peer's certificate could
present it, normally the peer itself with its very first checkpoint. Why not
provision the key with the pair's certificates instead: the signing key is
derived from the peer's keyring, which the peer makes at its first start,
after the certificates were made and installed; TLS keys are another key
pair the peer never signs checkpoints with. Once pinned, a stolen peer
certificate can neither add a checkpoint nor replace one: it would need the
peer's keyring. What the pin does not cover: a certificate stolen before the
peer's first checkpoint reached the witness, and a peer that lost its
keyring (its audit keys then change): the witness refuses the new key, and
says so, until the pin is removed from its index.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pacsvault.daemon.audit.alerts import AlertKind, AlertSink
from pacsvault.daemon.audit.checkpoints import public_key_of, seq_of, signature_valid
from pacsvault.daemon.errors import Conflict, InvalidInput, PermissionDenied
from pacsvault.daemon.index import replicas
from pacsvault.daemon.index.lmdb_env import IndexEnvironment

__all__ = ["AuditWitness", "delivery"]

MAX_CHECKPOINT_BYTES = 4096
DEFAULT_PAGE = 500
MAX_PAGE = 5000


class AuditWitness:
    def __init__(self, env: IndexEnvironment, alerts: AlertSink, clock: Callable[[], float] = time.time) -> None:
        self._env, self._alerts, self._clock = env, alerts, clock

    def keep(self, origin: str, checkpoint_json: str) -> None:
        """Keeps one checkpoint of ``origin``'s trail; the same one again is no error.

        InvalidInput: not a checkpoint. PermissionDenied: not signed by ``origin``'s
        pinned key. Conflict: another checkpoint is held for its number.
        """
        raw = checkpoint_json.encode()
        checkpoint = _parsed(raw)
        seq = seq_of(checkpoint)
        assert seq is not None  # _parsed checked
        key = public_key_of(checkpoint)
        if key is None or not signature_valid(checkpoint, Ed25519PublicKey.from_public_bytes(key)):
            self._refuse(origin, seq, "it is not signed, or its signature does not verify under the key it names",
                         "PERMISSION_DENIED")
            raise PermissionDenied(f"checkpoint {seq} is not validly signed; the witness keeps signed ones only")
        kept = replicas.keep_checkpoint(self._env, origin, seq, key, raw, self._clock())
        if kept.pinned_key != key:
            self._refuse(origin, seq, "it is signed with another key than the one pinned for this peer",
                         "PERMISSION_DENIED")
            raise PermissionDenied(f"checkpoint {seq} is signed with another key than the one this witness "
                                   f"trusts for {origin}; it keeps checkpoints of that key only")
        if kept.held is not None and json.loads(kept.held) != checkpoint:
            self._refuse(origin, seq, "another checkpoint is held for that number (the witness is append-only)",
                         "ALREADY_EXISTS")
            raise Conflict(f"the witness already holds a different checkpoint {seq} of {origin}'s trail and "
                           "keeps the first one (append-only)")

    def page(self, origin: str, min_seq: int, page_token: str, page_size: int) -> tuple[list[str], str]:
        """One page of ``origin``'s checkpoints from ``min_seq`` (or after ``page_token``), and the next token."""
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        start = max(min_seq, 0)
        if page_token:
            try:
                start = max(start, int(page_token) + 1)
            except ValueError:
                raise InvalidInput("page_token is not one this witness gave") from None
        found = replicas.list_checkpoints(self._env, origin, start, size + 1)
        more = len(found) > size
        found = found[:size]
        return [text for _, text in found], str(found[-1][0]) if more else ""

    def _refuse(self, origin: str, seq: int, why: str, outcome: str) -> None:
        self._alerts.alert(AlertKind.WITNESS_CONFLICT, f"checkpoint {seq} of {origin} refused: {why}",
                           peer_appliance=origin, checkpoint_seq=seq, outcome=outcome)


def _parsed(raw: bytes) -> dict[str, object]:
    if len(raw) > MAX_CHECKPOINT_BYTES:
        raise InvalidInput(f"checkpoint_json is over {MAX_CHECKPOINT_BYTES} bytes")
    try:
        checkpoint = json.loads(raw)
    except ValueError:
        raise InvalidInput("checkpoint_json is not a checkpoint (not JSON)") from None
    if not isinstance(checkpoint, dict) or seq_of(checkpoint) is None or seq_of(checkpoint) < 0:  # type: ignore[operator]
        raise InvalidInput("checkpoint_json is not a checkpoint (no sequence number)")
    return checkpoint


def delivery(put: Callable[[str], None], alerts: AlertSink) -> Callable[[dict[str, object]], None]:
    """The trail's witness: hands each checkpoint to the peer (``put``), and raises an alert here
    when the peer refuses one (its witness holds another for that number, or another key)."""

    def deliver(checkpoint: dict[str, object]) -> None:
        try:
            put(json.dumps(checkpoint, sort_keys=True))
        except (Conflict, PermissionDenied) as exc:
            # From the trail's witness thread: do not wait for a flush (the trail may be closing).
            alerts.alert(AlertKind.WITNESS_CONFLICT, f"the witness refused checkpoint {checkpoint.get('seq')}: {exc}",
                         wait=False, checkpoint_seq=checkpoint.get("seq"),
                         outcome="ALREADY_EXISTS" if isinstance(exc, Conflict) else "PERMISSION_DENIED")

    return deliver
