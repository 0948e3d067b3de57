"""A tamper-evident, append-only audit trail.

Each record is one JSON line carrying ``prev`` (the previous record's tag)
and ``tag`` = HMAC-SHA256(audit key, prev tag + the record's canonical JSON).
Changing a byte, deleting, reordering or forging a record breaks the chain at
that record; only the holder of the key can extend it. Every N records or T
seconds a checkpoint (sequence number and tag) is signed with the
appliance's Ed25519 key and handed to a witness (the peer appliance), so a
truncated tail is caught against the newest checkpoint the witness holds.

Appends are durable before they return (group-committed by one writer
thread, like the index); a trail that cannot be appended to refuses, and the
calls that would release or change patient data refuse with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pacsvault.daemon.errors import Unavailable
from pacsvault.daemon.storage.durable import fsync_dir

log = logging.getLogger(__name__)
GENESIS = "0" * 64
Witness = Callable[[dict[str, object]], None]


@dataclass(frozen=True)
class Problem:
    seq: int
    reason: str


def load_or_create_keys(directory: Path) -> tuple[bytes, Ed25519PrivateKey]:
    """The trail's HMAC key and checkpoint signing key, made on first start (0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    hmac_path, sign_path = directory / "audit-hmac.key", directory / "audit-signing.key"
    if not hmac_path.exists():
        _write_secret(hmac_path, os.urandom(32))
    if not sign_path.exists():
        _write_secret(sign_path, Ed25519PrivateKey.generate().private_bytes_raw())
    return hmac_path.read_bytes(), Ed25519PrivateKey.from_private_bytes(sign_path.read_bytes())


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def canonical(record: dict[str, object]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def tag_of(key: bytes, prev: str, body: dict[str, object]) -> str:
    return hmac.new(key, prev.encode() + canonical(body), hashlib.sha256).hexdigest()


class AuditTrail:
    def __init__(self, path: Path, key: bytes, signer: Ed25519PrivateKey, *, clock: Callable[[], float] = time.time,
                 checkpoint_every: int = 1000, checkpoint_interval_s: float = 60.0,
                 witness: Witness | None = None) -> None:
        self.path, self._key, self._signer, self._clock = path, key, signer, clock
        self.checkpoints_path = path.with_name(path.name + ".checkpoints")
        self._every, self._interval = checkpoint_every, checkpoint_interval_s
        self.witness = witness
        self._seq, self._prev = self._tail()
        self._last_checkpoint_seq, self._last_checkpoint_at = self._seq, clock()
        self._queue: queue.Queue[tuple[dict[str, object], Future[int] | None] | None] = queue.Queue()
        self._writer = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._writer.start()

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._signer.public_key()

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest durable record (0 when empty)."""
        return self._seq

    def append(self, event: dict[str, object]) -> int:
        """Appends ``event`` durably; returns its sequence number. Unavailable when it cannot."""
        future: Future[int] = Future()
        self._queue.put((dict(event), future))
        return future.result()

    def append_later(self, event: dict[str, object]) -> None:
        """Queues ``event`` without waiting for it to be durable.

        For records that guard nothing (a call's outcome, written after the
        record that let it run was made durable): the caller does not pay a
        flush for them, and a crash can cost at most the newest ones.
        """
        self._queue.put((dict(event), None))

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=30)
        if self._seq > self._last_checkpoint_seq:
            self._checkpoint()

    # -- the writer ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < 256:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            self._write(batch)

    def _write(self, batch: list[tuple[dict[str, object], Future[int] | None]]) -> None:
        lines, seqs, seq, prev = [], [], self._seq, self._prev
        for event, _ in batch:
            seq += 1
            body = {**event, "seq": seq, "time": event.get("time") or self._clock(), "prev": prev}
            prev = tag_of(self._key, prev, body)
            lines.append(canonical({**body, "tag": prev}) + b"\n")
            seqs.append(seq)
        size = self.path.stat().st_size if self.path.exists() else 0
        try:
            with open(self.path, "ab") as out:
                out.write(b"".join(lines))
                out.flush()
                os.fsync(out.fileno())  # durable before any caller is told it is recorded
        except OSError as exc:
            _cut_back(self.path, size)  # a half-written line would break the chain for good
            error = Unavailable(f"the audit trail cannot be written ({exc.strerror}); refusing")
            for _, future in batch:
                if future is None:
                    log.error("audit record lost: %s", error)
                else:
                    future.set_exception(error)
            return
        self._seq, self._prev = seq, prev
        for (_, future), number in zip(batch, seqs, strict=True):
            if future is not None:
                future.set_result(number)
        if seq - self._last_checkpoint_seq >= self._every or \
                self._clock() - self._last_checkpoint_at >= self._interval:
            self._checkpoint()

    def _checkpoint(self) -> None:
        body = {"seq": self._seq, "tag": self._prev, "time": self._clock()}
        signed = {**body, "signature": base64.b64encode(self._signer.sign(canonical(body))).decode()}
        try:
            with open(self.checkpoints_path, "ab") as out:
                out.write(canonical(signed) + b"\n")
                out.flush()
                os.fsync(out.fileno())
        except OSError:
            log.exception("audit checkpoint not written")
            return
        self._last_checkpoint_seq, self._last_checkpoint_at = self._seq, self._clock()
        if self.witness is not None:
            try:
                self.witness(signed)
            except Exception:  # noqa: BLE001 - the witness is retried at the next checkpoint
                log.warning("audit checkpoint %d not delivered to the witness", self._seq, exc_info=True)

    def _tail(self) -> tuple[int, str]:
        last = None
        for last in read_records(self.path):
            pass
        if last is None:
            return 0, GENESIS
        return int(last.get("seq", 0)), str(last.get("tag", GENESIS))


def _cut_back(path: Path, size: int) -> None:
    try:
        os.truncate(path, size)
    except OSError:
        log.exception("audit trail %s could not be cut back to %d bytes", path, size)


def read_records(path: Path) -> Iterator[dict[str, object]]:
    """Every record, in file order; a line that is not JSON yields a marker record."""
    if not path.exists():
        return
    with open(path, "rb") as source:
        for number, line in enumerate(source, start=1):
            try:
                yield json.loads(line)
            except ValueError:
                yield {"_unparseable_line": number}


def verify(path: Path, key: bytes, public_key: Ed25519PublicKey,
           checkpoints: list[dict[str, object]]) -> Problem | None:
    """The first bad record, or None when the chain is whole and reaches every checkpoint."""
    prev, seq = GENESIS, 0
    for record in read_records(path):
        seq += 1
        if "_unparseable_line" in record:
            return Problem(seq, f"line {record['_unparseable_line']} is not a record (damaged)")
        if record.get("seq") != seq:
            return Problem(seq, f"expected record {seq}, found {record.get('seq')} (deleted or reordered)")
        body = {k: v for k, v in record.items() if k != "tag"}
        if body.get("prev") != prev:
            return Problem(seq, "does not follow the previous record (deleted or reordered)")
        expected = tag_of(key, prev, body)
        if not hmac.compare_digest(expected, str(record.get("tag"))):
            return Problem(seq, "its tag does not match its content (altered or forged)")
        prev = expected
    return _check_checkpoints(seq, prev, path, key, public_key, checkpoints)


def _check_checkpoints(last_seq: int, last_tag: str, path: Path, key: bytes, public_key: Ed25519PublicKey,
                       checkpoints: list[dict[str, object]]) -> Problem | None:
    tags = {int(r["seq"]): str(r["tag"]) for r in read_records(path) if "seq" in r}  # type: ignore[arg-type]
    for checkpoint in sorted(checkpoints, key=lambda c: int(c["seq"])):  # type: ignore[arg-type]
        body = {k: checkpoint[k] for k in ("seq", "tag", "time")}
        try:
            public_key.verify(base64.b64decode(str(checkpoint["signature"])), canonical(body))
        except Exception:  # noqa: BLE001 - any verification failure means a forged checkpoint
            return Problem(int(checkpoint["seq"]), "a checkpoint's signature is invalid")  # type: ignore[arg-type]
        cp_seq = int(checkpoint["seq"])  # type: ignore[arg-type]
        if cp_seq > last_seq:
            return Problem(last_seq + 1, f"the trail ends at record {last_seq} but a checkpoint vouches "
                                         f"for {cp_seq}: records {last_seq + 1}..{cp_seq} were cut off")
        if cp_seq and tags.get(cp_seq) != checkpoint["tag"]:
            return Problem(cp_seq, "differs from what a checkpoint vouched for")
    return None


def read_checkpoints(path: Path) -> list[dict[str, object]]:
    return [c for c in read_records(path) if "seq" in c]
