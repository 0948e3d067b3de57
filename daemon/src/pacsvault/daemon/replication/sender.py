"""The sender: drains the outbox to the peer, one resumable pass at a time.

What travels is the blob's stored form, still sealed when the appliance
encrypts: the peer holds ciphertext only, named by the plain BLAKE3 of that
form, which it can verify without any key.

For each entry, in order: encode the blob into k+m shards, upload each shard
from what the peer already holds durably (so a dropped connection resumes,
never restarts, and never duplicates), then commit the blob with its index
records; only when the peer reports every shard verified is the entry
removed and the blob marked protected.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from pacsvault.daemon.digest import Digest, compute
from pacsvault.daemon.errors import DataLoss, NotFound, PacsvaultError, Unavailable
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BlobRecord, InstanceRecord, OutboxEntry
from pacsvault.daemon.index import outbox, trash
from pacsvault.daemon.replication.codec import ErasureCodec
from pacsvault.daemon.replication.peer_client import PeerClient
from pacsvault.daemon.service.convert import digest_to_proto
from pacsvault.daemon.storage.blob_access import BlobReader, read_all
from pacsvault.daemon.tiering.mover import RateLimiter
from pacsvault.v1 import peer_pb2

log = logging.getLogger(__name__)
# Shards of a blob up to this size go inline in its commit (under the 4 MiB message limit).
INLINE_BYTES = 2 * 1024 * 1024


@dataclass
class SenderStats:
    state: str = "idle"  # idle, connected, unreachable
    blobs_replicated: int = 0
    bytes_replicated: int = 0
    last_error: str = ""
    last_pass_bytes: int = 0
    last_pass_seconds: float = 0.0
    consecutive_failures: int = 0

    @property
    def rate(self) -> float:
        return self.last_pass_bytes / self.last_pass_seconds if self.last_pass_seconds else 0.0


class ReplicationSender:
    def __init__(self, env: IndexEnvironment, open_stored: Callable[[BlobRecord], BlobReader], codec: ErasureCodec,
                 peer: PeerClient, limiter: RateLimiter, batch: int = 64, parallel: int = 8) -> None:
        self._env, self._open_stored, self._codec, self._peer = env, open_stored, codec, peer
        self._catalog = Catalog(env)
        self._limiter = limiter
        self._batch = batch
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="replicate")
        self._stats_lock = threading.Lock()
        # Entries this process has tried; entries older than the process may
        # have been tried before a restart, so they are always asked about.
        self._attempted: set[str] = set()
        self._started_at = time.time()
        self.stats = SenderStats()

    def run_once(self, max_entries: int = 256) -> int:
        """Replicates up to ``max_entries`` outbox entries; returns how many the peer acknowledged.

        Stops at the first failure, so order is kept; the next pass resumes there.
        """
        started, sent_before, done = time.monotonic(), self.stats.bytes_replicated, 0
        try:
            while done < max_entries:
                entries = outbox.pending(self._env, min(self._batch, max_entries - done))
                if not entries:
                    break
                acknowledged, names, failure = self._replicate_batch(entries)
                if acknowledged:
                    outbox.acknowledge(self._env, acknowledged, names)
                done += len(acknowledged)
                if failure is not None:
                    raise failure
            self.stats.state, self.stats.consecutive_failures = "connected" if done else self.stats.state, 0
        except grpc.RpcError as exc:
            self._failed(f"peer {self._peer.address}: {exc.code().name}: {exc.details()}")
        except PacsvaultError as exc:
            self._failed(str(exc))
        self.stats.last_pass_bytes = self.stats.bytes_replicated - sent_before
        self.stats.last_pass_seconds = time.monotonic() - started
        return done

    def _replicate_batch(
        self, entries: list[tuple[bytes, OutboxEntry]]
    ) -> tuple[list[tuple[bytes, OutboxEntry]], dict[bytes, Digest], BaseException | None]:
        """Sends a batch concurrently (the link is latency-bound, one blob at a
        time leaves it idle); acknowledges the longest prefix that succeeded,
        so the outbox still drains in order. Also returns the name each blob
        has at the peer, by outbox key."""
        futures = [self._pool.submit(self._replicate, entry) for _, entry in entries]
        acknowledged: list[tuple[bytes, OutboxEntry]] = []
        names: dict[bytes, Digest] = {}
        failure: BaseException | None = None
        for item, future in zip(entries, futures, strict=True):
            try:
                name = future.result()
            except (grpc.RpcError, PacsvaultError) as exc:
                failure = failure or exc
            if failure is None:
                acknowledged.append(item)
                if name is not None:
                    names[item[0]] = name
        return acknowledged, names, failure

    def _failed(self, message: str) -> None:
        self.stats.state = "unreachable" if "UNAVAILABLE" in message or "DEADLINE" in message else "error"
        self.stats.last_error = message
        self.stats.consecutive_failures += 1
        log.warning("replication paused: %s", message)

    def _replicate(self, entry: OutboxEntry) -> Digest | None:
        """Sends one blob; returns its name at the peer (None when there is nothing to send)."""
        if entry.delete:
            self._peer.delete_replicas([(entry.sop_instance_uid, entry.release_blob)])
            return None
        if entry.hold_study_instance_uid:  # a legal hold: the peer protects its copy the same way
            self._peer.set_legal_hold(entry.hold_study_instance_uid, entry.hold, entry.hold_reason)
            return None
        try:
            # In the trash it is still replicated: a delete is only final after its grace period.
            instance, blob = trash.instance_or_trashed(self._env, entry.sop_instance_uid)
        except NotFound:
            return None  # purged since; nothing left to replicate
        reader = self._open_stored(blob)
        try:
            data = read_all(reader)
        finally:
            reader.close()
        digest = compute(data)
        shards = self._codec.encode(digest, data)
        # Ask the peer what it holds only for blobs an earlier attempt (in
        # this process, or before a restart) may have half sent; a first
        # attempt sends small shards whole, one message each.
        fresh = entry.enqueued_at >= self._started_at and entry.sop_instance_uid not in self._attempted
        self._attempted.add(entry.sop_instance_uid)
        inline: list[bytes] = []
        if sum(len(s.raw) for s in shards) <= INLINE_BYTES:
            # Small blobs (most of them): all shards ride in the commit, one call.
            inline = [s.raw for s in shards]
            self._limiter.take(sum(map(len, inline)))
        else:
            for shard in shards:
                self._upload(digest, shard.index, shard.raw, fresh)
        verified = self._peer.commit_blob(digest, self._codec.k, self._codec.m, [_record(instance, digest)], inline)
        if sorted(verified) != list(range(self._codec.total)):
            raise Unavailable(f"peer verified only shards {verified} of blob {digest.hex[:16]}; retrying")
        with self._stats_lock:
            self.stats.blobs_replicated += 1
            self.stats.bytes_replicated += len(data)
        return digest

    def _upload(self, digest: Digest, index: int, raw: bytes, fresh: bool) -> None:
        """Sends one shard; ``fresh`` skips asking the peer what it holds (a first attempt)."""
        committed, complete = (0, False) if fresh else self._peer.write_status(digest, index)
        if complete:
            return
        if committed > len(raw):
            raise DataLoss(f"peer holds {committed} bytes of shard {index} of {digest.hex[:16]}, "
                           f"more than its {len(raw)}")
        self._limiter.take(len(raw) - committed)
        self._peer.write_shard(digest, index, raw, committed)


def _record(instance: InstanceRecord, digest: Digest) -> peer_pb2.ReplicaRecord:
    return peer_pb2.ReplicaRecord(
        sop_instance_uid=instance.sop_instance_uid, series_instance_uid=instance.series_instance_uid,
        study_instance_uid=instance.study_instance_uid, digest=digest_to_proto(digest),
        stored_at=instance.stored_at, instance_record=instance.SerializeToString(),
    )
