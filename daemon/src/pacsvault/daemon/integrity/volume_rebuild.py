"""``pacsvault tiers rebuild VOLUME``: a lost volume's blobs rebuilt elsewhere from the peer,
in the background, with progress and an ETA.

The volume is marked ``rebuilding`` in the index (every process stops
writing there). The back office then walks its blobs (``volume_blobs``):
each is taken from another local copy if one exists, else fetched from the
peer, checked against its address, written to another volume (its own tier
preferred) and the index pointed at it (``BlobRepair``). A blob that cannot
be rebuilt is counted and named in the log, and the walk goes on. Once
nothing is left on it the volume reads ``drained``: its disk can be
replaced and a new one added. A restart resumes the walk.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pacsvault.daemon.errors import FailedPrecondition, InvalidInput, PacsvaultError, shown
from pacsvault.daemon.index import placement
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import VolumeRecord
from pacsvault.daemon.integrity.blob_repair import BlobRepair

log = logging.getLogger(__name__)
PAGE = 500


@dataclass
class Progress:
    volume_id: str
    path: str
    state: str = "running"  # running, done, failed
    blobs_total: int = 0
    blobs_done: int = 0
    blobs_failed: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    started: float = 0.0
    last_error: str = ""

    def rate(self, now: float) -> float:
        return self.bytes_done / (now - self.started) if now > self.started else 0.0

    def eta(self, now: float) -> float:
        rate = self.rate(now)
        if self.state != "running":
            return 0.0
        return max(0.0, (self.bytes_total - self.bytes_done) / rate) if rate > 0 else -1.0


class VolumeRebuilder:
    def __init__(self, env: IndexEnvironment, repair: BlobRepair, has_peer: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._env, self._repair, self._has_peer, self._clock = env, repair, has_peer, clock
        self._progress: dict[str, Progress] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="volume-rebuild", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._wake.set()  # a rebuild a restart interrupted goes on

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def rebuild(self, volume_ref: str) -> Progress:
        """Starts (or reports) the rebuild of the volume named by its path or id."""
        if not self._has_peer:
            raise FailedPrecondition("a lost volume is rebuilt from the peer, and replication is not configured "
                                     "on this appliance ([replication] enabled = false)")
        record = next((r for r in placement.volumes(self._env) if volume_ref in (r.volume_id, r.path)), None)
        if record is None:
            raise InvalidInput(f"no volume {shown(volume_ref)} (give its path or id; `pacsvault tiers` lists them)")
        if record.state == "drained":
            raise FailedPrecondition(f"volume {record.path} holds no blobs (drained): nothing to rebuild")
        placement.update_volume(self._env, record.volume_id, _mark_rebuilding)
        with self._lock:
            progress = self._progress.get(record.volume_id)
            if progress is None or progress.state != "running":
                progress = self._progress[record.volume_id] = Progress(
                    record.volume_id, record.path, blobs_total=record.blob_count, bytes_total=record.stored_bytes,
                    started=self._clock())
        log.warning("volume %s: rebuilding its %d blobs from the peer", record.path, record.blob_count)
        self._wake.set()
        return progress

    def progress(self) -> list[Progress]:
        with self._lock:
            return list(self._progress.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(60.0)
            self._wake.clear()
            for record in placement.volumes(self._env):
                if record.state == "rebuilding" and not self._stop.is_set():
                    try:
                        self._rebuild_volume(record)
                    except Exception as exc:  # noqa: BLE001 - reported in its progress; retried at the next wake
                        log.exception("volume %s: rebuild failed", record.path)
                        self._progress_of(record).last_error = f"{type(exc).__name__}: {exc}"

    def _progress_of(self, record: VolumeRecord) -> Progress:
        with self._lock:
            progress = self._progress.get(record.volume_id)
            if progress is None:  # resumed after a restart
                progress = self._progress[record.volume_id] = Progress(
                    record.volume_id, record.path, blobs_total=record.blob_count, bytes_total=record.stored_bytes,
                    started=self._clock())
            return progress

    def _rebuild_volume(self, record: VolumeRecord) -> None:
        progress = self._progress_of(record)
        progress.state, tried = "running", set()
        while not self._stop.is_set():
            with self._env.read() as txn:
                page = [k for k in itertools.islice(placement.volume_blob_keys(txn, self._env, record.volume_id),
                                                    PAGE + len(tried)) if k not in tried][:PAGE]
            if not page:
                break
            for blob_key in page:
                tried.add(blob_key)
                self._one(blob_key, record, progress)
        left = next((r for r in placement.volumes(self._env) if r.volume_id == record.volume_id), record)
        if left.blob_count == 0:
            placement.update_volume(self._env, record.volume_id, _mark_drained)
            progress.state = "done"
            log.warning("volume %s: rebuilt (%d blobs) and drained: its disk can be replaced", record.path,
                        progress.blobs_done)
        else:
            progress.state = "failed"
            progress.last_error = progress.last_error or f"{left.blob_count} blobs could not be rebuilt (see the log)"

    def _one(self, blob_key: bytes, record: VolumeRecord, progress: Progress) -> None:
        blob = placement.blob(self._env, blob_key)
        if blob is None or blob.location.volume_id != record.volume_id:
            return  # deleted or moved meanwhile
        try:
            outcome = self._repair.repair(blob, f"volume {record.path} lost: rebuilt elsewhere")
        except PacsvaultError as exc:
            outcome = None
            progress.last_error = str(exc)
        if outcome is not None and (outcome.done or outcome.moot):
            progress.blobs_done += 1
            progress.bytes_done += blob.stored_bytes
        else:
            progress.blobs_failed += 1
            why = outcome.how if outcome is not None else progress.last_error
            progress.last_error = why
            log.error("volume %s: blob %s of study %s could not be rebuilt: %s", record.path, blob.digest.hex()[:16],
                      blob.study_instance_uid, why)


def _mark_rebuilding(record: VolumeRecord) -> bool:
    if record.state == "rebuilding":
        return False
    record.state = "rebuilding"
    return True


def _mark_drained(record: VolumeRecord) -> bool:
    record.state = "drained"
    return True
