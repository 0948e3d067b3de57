"""ShardScrubber on a real ShardStore: finds, rebuilds, reports, resumes, paces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pacsvault.daemon.digest import Digest
from pacsvault.daemon.replication.codec import ErasureCodec
from pacsvault.daemon.replication.scrub import ShardScrubber
from pacsvault.daemon.replication.shard_store import ShardStore
from tests.replication.helpers import blob, flip


class FakeClock:
    """A clock that only moves when the scrubber sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def store(tmp_path: Path) -> ShardStore:
    return ShardStore([tmp_path / f"vol{i}" for i in range(3)])


def fill(store: ShardStore, count: int, size: int = 30_000) -> dict[Digest, bytes]:
    """Stores ``count`` blobs as 4+2 shards; returns their original bytes."""
    codec, blobs = ErasureCodec(), {}
    for seed in range(count):
        digest, data = blob(size + seed, seed=seed)
        for shard in codec.encode(digest, data):
            store.put(digest, shard.index, shard.raw)
        blobs[digest] = data
    return blobs


def scrubber(store: ShardStore, tmp_path: Path, **kwargs: object) -> ShardScrubber:
    return ShardScrubber(store, cursor_path=tmp_path / "scrub-cursor.json", **kwargs)  # type: ignore[arg-type]


def shard_file(store: ShardStore, digest: Digest, index: int) -> Path:
    return next(store.path_of(digest, index, v) for v in store.volumes if store.path_of(digest, index, v).exists())


def all_verify(store: ShardStore, digest: Digest, data: bytes) -> bool:
    codec = ErasureCodec()
    raws = [store.get(digest, index) for index in range(6)]
    return all(r is not None and codec.check_shard(digest, r, i) for i, r in enumerate(raws)) \
        and codec.decode(digest, [r for r in raws if r]) == data


def test_scrub_rebuilds_a_deleted_and_a_bit_flipped_shard(store: ShardStore, tmp_path: Path) -> None:
    blobs = fill(store, 3)
    first, second, _ = blobs
    originals = {(d, i): store.get(d, i) for d in (first, second) for i in range(6)}
    shard_file(store, first, 1).unlink()
    flipped = shard_file(store, second, 4)
    flipped.write_bytes(flip(flipped.read_bytes(), 5000))

    report = scrubber(store, tmp_path).run_once(max_blobs=100)

    assert (report.blobs_checked, report.shards_missing, report.shards_bad, report.shards_rebuilt) == (3, 1, 1, 2)
    assert report.unrecoverable == [] and report.errors == [] and report.pass_complete
    for digest, data in blobs.items():
        assert all_verify(store, digest, data)
    assert {(d, i): store.get(d, i) for d, i in originals} == originals  # byte-identical to the lost ones
    quarantined = [p for v in store.volumes for p in (v / "quarantine").iterdir()]
    assert len(quarantined) == 2 and any("BLAKE3" in p.read_text() for p in quarantined if p.suffix == ".reason")
    again = scrubber(store, tmp_path).run_once(max_blobs=100)
    assert (again.shards_bad, again.shards_missing, again.shards_rebuilt) == (0, 0, 0)


def test_scrub_reports_an_unrecoverable_blob_and_repairs_the_rest(store: ShardStore, tmp_path: Path) -> None:
    blobs = fill(store, 3)
    lost, damaged, _ = blobs
    for index in (0, 2, 5):  # m + 1 gone
        shard_file(store, lost, index).unlink()
    shard_file(store, damaged, 0).unlink()
    survivors = {index: store.get(lost, index) for index in (1, 3, 4)}

    report = scrubber(store, tmp_path).run_once(max_blobs=100)

    assert report.unrecoverable == [str(lost)]
    assert report.blobs_checked == 3 and report.shards_rebuilt == 1
    assert all_verify(store, damaged, blobs[damaged])
    assert {index: store.get(lost, index) for index in (1, 3, 4)} == survivors  # left as found


def test_scrub_reports_a_blob_with_no_readable_header(store: ShardStore, tmp_path: Path) -> None:
    blobs = fill(store, 1)
    (digest,) = blobs
    for index in range(6):
        shard_file(store, digest, index).write_bytes(b"junk")
    report = scrubber(store, tmp_path).run_once()
    assert report.unrecoverable == [f"blake3/{digest.hex} (no intact shard header)"]


def test_scrub_resumes_from_its_cursor_across_instances(store: ShardStore, tmp_path: Path) -> None:
    blobs = fill(store, 5, size=2000)
    tokens = [key.token for key in store.iter_keys()]
    order = {f"blake3/{d.hex}": d for d in blobs}

    first = scrubber(store, tmp_path).run_once(max_blobs=2)
    assert (first.blobs_checked, first.cursor, first.pass_complete) == (2, tokens[1], False)
    assert json.loads((tmp_path / "scrub-cursor.json").read_text())["after"] == tokens[1]

    # Damage one blob already passed and one still ahead: only the one ahead is seen now.
    shard_file(store, order[tokens[0]], 3).unlink()
    shard_file(store, order[tokens[2]], 3).unlink()
    second = scrubber(ShardStore(store.volumes), tmp_path).run_once(max_blobs=2)
    assert (second.blobs_checked, second.cursor, second.shards_rebuilt) == (2, tokens[3], 1)

    third = scrubber(store, tmp_path).run_once(max_blobs=2)
    assert (third.blobs_checked, third.pass_complete, third.cursor) == (1, True, None)
    fourth = scrubber(store, tmp_path).run_once(max_blobs=10)  # a new pass from the start
    assert (fourth.blobs_checked, fourth.shards_rebuilt) == (5, 1)


def test_an_unreadable_cursor_starts_over(store: ShardStore, tmp_path: Path) -> None:
    fill(store, 2, size=500)
    (tmp_path / "scrub-cursor.json").write_text("{not json")
    assert scrubber(store, tmp_path).run_once().blobs_checked == 2


def test_the_rate_limit_is_honoured(store: ShardStore, tmp_path: Path) -> None:
    fill(store, 4, size=40_000)
    clock = FakeClock()
    rate = 50_000.0
    report = scrubber(store, tmp_path, clock=clock, sleep=clock.sleep,
                      rate_limit_bytes_per_s=rate).run_once()
    largest_shard = max(len(store.get(d, i) or b"") for d in store.iter_digests() for i in range(6))
    # Every byte but the last read's was paid for before the next read.
    assert (report.bytes_read - largest_shard) / rate <= clock.now <= report.bytes_read / rate
    assert clock.now > 4  # about 240 kB at 50 kB/s

    unpaced = FakeClock()
    scrubber(store, tmp_path, clock=unpaced, sleep=unpaced.sleep).run_once()
    assert unpaced.sleeps == []
