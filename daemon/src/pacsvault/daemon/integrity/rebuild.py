"""``pacsvaultd --rebuild-index``: the index rebuilt from the blobs on every volume, daemon stopped.

Every blob is self-describing (header: codec, address, frames, wrapped data
key), and every blob is a complete DICOM file: read back with the keyring,
checked against its address, parsed, it gives back its instance's index
entries, its refcount and its tier. The steps:

1. Take the data-dir lock and every volume's (refused while a daemon runs).
2. Move the old index aside (``index.replaced-<time>``: kept, never deleted)
   and open a new one with the same encryption settings.
3. Register the volumes by their markers; read every blob file of every
   volume and every blob object of an object-store tier (threads:
   decryption, decompression, hashing and the store's answers release the
   GIL), and index them in batches of one transaction each.
4. With replication on, ask the peer which instances it holds: their blobs
   are marked replicated under the peer's names (so repairs work), the rest
   are queued for the peer; instances only the peer holds are counted (a
   ``pacsvault restore --from-peer`` brings them back).
5. Report what could not be rebuilt, and what no blob carries; of that, the
   legal holds and deletions the audit trail recorded are named with the
   commands that put them back (``trail_lifecycle``).
"""

from __future__ import annotations

import logging
import os

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from pacsvault.daemon.audit.chain import read_records
from pacsvault.daemon.audit.codec import PLAIN, SealedCodec
from pacsvault.daemon.config import Config
from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys, open_keys
from pacsvault.daemon.dicom.parse import ParsedInstance, parse
from pacsvault.daemon.errors import DataLoss, PacsvaultError
from pacsvault.daemon.first_use import check_encryption_settings
from pacsvault.daemon.index import reconcile
from pacsvault.daemon.index.catalog import AddOutcome, Catalog, NewBlob
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BlobLocation
from pacsvault.daemon.integrity import trail_lifecycle
from pacsvault.daemon.processes.locks import VOLUME_LOCK_NAME, DataDirLock
from pacsvault.daemon.replication.peer_client import PeerClient, mtls_credentials
from pacsvault.daemon.storage.blob_access import read_all
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.storage.compressing import FramedReader
from pacsvault.daemon.storage.memory import BytesReader
from pacsvault.daemon.storage.object_volume import ObjectStoreVolume
from pacsvault.daemon.storage.tiered import TieredBlobStore, Volume
from pacsvault.daemon.tiering.volumes import open_store, register_configured

log = logging.getLogger(__name__)
BATCH = 500
# What an index holds that no blob carries: named in every report.
NOT_FROM_BLOBS = (
    "share grants and access tokens (create them again)",
    "certificate and token revocations (revoke them again)",
    "pins and pending promotions, and the record of reads that orders demotion",
    "legal holds (place them again: the audit trail's holds in force are listed above, with the commands)",
    "the trash: studies deleted but not yet purged are back as live studies (the audit trail's deletions "
    "are listed above, with the commands)",
    "the replica records this appliance kept for its peer (ask the peer to run `pacsvault replication reseed`)",
    "the audit checkpoints the peer sent as a witness, and key-rotation progress (the next rotation re-wraps)",
    "when each instance was first stored (taken from its blob file's time)",
)


@dataclass
class RebuildReport:
    blobs_read: int = 0
    instances_indexed: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    # path -> why it could not be indexed (the file is left as it is; `pacsvault check` lists it).
    not_rebuilt: dict[str, str] = field(default_factory=dict)
    second_copies: int = 0
    replicated: int = 0
    queued_for_peer: int = 0
    only_at_peer: int = 0
    peer_note: str = ""
    old_index: str = ""
    # What the audit trail says must be done again (holds, deletions): see trail_lifecycle.
    from_trail: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.instances_indexed / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        out = [f"index rebuilt: {self.instances_indexed} instances from {self.blobs_read} blobs in "
               f"{self.seconds:.1f}s ({self.rate:.0f} instances/s); the old index is kept at {self.old_index}"]
        if self.second_copies:
            out.append(f"{self.second_copies} blobs were found twice; the second copies are orphans "
                       "(`pacsvault check --repair` removes them)")
        for path, why in sorted(self.not_rebuilt.items()):
            out.append(f"NOT REBUILT: {path}: {why}")
        if self.peer_note:
            out.append(self.peer_note)
        out += self.from_trail
        out.append("not in any blob, so not rebuilt: " + "; ".join(NOT_FROM_BLOBS))
        return out


