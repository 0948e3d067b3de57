"""The archive: ingest, find, retrieve and health, over the index and the blob store.

Ingest is ordered so that nothing acknowledged can be lost and nothing
half-stored is ever visible: digest, parse, make the blob durable, and only
then commit the index transaction that points at it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pacsvault.daemon import __version__
from pacsvault.daemon.config import Config
from pacsvault.daemon.dicom import json_model, uid
from pacsvault.daemon.dicom.parse import ParsedInstance, parse
from pacsvault.daemon.digest import Digest, DigestFunction, compute
from pacsvault.daemon.errors import Conflict, InvalidInput, TooLarge, Unavailable
from pacsvault.daemon.index import query as query_module
from pacsvault.daemon.index.catalog import AddOutcome, Catalog, NewBlob
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.query import Level, Match, Query
from pacsvault.daemon.index.records import BlobLocation, BlobRecord, InstanceRecord, decode
from pacsvault.daemon.storage.blob_access import BlobReader
from pacsvault.daemon.storage.factory import build_blob_store
from pacsvault.daemon.storage.tiered import Location, TieredBlobStore, Volume


@dataclass(frozen=True)
class StoreResult:
    outcome: AddOutcome
    instance: ParsedInstance
    digest: Digest
    message: str


@dataclass(frozen=True)
class VolumeHealth:
    tier: str
    path: str
    state: str  # healthy, warning, critical
    reason: str
    capacity_bytes: int
    used_bytes: int
    free_bytes: int
    accepts_writes: bool


@dataclass(frozen=True)
class ApplianceHealth:
    state: str
    reasons: list[str]
    version: str
    uptime_s: float
    index: dict[str, int]
    volumes: list[VolumeHealth] = field(default_factory=list)


class Archive:
    """The domain core the gRPC servicers call, one method per use."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._started = time.monotonic()
        self.blobs: TieredBlobStore = build_blob_store(config)
        self.index = IndexEnvironment(
            config.resolve(config.index.path), map_size=config.index.map_size_bytes,
            max_batch=config.index.max_batch,
        )
        self.catalog = Catalog(self.index)

    def close(self) -> None:
        self.index.close()

    # -- ingest -----------------------------------------------------------

    def store(
        self, data: bytes | bytearray, expected: Digest | None = None,
        still_wanted: Callable[[], bool] = lambda: True,
    ) -> StoreResult:
        """Stores one Part 10 file; durable before it returns.

        ``still_wanted`` is asked just before the index commit: a caller that
        has gone (cancelled, deadline passed) gets nothing indexed, since it
        could never learn that the store succeeded.
        """
        limit = self.config.limits.max_instance_bytes
        if len(data) > limit:
            raise TooLarge(f"instance of {len(data)} bytes is over limits.max_instance_bytes ({limit})")
        digest = compute(data)
        if expected is not None and expected != digest:
            raise InvalidInput(f"expected_digest {expected} does not match the bytes received ({digest}); nothing stored")
        parsed = parse(data)
        known = self._known_instance(parsed.sop_instance_uid)
        if known is not None:
            return self._repeat(parsed, known, digest)
        blob = self.catalog.blob(digest)
        if blob is None:
            location, stored = self.blobs.place(digest, data)
            new_blob = NewBlob(digest, BlobLocation(tier=location.tier, volume_id=location.volume_id), stored)
        else:
            new_blob = NewBlob(digest, blob.location, blob.stored_bytes)
        if not still_wanted():
            raise Unavailable("the caller went away before the store was committed; nothing indexed")
        outcome = self.catalog.add_instance(parsed, new_blob, self._clock())
        message = "stored" if outcome is AddOutcome.STORED else "identical instance already stored"
        return StoreResult(outcome, parsed, digest, message)

    def _known_instance(self, sop_uid: str) -> InstanceRecord | None:
        with self.index.read() as txn:
            value = txn.get(sop_uid.encode(), db=self.index.db("instances"))
        return None if value is None else decode(InstanceRecord, value)

    def _repeat(self, parsed: ParsedInstance, known: InstanceRecord, digest: Digest) -> StoreResult:
        if known.digest == digest.hash:
            return StoreResult(AddOutcome.DUPLICATE, parsed, digest, "identical instance already stored")
        raise Conflict(
            f"SOP Instance UID {parsed.sop_instance_uid} is already stored with different content "
            f"(stored blake3 {known.digest.hex()}, received {digest.hex}); the stored version is "
            "kept. Send a corrected object under a new SOP Instance UID."
        )

    # -- find -------------------------------------------------------------

    def find(self, query: Query, page_size: int, page_token: str) -> tuple[list[Match], str]:
        return query_module.find(self.index, query, self._page_size(page_size), page_token)

    def patient_studies(self, patient_id: str, issuer: str, page_size: int, page_token: str) -> tuple[list[Match], str]:
        if not patient_id:
            raise InvalidInput("patient_id is required")
        query = Query(Level.STUDY, patient_id=patient_id, issuer_of_patient_id=issuer)
        return self.find(query, page_size, page_token)

    def _page_size(self, requested: int) -> int:
        limits = self.config.limits
        if requested < 0:
            raise InvalidInput("page_size must not be negative")
        return min(requested or limits.default_page_size, limits.max_page_size)

    # -- retrieve ---------------------------------------------------------

    def instance(self, sop_uid: str) -> tuple[InstanceRecord, BlobRecord]:
        return self.catalog.instance(uid.check(sop_uid, "sop_instance_uid"))

    def series_instances(self, series_uid: str) -> list[tuple[InstanceRecord, BlobRecord]]:
        return self.catalog.series_instances(uid.check(series_uid, "series_instance_uid"))

    def study_instances(self, study_uid: str) -> list[tuple[InstanceRecord, BlobRecord]]:
        return self.catalog.study_instances(uid.check(study_uid, "study_instance_uid"))

    def open_blob(self, blob: BlobRecord) -> BlobReader:
        digest = Digest(DigestFunction(blob.digest_function), blob.digest, blob.size_bytes)
        hint = Location(blob.location.tier, blob.location.volume_id)
        return self.blobs.open(digest, hint)

    def study_metadata(self, study_uid: str) -> Iterator[tuple[str, str]]:
        """(SOP Instance UID, DICOM JSON) for each instance, reading headers only."""
        for instance, blob in self.study_instances(study_uid):
            reader = self.open_blob(blob)
            try:
                yield instance.sop_instance_uid, json_model.instance_json(
                    reader, instance.study_instance_uid, instance.series_instance_uid,
                    instance.sop_instance_uid,
                )
            finally:
                reader.close()

    # -- health -----------------------------------------------------------

    def health(self) -> ApplianceHealth:
        volumes = [self._volume_health(v) for v in self.blobs.volumes]
        index = self.index.stats()
        reasons = [f"volume {v.path}: {v.reason}" for v in volumes if v.state != "healthy"]
        state = "healthy"
        if reasons:
            state = "warning"
        if not any(v.accepts_writes for v in volumes):
            state = "critical"
            reasons.insert(0, "no volume can take new data: stores will fail")
        if index["map_used"] > 0.9 * index["map_size"]:
            state = "critical" if state == "critical" else "warning"
            reasons.append(f"index is {100 * index['map_used'] / index['map_size']:.0f}% of index.map_size_bytes")
        return ApplianceHealth(state, reasons, __version__, time.monotonic() - self._started, index, volumes)

    @staticmethod
    def _volume_health(volume: Volume) -> VolumeHealth:
        try:
            usage = shutil.disk_usage(volume.path)
        except OSError as exc:
            return VolumeHealth(volume.tier, volume.path, "critical", f"unreachable: {exc.strerror}", 0, 0, 0, False)
        if volume.failed:
            state, reason = "critical", f"failed a write: {volume.failed}"
        elif usage.free < volume.reserve_bytes:
            state, reason = "warning", f"full: {usage.free} bytes free, reserve is {volume.reserve_bytes}"
        else:
            state, reason = "healthy", ""
        return VolumeHealth(
            volume.tier, volume.path, state, reason, usage.total, usage.used, usage.free,
            accepts_writes=state == "healthy",
        )
