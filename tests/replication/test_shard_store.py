"""ShardStore on real directories: placement, durable shards, resumable uploads."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from pacsvault.daemon.digest import Digest
from pacsvault.daemon.errors import InvalidInput
from pacsvault.daemon.replication.codec import ErasureCodec
from pacsvault.daemon.replication.shard_format import Shard
from pacsvault.daemon.replication.shard_store import ShardStore
from tests.replication.helpers import blob, flip


def volumes(tmp_path: Path, n: int) -> list[Path]:
    return [tmp_path / f"vol{i}" for i in range(n)]


def encoded(seed: int, size: int = 20_000, codec: ErasureCodec | None = None) -> tuple[Digest, list[Shard]]:
    digest, data = blob(size, seed)
    return digest, (codec or ErasureCodec()).encode(digest, data)


def where(store: ShardStore, digest: Digest, index: int) -> list[Path]:
    """Volumes holding shard ``index`` of ``digest``."""
    return [v for v in store.volumes if store.path_of(digest, index, v).exists()]


def test_put_get_indexes_delete(tmp_path: Path) -> None:
    store = ShardStore(volumes(tmp_path, 3))
    digest, shards = encoded(1)
    for shard in shards:
        assert store.put(digest, shard.index, shard.raw) is True
    assert store.put(digest, 0, shards[0].raw) is False  # already there: answered at once
    assert store.indexes(digest) == [0, 1, 2, 3, 4, 5]
    assert all(store.get(digest, s.index) == s.raw for s in shards)
    assert store.get(digest, 9) is None
    assert store.delete(digest) == 6
    assert store.indexes(digest) == [] and store.get(digest, 0) is None


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 7])
def test_placement_spreads_one_blobs_shards_over_volumes(tmp_path: Path, n: int) -> None:
    store = ShardStore(volumes(tmp_path, n))
    for seed in range(12):
        digest, shards = encoded(seed, size=300)
        for shard in shards:
            store.put(digest, shard.index, shard.raw)
        per_volume = [sum(1 for s in shards if where(store, digest, s.index) == [v]) for v in store.volumes]
        assert sum(per_volume) == 6
        # A lost volume costs any blob at most ceil((k+m)/n) shards.
        assert max(per_volume) == math.ceil(6 / n)


def test_shards_stay_readable_after_a_volume_is_added(tmp_path: Path) -> None:
    store = ShardStore(volumes(tmp_path, 2))
    digest, shards = encoded(2)
    for shard in shards:
        store.put(digest, shard.index, shard.raw)
    grown = ShardStore(volumes(tmp_path, 5))  # placement changes; old shards must still be found
    assert [grown.get(digest, s.index) for s in shards] == [s.raw for s in shards]
    assert grown.put(digest, 3, shards[3].raw) is False


def test_put_refuses_bad_or_misnamed_shards(tmp_path: Path) -> None:
    store = ShardStore(volumes(tmp_path, 2))
    digest, shards = encoded(3)
    other, _ = blob(10, seed=99)
    with pytest.raises(InvalidInput, match="does not verify"):
        store.put(digest, 0, flip(shards[0].raw, len(shards[0].raw) - 1))
    with pytest.raises(InvalidInput, match="expected 1"):
        store.put(digest, 1, shards[0].raw)
    with pytest.raises(InvalidInput, match="expected 0"):
        store.put(other, 0, shards[0].raw)
    with pytest.raises(InvalidInput, match="index"):
        store.put(digest, 40, shards[0].raw)
    assert store.indexes(digest) == [] and list(store.iter_keys()) == []


def test_listing_is_ordered_and_resumes_after_a_token(tmp_path: Path) -> None:
    store = ShardStore(volumes(tmp_path, 3))
    digests = []
    for seed in range(8):
        digest, shards = encoded(seed, size=100 + seed)
        digests.append(digest)
        for shard in shards[seed % 3 :]:  # some blobs lack some shards; still listed once
            store.put(digest, shard.index, shard.raw)
    keys = list(store.iter_keys())
    assert [k.hex for k in keys] == sorted(d.hex for d in digests)
    assert list(store.iter_keys(after=keys[4].token)) == keys[5:]
    assert list(store.iter_keys(after=keys[-1].token)) == []
    assert sorted(store.iter_digests(), key=lambda d: d.hex) == sorted(digests, key=lambda d: d.hex)


def test_resumable_upload_survives_a_crash_without_duplicates(tmp_path: Path) -> None:
    vols = volumes(tmp_path, 3)
    digest, shards = encoded(4, size=100_000)
    raw = shards[2].raw
    seen: list[int] = []
    store = ShardStore(vols)
    assert store.committed_size(digest, 2) == 0
    seen.append(store.write_at(digest, 2, 0, raw[:4000]))
    seen.append(store.write_at(digest, 2, 4000, raw[4000:9000]))
    del store  # the "crash": nothing in memory survives
    store = ShardStore(vols)
    seen.append(store.committed_size(digest, 2))
    assert seen[-1] == 9000
    # The sender never saw the last ack and resends from 4000: the overlap is skipped.
    seen.append(store.write_at(digest, 2, 4000, raw[4000:12_000]))
    seen.append(store.write_at(digest, 2, 5000, raw[5000:8000]))  # wholly old: a no-op
    with pytest.raises(InvalidInput, match="gap"):
        store.write_at(digest, 2, 20_000, raw[20_000:])
    seen.append(store.write_at(digest, 2, 12_000, raw[12_000:]))
    header = store.finish(digest, 2)
    seen.append(store.committed_size(digest, 2))
    assert header.index == 2 and header.digest == digest
    assert store.get(digest, 2) == raw
    assert seen == sorted(seen) and seen[-1] == len(raw)  # committed_size never went down
    assert store.write_at(digest, 2, 0, raw) == len(raw)  # re-upload of a stored shard: at once
    assert store.finish(digest, 2) == header
    assert all(not list((v / "partial").iterdir()) for v in vols)
    assert sum(len(where(store, digest, i)) for i in range(6)) == 1  # exactly one copy


def test_a_corrupted_partial_is_rejected_at_finish_and_removed(tmp_path: Path) -> None:
    store = ShardStore(volumes(tmp_path, 2))
    digest, shards = encoded(5, size=200_000)
    raw = shards[1].raw
    store.write_at(digest, 1, 0, raw[:30_000])
    partial = next(p for v in store.volumes for p in (v / "partial").iterdir())
    partial.write_bytes(flip(partial.read_bytes(), 20_000))  # bit rot while the sender was away
    store.write_at(digest, 1, 30_000, raw[30_000:])
    with pytest.raises(InvalidInput, match="BLAKE3"):
        store.finish(digest, 1)
    assert not partial.exists()
    assert store.committed_size(digest, 1) == 0 and store.get(digest, 1) is None


def test_finish_refuses_a_shard_uploaded_under_the_wrong_index_or_truncated(tmp_path: Path) -> None:
    store = ShardStore(volumes(tmp_path, 2))
    digest, shards = encoded(6)
    store.write_at(digest, 3, 0, shards[0].raw)
    with pytest.raises(InvalidInput, match="expected 3"):
        store.finish(digest, 3)
    store.write_at(digest, 4, 0, shards[4].raw[:-10])
    with pytest.raises(InvalidInput):
        store.finish(digest, 4)
    with pytest.raises(InvalidInput, match="no upload"):
        store.finish(digest, 5)
    assert store.indexes(digest) == []


def test_clean_partials_removes_only_old_leftovers(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = ShardStore(volumes(tmp_path, 2), clock=lambda: now[0])
    digest, shards = encoded(7)
    store.write_at(digest, 0, 0, shards[0].raw[:100])
    store.write_at(digest, 1, 0, shards[1].raw[:100])
    old = store.volume_for(digest, 0) / "partial" / f"blake3-{digest.hex}.0"
    os.utime(old, (now[0] - 7200, now[0] - 7200))
    os.utime(store.volume_for(digest, 1) / "partial" / f"blake3-{digest.hex}.1", (now[0] - 60, now[0] - 60))
    assert store.clean_partials(older_than_s=3600) == 1
    assert store.committed_size(digest, 0) == 0 and store.committed_size(digest, 1) == 100


def test_quarantine_keeps_the_bad_shard_and_the_reason(tmp_path: Path) -> None:
    store = ShardStore(volumes(tmp_path, 2))
    digest, shards = encoded(8)
    store.put(digest, 2, shards[2].raw)
    target = store.quarantine(digest, 2, "scrub: BLAKE3 mismatch")
    assert target is not None and target.read_bytes() == shards[2].raw
    assert target.with_name(target.name + ".reason").read_text() == "scrub: BLAKE3 mismatch\n"
    assert store.get(digest, 2) is None and store.quarantine(digest, 2, "again") is None