@dataclass(frozen=True)
class _Source:
    """Where one blob's stored form is read from: a file of a volume, or an object of an object store."""
    name: str  # for the report: the file's path, or the tier and object key
    address_hex: str  # what the blob is named by
    load: Callable[[], bytes]
    written_at: float


@dataclass(frozen=True)
class _Read:
    name: str
    volume: Volume
    parsed: ParsedInstance | None = None
    blob: NewBlob | None = None
    stored_at: float = 0.0
    error: str = ""


def rebuild_index(config: Config, workers: int = 4, clock: Callable[[], float] = time.time) -> RebuildReport:
    """Rebuilds the index of a stopped daemon's data dir; see the module docstring."""
    data_dir = Path(config.data_dir).resolve()
    lock = DataDirLock(data_dir)
    lock.acquire()  # a daemon running on this data dir is refused here, naming it
    volume_locks: list[DataDirLock] = []
    try:
        for tier in config.tiers:
            for path in tier.volumes:
                volume_lock = DataDirLock(config.resolve(path), VOLUME_LOCK_NAME, what="tier volume")
                volume_lock.acquire()
                volume_locks.append(volume_lock)
        return _rebuild(config, workers, clock)
    finally:
        for held in volume_locks:
            held.release()
        lock.release()


def _rebuild(config: Config, workers: int, clock: Callable[[], float]) -> RebuildReport:
    report = RebuildReport()
    started = time.monotonic()
    report.old_index = _set_aside(config.resolve(config.index.path), clock)
    keys = open_keys(config)
    index = IndexEnvironment(config.resolve(config.index.path), map_size=config.index.map_size_bytes,
                             max_batch=config.index.max_batch, keys=keys,
                             reserve_percent=config.index.reserve_percent)
    try:
        check_encryption_settings(index, keys)
        refused = register_configured(config, index, clock, rebuilding=True)
        for volume in refused:
            report.not_rebuilt[volume.path] = f"volume refused: {volume.reason}"
        store = open_store(config, index, BlobSealer(keys) if keys else None, refused)
        catalog = Catalog(index, replicate=False)
        _index_blobs(store, catalog, report, workers)
        if config.replication.enabled:
            _reconcile(config, index, report, clock)
        report.from_trail = _from_trail(config, keys, catalog)
    finally:
        index.close()
    report.seconds = time.monotonic() - started
    return report


def _from_trail(config: Config, keys: ApplianceKeys | None, catalog: Catalog) -> list[str]:
    """The holds and deletions the audit trail recorded; the index is rebuilt whatever the trail holds."""
    path = config.resolve(config.audit.path)
    try:
        recorded = trail_lifecycle.read(read_records(path, SealedCodec(keys.audit_store) if keys else PLAIN))
    except (OSError, ValueError) as exc:
        return [f"the audit trail {path} could not be read ({exc}): its legal holds and deletions are not listed"]
    return trail_lifecycle.advice(recorded, catalog)


def _set_aside(path: Path, clock: Callable[[], float]) -> str:
    if not path.exists() or not any(path.iterdir()):
        return "(none)"
    aside = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S', time.localtime(clock()))}")
    os.replace(path, aside)
    return str(aside)


def _index_blobs(store: TieredBlobStore, catalog: Catalog, report: RebuildReport, workers: int) -> None:
    # In the order they were written: a patient's or study's record takes its attributes from its first
    # instance, as at ingest (instances of one patient need not agree on, say, a birth date).
    sources = sorted(((volume, source) for volume in store.volumes for source in _sources(volume, report)),
                     key=lambda item: item[1].written_at)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rebuild") as pool:
        batch: list[_Read] = []
        for read in pool.map(lambda item: _read(store, *item), sources):
            report.blobs_read += 1
            report.bytes_read += read.blob.stored_bytes if read.blob else 0
            batch.append(read)
            if len(batch) >= BATCH:
                _commit(catalog, batch, report)
                batch = []
        _commit(catalog, batch, report)


