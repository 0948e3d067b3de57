"""A tamper-evident, append-only audit trail.

Each record is one line carrying ``prev`` (the previous record's tag) and
``tag`` = HMAC-SHA256(chain key, prev tag + the record's canonical JSON).
Changing a byte, deleting, reordering or forging a record breaks the chain at
that record; only the holder of the key can extend it. Every N records or T
seconds a checkpoint (sequence number and tag) is signed with the
appliance's Ed25519 key and handed to a witness (the peer appliance), which
keeps every one it is given, so a truncated tail is caught against them; the
back office also checks the tail at every start (``tail_check``), and reading
the chain back and checking it is ``chain``.

With encryption on (see ``codec``), every line is sealed under the keyring,
and the chain key and the signing key are derived from the keyring too: the
data disks hold no audit key and no record in the clear. Checkpoints carry
only numbers, tags and signatures, so they stay readable (the peer keeps them).

Every process of the daemon appends to the one chain: each caller appends
its own line, in chain order under a lock that holds across processes (see
``AuditTrail``); one flusher thread per process makes lines durable, a whole
batch per flush. ``append`` returns once its record is on stable storage;
``append_async(durable=False)`` once it is written (flushed within
_SYNC_WINDOW_S). A trail that cannot be appended to refuses, and the calls
that would release or change patient data refuse with it; a flush that fails
refuses everything after it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pacsvault.daemon.audit import checkpoints as signed_checkpoints
from pacsvault.daemon.audit.alerts import AlertKind
from pacsvault.daemon.audit.chain import GENESIS, UNREADABLE, Problem, read_records, tag_of, verify
from pacsvault.daemon.audit.checkpoints import read_checkpoints
from pacsvault.daemon.audit.codec import PLAIN, RecordCodec, SealedCodec, UnreadableRecord, canonical
from pacsvault.daemon.config import Config
from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys
from pacsvault.daemon.errors import ConfigError, Unavailable
from pacsvault.daemon.storage.durable import fsync_dir

__all__ = ["GENESIS", "AuditTrail", "Problem", "canonical", "checkpoint_signer", "load_or_create_keys",
           "open_trail", "read_checkpoints", "read_records", "tag_of", "verify"]

log = logging.getLogger(__name__)
# Records written without waiting for a flush (outcomes, and reads' begin
# records unless audit.flush_before_read) reach stable storage at most this
# long after they were written: the window a power cut could cost.
_SYNC_WINDOW_S = 0.05
Witness = Callable[[dict[str, object]], None]
# HKDF info of the checkpoint signing key; distinct from every keyring label.
CHECKPOINT_SIGNING = b"pacsvault/v1/audit-checkpoint-signing"
# Records the archive writes on its own (phase "alert"); alerts.AlertKind names the kinds.
SECURITY_ALERT = "SecurityAlert"
BLOB_AUTHENTICATION_FAILED = AlertKind.BLOB_AUTHENTICATION_FAILED.value


def open_trail(config: Config, keys: ApplianceKeys | None, *, clock: Callable[[], float] = time.time,
               witness: Witness | None = None, checkpointing: bool = True) -> AuditTrail:
    """The appliance's trail: sealed, with keys from the keyring, when encryption is on."""
    path = config.resolve(config.audit.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec: RecordCodec
    if keys is None:
        key, signer = load_or_create_keys(config.resolve(config.audit.keys_dir))
        codec = PLAIN
    else:
        key, signer = keys.audit_chain_key, checkpoint_signer(keys.audit_chain_key)
        codec = SealedCodec(keys.audit_store)
    return AuditTrail(path, key, signer, clock=clock, witness=witness, codec=codec,
                      checkpoint_every=config.audit.checkpoint_every,
                      checkpoint_interval_s=config.audit.checkpoint_interval_s, checkpointing=checkpointing)


def checkpoint_signer(chain_key: bytes) -> Ed25519PrivateKey:
    """The checkpoint signing key, derived from the chain key so no key file sits on the data disks."""
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=CHECKPOINT_SIGNING).derive(chain_key)
    return Ed25519PrivateKey.from_private_bytes(seed)


