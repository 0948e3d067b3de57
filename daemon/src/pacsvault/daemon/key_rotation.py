"""Key rotation: a new KEK version, then every blob's data key re-wrapped under it, online.

Re-wrapping touches only a blob's spare key slot (see blob_format), never its
frames, so a pass over a large archive writes a few hundred bytes per blob.
The pass is idempotent and resumable: a blob already under the active
version is skipped, and when the daemon starts with a pass unfinished (the
index remembers the version the last clean pass reached) it runs again.

Rotation runs in the back office. The serving processes read the new keyring
when the index says the active version changed (``index.rotation``); a blob
one of them sealed under the old version in the meantime is listed by its
own index commit, and the pass re-wraps those too before it calls itself
complete.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from pacsvault.daemon.crypto.keyring import KeyringHolder
from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.errors import DataLoss, NotFound, Unavailable
from pacsvault.daemon.index import rotation
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BlobRecord
from pacsvault.daemon.storage.tiered import TieredBlobStore

log = logging.getLogger(__name__)
_PAGE = 1000


@dataclass
class RewrapProgress:
    state: str = "idle"  # idle, running, complete, failed
    checked: int = 0
    rewrapped: int = 0
    failed: int = 0
    last_error: str = ""


class KeyRotation:
    def __init__(self, env: IndexEnvironment, store: TieredBlobStore, holder: KeyringHolder) -> None:
        self._env, self._store, self._holder = env, store, holder
        self.progress = RewrapProgress()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def rewrapped_to(self) -> int:
        return rotation.rewrapped_to(self._env)

    def rotate(self) -> int:
        """Makes a new KEK version active (durably, in the keyring), tells every process, starts the re-wrap."""
        ring = self._holder.rotate()
        rotation.set_active_version(self._env, ring.active)
        log.info("key-encryption key version %d is now active; re-wrapping data keys", ring.active)
        self.start()
        return ring.active

    def resume_if_needed(self) -> None:
        rotation.set_active_version(self._env, self._holder.current.active)
        if self.rewrapped_to < self._holder.current.active:
            log.info("a re-wrap to key version %d is unfinished; resuming it", self._holder.current.active)
            self.start()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return  # the running pass re-reads the active version for every blob
            self._thread = threading.Thread(target=self.run_pass, name="key-rewrap", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def run_pass(self) -> RewrapProgress:
        """Re-wraps every local blob under the active version; returns what it did."""
        target = self._holder.current.active
        progress = self.progress = RewrapProgress(state="running")
        after = b""
        while not self._stop.is_set():
            page = rotation.blob_page(self._env, after, _PAGE)
            if not page:
                break
            for _, blob in page:
                self._rewrap_one(blob, progress)
            after = page[-1][0]
        while not self._stop.is_set():
            listed = rotation.pending(self._env, _PAGE)
            if not listed:
                break
            for _, blob in listed:
                if blob is not None:
                    self._rewrap_one(blob, progress)
            rotation.pending_done(self._env, [key for key, _ in listed])
        if self._stop.is_set():
            progress.state = "idle"
            return progress
        progress.state = "failed" if progress.failed else "complete"
        if not progress.failed:
            rotation.set_rewrapped_to(self._env, target)
            log.info("every data key is wrapped under key version %d (%d re-wrapped)", target, progress.rewrapped)
        else:
            log.error("re-wrap to key version %d left %d blobs under older versions: %s", target,
                      progress.failed, progress.last_error)
        return progress

    def _rewrap_one(self, blob: BlobRecord, progress: RewrapProgress) -> None:
        digest = Digest(DigestFunction(blob.digest_function), blob.digest, blob.size_bytes)
        progress.checked += 1
        # Every copy: the indexed volume's, and any other a move left behind for now on a disk (an
        # object store's is looked for only where the index points: a request per blob otherwise).
        holders = [v for v in self._store.volumes if not v.failed
                   and (v.backend == "local" or v.volume_id == blob.location.volume_id) and v.local.contains(digest)]
        if not holders:
            progress.failed += 1
            progress.last_error = f"blob {digest.hex[:16]} is on no available volume"
            return
        for volume in holders:
            try:
                if volume.access.rewrap(digest):  # type: ignore[attr-defined]
                    progress.rewrapped += 1
            except NotFound:
                continue  # moved or deleted meanwhile
            except (DataLoss, Unavailable) as exc:
                progress.failed += 1
                progress.last_error = f"blob {digest.hex[:16]} on {volume.path}: {exc}"