def _sources(volume: Volume, report: RebuildReport) -> list[_Source]:
    if isinstance(volume, ObjectStoreVolume):
        objects = volume.objects
        try:
            listed = objects.stored_blobs()
        except PacsvaultError as exc:
            report.not_rebuilt[volume.path] = f"object store not listed: {exc}"
            return []
        return [_Source(f"{volume.tier}:{key}", key.rsplit("/", 1)[-1],
                        lambda key=key: objects.read_object(key), written_at)  # type: ignore[misc]
                for key, written_at in listed]
    return [_Source(str(path), path.name, path.read_bytes, _mtime(path))
            for path in _blob_files(Path(volume.path))]


def _commit(catalog: Catalog, batch: list[_Read], report: RebuildReport) -> None:
    good = [r for r in batch if not r.error]
    for failed in (r for r in batch if r.error):
        report.not_rebuilt[failed.name] = failed.error
    if not good:
        return
    outcomes = catalog.add_instances([(r.parsed, r.blob, r.stored_at) for r in good])  # type: ignore[misc]
    for read, outcome in zip(good, outcomes, strict=True):
        if outcome is AddOutcome.STORED:
            report.instances_indexed += 1
        elif outcome is AddOutcome.DUPLICATE:
            report.second_copies += 1
        else:
            report.not_rebuilt[read.name] = f"{type(outcome).__name__}: {outcome}"


def _read(store: TieredBlobStore, volume: Volume, source: _Source) -> _Read:
    """One blob: opened with the keyring, checked against its name and address, parsed."""
    try:
        stored = source.load()
        reader = FramedReader(BytesReader(stored), source.name, store.sealer)
        header = reader.header
        data = read_all(reader)
        if store.address(data) != header.digest or header.digest.hex != source.address_hex:
            raise DataLoss("its bytes do not match its address")
        sealed_under = 0
        if header.sealed and store.sealer is not None:
            newest = max((s for s in reader.slots if s is not None), key=lambda s: s.generation)
            sealed_under = store.sealer.version_of(newest)
        blob = NewBlob(header.digest, BlobLocation(tier=volume.tier, volume_id=volume.volume_id), len(stored),
                       sealed_under=sealed_under)
        return _Read(source.name, volume, parse(data), blob, source.written_at)
    except (PacsvaultError, OSError, ValueError) as exc:
        return _Read(source.name, volume, error=f"{type(exc).__name__}: {exc}")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _blob_files(root: Path) -> Iterator[Path]:
    for directory, _, names in sorted(os.walk(root / "blobs")):
        for name in sorted(names):
            if len(name) == 64:
                yield Path(directory) / name


def _reconcile(config: Config, index: IndexEnvironment, report: RebuildReport, clock: Callable[[], float]) -> None:
    r = config.replication
    peer = PeerClient(r.peer_address, mtls_credentials(*map(config.resolve, (r.ca_file, r.cert_file, r.key_file))))
    try:
        names: dict[str, tuple[bytes, int]] = {}
        token = ""
        while True:
            records, token = peer.list_records(token, page_size=5000)
            for record in records:
                names[record.sop_instance_uid] = (bytes.fromhex(record.digest.hash), record.digest.size_bytes)
            if not token:
                break
    except grpc.RpcError as exc:
        report.queued_for_peer = reconcile.queue_missing(index, set(), clock())
        report.peer_note = (f"the peer {r.peer_name} could not be asked ({exc.code().name}); every instance is "
                            "queued to be sent to it again")
        return
    finally:
        peer.close()
    report.replicated = reconcile.mark_replicated(index, names)
    report.queued_for_peer = reconcile.queue_missing(index, set(names), clock())
    report.only_at_peer = len(names) - report.replicated
    report.peer_note = (f"reconciled with {r.peer_name}: {report.replicated} instances it holds, "
                        f"{report.queued_for_peer} queued to send to it"
                        + (f", {report.only_at_peer} only it holds (bring them back with `pacsvault restore "
                           "--from-peer`)" if report.only_at_peer else ""))