def load_or_create_keys(directory: Path) -> tuple[bytes, Ed25519PrivateKey]:
    """The trail's HMAC key and checkpoint signing key, made on first start (0600); encryption off only."""
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


class AuditTrail:
    """One process's handle on the trail; every process of the daemon appends to the same chain.

    Appends from all processes are ordered by an ``flock`` on the trail file
    itself: under it, a process checks whether the file grew since
    its own last append and, if so, reads the chain's end (the last line)
    before it writes its record. A line another process left half-written
    (killed mid-append: nobody was told it was recorded) is cut off first.
    Each process flushes for its own callers; a flush covers every line
    written before it, whoever wrote it.

    ``checkpointing``: whether this handle makes the signed checkpoints and
    hands them to the witness (the back office's does; serving processes'
    do not). The witness is called from a thread of its own, so a slow or
    frozen peer never holds up an append or a flush.
    """

    def __init__(self, path: Path, key: bytes, signer: Ed25519PrivateKey, *, clock: Callable[[], float] = time.time,
                 checkpoint_every: int = 1000, checkpoint_interval_s: float = 60.0,
                 witness: Witness | None = None, codec: RecordCodec = PLAIN, checkpointing: bool = True) -> None:
        self.path, self._key, self._signer, self._clock = path, key, signer, clock
        # How lines are written and read back; whatever reads this trail uses it.
        self.codec = codec
        self.checkpoints_path = path.with_name(path.name + ".checkpoints")
        self._every, self._interval = checkpoint_every, checkpoint_interval_s
        self._checkpointing = checkpointing
        # Checkpoints wait while the trail's tail is not yet checked against the witness (held
        # by the back office at start, see audit.tail_check): none may vouch for a number in doubt.
        self._checkpoints_held = False
        self.witness = witness
        # Orders appends across threads (_lock) and processes (flock on the trail, see _appending).
        self._lock = threading.Lock()
        self._seq, self._prev, self._size = 0, GENESIS, 0
        # Why the newest record could not be read at open, if it could not (the tail check raises an alert).
        self.damaged_tail = ""
        if path.exists():
            with self._appending():
                self._current_tail()
        self._last_checkpoint_seq, self._last_checkpoint_at = _last_checkpoint(self.checkpoints_path), clock()
        # The flusher: records up to _synced_seq are on stable storage; callers
        # waiting for a durable append are in _waiting, released by one flush.
        self._flush = threading.Condition()
        self._synced_seq, self._synced_prev = self._seq, self._prev
        # How much of the file (every process's records) the last flush covered.
        self._synced_size = self._size
        self._waiting: list[tuple[int, Future[int]]] = []
        self._later: list[dict[str, object]] = []
        # When the oldest record not yet on stable storage was written (None: all are).
        self._unsynced_since: float | None = None
        # A flush failed: what was written may be lost, so nothing more is taken.
        self._broken: Unavailable | None = None
        self._closing = False
        self._flusher = threading.Thread(target=self._run, name="audit-flusher", daemon=True)
        self._flusher.start()
        self._witness_queue: queue.Queue[dict[str, object] | None] = queue.Queue(maxsize=64)
        self._witness_thread: threading.Thread | None = None
        if witness is not None and checkpointing:
            self._witness_thread = threading.Thread(target=self._send_to_witness, name="audit-witness", daemon=True)
            self._witness_thread.start()

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._signer.public_key()

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest record this handle knows is on stable storage (0 when empty)."""
        return self._synced_seq

    def append(self, event: dict[str, object]) -> int:
        """Appends ``event`` durably; returns its sequence number. Unavailable when it cannot."""
        return self.append_async(event).result()

    def append_async(self, event: dict[str, object], *, durable: bool = True, after: int = 0) -> Future[int]:
        """Appends ``event`` to the trail file now; the future gives its sequence number once
        it is on stable storage, or with ``durable`` False at once (the flusher flushes it
        within _SYNC_WINDOW_S), or raises Unavailable when it could not be written.
        ``after``: number it past this as well (see ``append_after``)."""
        future: Future[int] = Future()
        try:
            seq = self._write(event, after)
        except Unavailable as exc:
            future.set_exception(exc)
            return future
        if not durable:
            future.set_result(seq)
            return future
        with self._flush:
            if seq <= self._synced_seq:
                future.set_result(seq)
            else:
                self._waiting.append((seq, future))
                self._flush.notify()
        return future

    def append_later(self, event: dict[str, object]) -> None:
        """Queues ``event``; the flusher thread appends it, soon, without anyone waiting.

        For records that guard nothing (a call's outcome, written after the
        record that let it run): the caller pays neither the write nor a
        flush for them, and a power cut can cost at most the newest ones.
        """
        with self._flush:
            self._later.append(dict(event))
            self._flush.notify()

    def append_after(self, event: dict[str, object], vouched: int) -> int:
        """Appends ``event`` durably, numbered past ``vouched`` as well as past the chain's end.

        For a resumption record (see ``chain``): after a cut, no new record may
        take a number a checkpoint already vouched for.
        """
        return self.append_async(event, after=vouched).result()

    def hold_checkpoints(self) -> None:
        self._checkpoints_held = True

    def release_checkpoints(self) -> None:
        self._checkpoints_held = False

    def record_security_alert(self, reason: str, study_instance_uid: str, sop_instance_uid: str) -> int:
        """Records, durably, that stored data of an instance failed authentication at rest.

        Exported over ATNA as a Security Alert (110113). Unavailable when the
        trail cannot take it, like any durable append.
        """
        # Outcome DATA_LOSS exports as EventOutcomeIndicator 8, a serious failure: the copy was
        # caught and not served (mitigation held), which is what 8 means in an alert, not 12.
        return self.append({"action": SECURITY_ALERT, "alert": BLOB_AUTHENTICATION_FAILED, "phase": "alert",
                            "outcome": "DATA_LOSS", "reason": reason[:512], "study_instance_uid": study_instance_uid,
                            "sop_instance_uid": sop_instance_uid})

    def read_records(self) -> Iterator[dict[str, object]]:
        return read_records(self.path, self.codec)

    def line_count(self) -> int:
        """How many records the file holds, readable or not, without opening any."""
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as source:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: source.read(1 << 20), b""))

    def verify(self, checkpoints: list[dict[str, object]]) -> Problem | None:
        """The first bad record of this trail, against ``checkpoints`` (local and the witness's)."""
        return verify(self.path, self._key, self.public_key, checkpoints, self.codec)

    def durable_tail(self) -> tuple[int, str]:
        """The chain's end as every process has written it, made durable: (sequence number, tag)."""
        with self._appending():
            seq, prev = self._current_tail()
        _fdatasync(self.path)
        return seq, prev

    def checkpoint_if_due(self) -> None:
        """Signs a checkpoint of the whole trail (every process's records) when one is due."""
        if not self._checkpointing:
            return
        seq, tag = self.durable_tail()
        if seq > self._last_checkpoint_seq and (seq - self._last_checkpoint_seq >= self._every
                                                or self._clock() - self._last_checkpoint_at >= self._interval):
            self._checkpoint(seq, tag)

    def close(self) -> None:
        with self._flush:
            self._closing = True
            self._flush.notify()
        self._flusher.join(timeout=30)
        if self._checkpointing and self._broken is None:
            try:
                seq, tag = self.durable_tail()
            except (Unavailable, OSError) as exc:
                log.error("audit trail %s: no closing checkpoint (%s)", self.path, exc)
            else:
                if seq > self._last_checkpoint_seq:
                    self._checkpoint(seq, tag)
        if self._witness_thread is not None:
            self._witness_queue.put(None)
            self._witness_thread.join(timeout=30)

    # -- appending: in the caller's thread, one line at a time, in chain order ----

    @contextlib.contextmanager
    def _appending(self) -> Iterator[int]:
        """The trail open for appending, locked against every other appender, in any process.

        Opened per record, not kept: a trail disk must be free to go read-only
        (or be remounted so) under the daemon, and then every append fails, as
        it should. Closing the file releases the lock.
        """
        with self._lock:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise Unavailable(f"the audit trail cannot be written ({exc.strerror}); refusing") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield fd
            finally:
                os.close(fd)

    def _current_tail(self) -> tuple[int, str]:
        """Under the append lock: the chain's end, re-read when another process wrote since our last append."""
        if _size_of(self.path) != self._size or not self._size:
            self._seq, self._prev = self._tail()
            self._size = _size_of(self.path)
        return self._seq, self._prev

    def _write(self, event: dict[str, object], after: int = 0) -> int:
        """Writes one record to the trail file, numbered past the chain's end and ``after``; returns its number."""
        with self._appending() as fd:
            if self._broken is not None:
                raise self._broken
            seq, prev = self._current_tail()
            seq = max(seq, after) + 1
            body = {**event, "seq": seq, "time": event.get("time") or self._clock(), "prev": prev}
            tag = tag_of(self._key, prev, body)
            line = self.codec.encode({**body, "tag": tag}) + b"\n"
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                _cut_back(self.path, self._size)  # a half-written line would break the chain for good
                raise Unavailable(f"the audit trail cannot be written ({exc.strerror}); refusing") from exc
            self._size += len(line)
            self._seq, self._prev = seq, tag
        with self._flush:
            if self._unsynced_since is None:
                self._unsynced_since = time.monotonic()
                self._flush.notify()
        return seq

    # -- flushing: one thread, one flush for everything written so far ---------------

    def _run(self) -> None:
        while True:
            with self._flush:
                while not (self._waiting or self._later or self._closing or self._window_passed()):
                    wait = None if self._unsynced_since is None else \
                        max(0.0, self._unsynced_since + _SYNC_WINDOW_S - time.monotonic())
                    self._flush.wait(timeout=wait)
                closing, later, self._later = self._closing, self._later, []
            for event in later:
                try:
                    self._write(event)
                except Unavailable as exc:
                    log.error("audit record lost: %s", exc)
            if self._waiting or closing or self._window_passed():
                self._sync()
            if closing:
                return

    def _window_passed(self) -> bool:
        return self._unsynced_since is not None and time.monotonic() - self._unsynced_since >= _SYNC_WINDOW_S

    def flush(self) -> None:
        """Makes every record written so far, by any process, durable; Unavailable when it cannot.

        The index runs it before each commit, so no change is ever committed
        ahead of the record of the call that made it.
        """
        self._sync()
        if self._broken is not None:
            raise self._broken

    def _sync(self) -> None:
        """Flushes everything written so far (by any process), then releases whoever waited for it."""
        with self._lock:
            seq, prev = self._seq, self._prev
        size = _size_of(self.path)
        error: Unavailable | None = None
        if seq > self._synced_seq or size > self._synced_size:
            try:
                _fdatasync(self.path)
            except OSError as exc:
                # What was written may never reach the disk: refuse everything from now on
                # rather than go on as if it had (a later flush could succeed regardless).
                error = Unavailable(f"the audit trail could not be flushed ({exc.strerror}); refusing")
                log.error("audit trail %s: %s", self.path, error)
                with self._lock:
                    self._broken = error
        with self._flush:
            if error is None:
                self._synced_size = max(self._synced_size, size)
                if seq > self._synced_seq:
                    self._synced_seq, self._synced_prev = seq, prev
                # Records written during the flush get a window of their own.
                self._unsynced_since = None if self._seq_is_latest(seq) else time.monotonic()
            done = [(s, f) for s, f in self._waiting if s <= seq or error is not None]
            self._waiting = [(s, f) for s, f in self._waiting if s > seq and error is None]
        for number, future in done:
            if error is None:
                future.set_result(number)
            else:
                future.set_exception(error)
        if error is None and self._checkpointing and (
                seq - self._last_checkpoint_seq >= self._every
                or self._clock() - self._last_checkpoint_at >= self._interval):
            self._checkpoint(seq, prev)  # vouches only for records on stable storage

    def _seq_is_latest(self, seq: int) -> bool:
        with self._lock:
            return self._seq == seq

    def _checkpoint(self, seq: int, tag: str) -> None:
        if seq <= self._last_checkpoint_seq or self._checkpoints_held:
            return
        signed = signed_checkpoints.sign(self._signer, seq, tag, self._clock())
        try:
            # 0600 like the trail: for the daemon's user only.
            fd = os.open(self.checkpoints_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "ab") as out:
                out.write(canonical(signed) + b"\n")
                out.flush()
                os.fsync(out.fileno())
        except OSError:
            log.exception("audit checkpoint not written")
            return
        self._last_checkpoint_seq, self._last_checkpoint_at = seq, self._clock()
        if self._witness_thread is not None:
            try:
                self._witness_queue.put_nowait(signed)
            except queue.Full:
                log.warning("audit checkpoint %d not queued for the witness: it has not taken the last 64", seq)

    def _send_to_witness(self) -> None:
        """Delivers checkpoints to the witness, never holding up an append or a flush."""
        assert self.witness is not None
        while (checkpoint := self._witness_queue.get()) is not None:
            try:
                self.witness(checkpoint)
            except Exception:  # noqa: BLE001 - the witness gets the next checkpoint, which vouches for this one's records
                log.warning("audit checkpoint %s not delivered to the witness", checkpoint.get("seq"), exc_info=True)

    # -- where the trail ends ------------------------------------------------------

    def _tail(self) -> tuple[int, str]:
        """The newest record's number and tag, read from the last line only (the trail can be long)."""
        _drop_partial_line(self.path)
        line = _last_line(self.path)
        if line is None:
            return 0, GENESIS
        try:
            record = self.codec.decode(line)
            return int(record["seq"]), str(record["tag"])  # type: ignore[call-overload]
        except (UnreadableRecord, KeyError, TypeError, ValueError) as exc:
            return self._after_damaged_tail(str(exc))

    def _after_damaged_tail(self, reason: str) -> tuple[int, str]:
        """Refuses a trail none of whose records open (another keyring); continues after a damaged one."""
        lines, readable, first_problem = 0, False, ""
        for record in read_records(self.path, self.codec):
            lines += 1
            if UNREADABLE not in record:
                readable = True
            elif not first_problem:
                first_problem = str(record["problem"])
        if not readable:
            raise ConfigError(f"audit trail {self.path}: none of its {lines} records can be read with this "
                              f"appliance's keys (the first {first_problem}); start it with the keyring and "
                              f"[encryption] setting it was written under")
        # The chain is broken at the damaged record whatever follows; `audit verify` names it.
        self.damaged_tail = reason
        log.error("audit trail %s: the newest record %s; new records follow it, and `pacsvault audit verify` "
                  "names it", self.path, reason)
        return lines, GENESIS


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _fdatasync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _last_checkpoint(path: Path) -> int:
    """The sequence number the newest local checkpoint vouches for (0 when none)."""
    line = _last_line(path)
    if not line:
        return 0
    try:
        return int(json.loads(line)["seq"])
    except (ValueError, KeyError, TypeError):
        return 0


def _drop_partial_line(path: Path) -> None:
    """Cuts a line a crash left half-written: no caller was told it was recorded (no fsync returned)."""
    end = _complete_end(path)
    if end is not None and end != path.stat().st_size:
        log.warning("audit trail %s: dropping a half-written last line (bytes %d..%d)",
                    path, end, path.stat().st_size)
        _cut_back(path, end)


def _complete_end(path: Path) -> int | None:
    """The offset just past the last newline (0 when there is none); None when there is no trail."""
    try:
        source = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None
    with source:
        position = source.seek(0, os.SEEK_END)
        while position > 0:
            step = min(65536, position)
            position -= step
            source.seek(position)
            found = source.read(step).rfind(b"\n")
            if found >= 0:
                return position + found + 1
        return 0


def _last_line(path: Path) -> bytes | None:
    """The last complete line without its newline; None when the trail is empty or missing."""
    end = _complete_end(path)
    if not end:
        return None
    with open(path, "rb") as source:
        data, position = b"", end - 1  # the final newline left out
        while True:
            found = data.rfind(b"\n")
            if found >= 0:
                return data[found + 1:]
            if position == 0:
                return data
            step = min(65536, position)
            position -= step
            source.seek(position)
            data = source.read(step) + data


def _cut_back(path: Path, size: int) -> None:
    try:
        os.truncate(path, size)
    except OSError:
        log.exception("audit trail %s could not be cut back to %d bytes", path, size)
