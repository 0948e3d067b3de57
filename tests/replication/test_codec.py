"""ErasureCodec and the shard format: every loss pattern, every kind of bad shard."""

from __future__ import annotations

import itertools

import pytest
from pyeclib import ec_iface

from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.errors import DataLoss, InvalidInput
from pacsvault.daemon.replication import shard_format
from pacsvault.daemon.replication.codec import LIBRARY_VERSION, ErasureCodec, verify_shard
from pacsvault.daemon.replication.shard_format import ShardHeader
from tests.replication.helpers import blob, flip

# Every (k, m) here was checked to work with isa_l_rs_cauchy; 4+2 is the configured default.
CODES = [(4, 2), (3, 3), (8, 4), (6, 6)]


def test_default_code_is_4_plus_2_cauchy() -> None:
    codec = ErasureCodec()
    assert (codec.k, codec.m, codec.scheme) == (4, 2, "isa_l_rs_cauchy")
    assert codec.library_version == LIBRARY_VERSION and "pyeclib" in LIBRARY_VERSION


@pytest.mark.parametrize(("k", "m"), CODES)
def test_every_loss_pattern_up_to_m_decodes_byte_identical(k: int, m: int) -> None:
    codec = ErasureCodec(k, m)
    digest, data = blob(10_007, seed=k * 100 + m)  # not a multiple of k: padding is exercised
    raws = [s.raw for s in codec.encode(digest, data)]
    assert len(raws) == k + m
    for lost_count in range(m + 1):
        for lost in itertools.combinations(range(k + m), lost_count):
            kept = [raw for index, raw in enumerate(raws) if index not in lost]
            assert codec.decode(digest, kept) == data, f"lost {lost}"


@pytest.mark.parametrize(("k", "m"), CODES)
def test_every_loss_pattern_of_m_plus_1_is_data_loss(k: int, m: int) -> None:
    codec = ErasureCodec(k, m)
    digest, data = blob(3000, seed=7)
    raws = [s.raw for s in codec.encode(digest, data)]
    for lost in itertools.combinations(range(k + m), m + 1):
        kept = [raw for index, raw in enumerate(raws) if index not in lost]
        with pytest.raises(DataLoss, match=f"{k - 1} good shards, {k} of {k + m} needed"):
            codec.decode(digest, kept)


def test_a_flipped_bit_in_any_shard_payload_is_dropped_and_decode_stays_right() -> None:
    codec = ErasureCodec()
    digest, data = blob(50_000, seed=3)
    shards = codec.encode(digest, data)
    header_size = shards[0].header.encoded_size
    payload_size = shards[0].header.payload_length
    # In pyeclib's own fragment header (first 80 bytes of the payload), mid-payload, and the last byte.
    for index in range(codec.total):
        for offset in (0, 10, 79, 80, payload_size // 2, payload_size - 1):
            raws = [s.raw for s in shards]
            raws[index] = flip(raws[index], header_size + offset, bit=offset % 8)
            good = codec.good_shards(digest, raws)
            assert index not in good
            assert codec.decode(digest, raws) == data


def test_pyeclib_alone_would_decode_a_flipped_bit_into_wrong_bytes() -> None:
    # Why our BLAKE3 exists: this is the pitfall measured in ARCHITECTURE.md.
    driver = ec_iface.ECDriver(k=4, m=2, ec_type="isa_l_rs_cauchy")
    _, data = blob(50_000, seed=3)
    fragments = driver.encode(data)
    fragments[0] = flip(fragments[0], 1000)
    assert driver.decode(fragments[:4]) != data


def test_flipped_bits_in_m_plus_1_shards_is_data_loss() -> None:
    codec = ErasureCodec()
    digest, data = blob(20_000, seed=4)
    shards = codec.encode(digest, data)
    header_size = shards[0].header.encoded_size
    for damaged in itertools.combinations(range(codec.total), codec.m + 1):
        bad = [flip(s.raw, header_size + 500) if s.index in damaged else s.raw for s in shards]
        with pytest.raises(DataLoss, match="3 good shards"):
            codec.decode(digest, bad)


def test_shards_of_another_blob_or_code_are_dropped() -> None:
    codec = ErasureCodec()
    digest, data = blob(9000, seed=5)
    other_digest, other_data = blob(9000, seed=6)
    mine = [s.raw for s in codec.encode(digest, data)]
    theirs = [s.raw for s in codec.encode(other_digest, other_data)]
    # Same blob, other k and m: same digest, incompatible shards.
    other_code = [s.raw for s in ErasureCodec(3, 3).encode(digest, data)]
    with pytest.raises(DataLoss, match="3 good shards"):
        codec.decode(digest, theirs[:3] + mine[3:6] + other_code)
    assert codec.decode(digest, theirs + other_code + mine[2:]) == data
    assert set(codec.good_shards(digest, theirs + other_code + mine[2:])) == {2, 3, 4, 5}


def test_damage_anywhere_in_a_header_drops_the_shard() -> None:
    codec = ErasureCodec()
    digest, data = blob(4000, seed=8)
    shards = codec.encode(digest, data)
    raws = [s.raw for s in shards]
    header_size = shards[0].header.encoded_size
    for position in range(header_size):
        damaged = [flip(raws[0], position, bit=position % 8), *raws[1:]]
        assert 0 not in codec.good_shards(digest, damaged), f"byte {position}"
        assert codec.decode(digest, damaged) == data
    for junk in (b"", b"PVSH", raws[0][: header_size - 1], raws[0][:-1], raws[0] + b"x", b"\0" * 500):
        assert 0 not in codec.good_shards(digest, [junk, *raws[1:]])


def test_repeated_indexes_count_once() -> None:
    codec = ErasureCodec()
    digest, data = blob(4000, seed=9)
    raws = [s.raw for s in codec.encode(digest, data)]
    with pytest.raises(DataLoss, match=r"2 good shards.*repeats index 0"):
        codec.decode(digest, [raws[0]] * 4 + [raws[1]])


@pytest.mark.parametrize("size", [0, 1, 7, 4 * 1024 * 1024 + 3])
def test_sizes_round_trip_with_m_shards_lost(size: int) -> None:
    codec = ErasureCodec()
    digest, data = blob(size, seed=size)
    shards = codec.encode(digest, data)
    assert len(shards) == 6
    assert codec.decode(digest, shards[2:]) == data
    assert codec.decode(digest, [shards[0], shards[3], shards[4], shards[5]]) == data
    with pytest.raises(DataLoss):
        codec.decode(digest, shards[3:])


def test_empty_blob_shards_still_name_their_blob() -> None:
    codec = ErasureCodec()
    digest, _ = blob(0)
    shards = codec.encode(digest, b"")
    assert all(s.header.payload_length == 0 and s.header.digest == digest for s in shards)
    other, _ = blob(0, seed=2)  # same bytes, same digest: still decodes
    assert codec.decode(other, shards) == b""


def test_decoded_bytes_that_miss_the_digest_are_data_loss_never_returned() -> None:
    # Shards that verify individually but belong to bytes other than the digest claims.
    codec = ErasureCodec()
    digest, data = blob(6000, seed=10)
    liar = Digest(DigestFunction.BLAKE3, bytes(32), digest.size_bytes)
    forged = []
    for shard in codec.encode(digest, data):
        header = shard.header
        forged.append(shard_format.build(
            ShardHeader(header.scheme, header.k, header.m, header.library_version, liar, header.index,
                        header.payload_length, header.payload_blake3), bytes(shard.payload)).raw)
    with pytest.raises(DataLoss, match="do not match the digest"):
        codec.decode(liar, forged)


def test_encode_refuses_bytes_that_do_not_match_the_digest() -> None:
    digest, data = blob(100)
    with pytest.raises(InvalidInput):
        ErasureCodec().encode(digest, data[:-1] + b"x")


@pytest.mark.parametrize(("k", "m", "scheme", "message"), [
    (0, 2, "isa_l_rs_cauchy", "k >= 1"),
    (4, 0, "isa_l_rs_cauchy", "m >= 1"),
    (20, 13, "isa_l_rs_cauchy", "at most 32"),
    (4, 2, "isa_l_rs_vand", "not supported"),
])
def test_bad_codes_are_refused_with_a_clear_message(k: int, m: int, scheme: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        ErasureCodec(k, m, scheme)


def test_verify_shard_returns_the_header() -> None:
    codec = ErasureCodec(3, 2)
    digest, data = blob(1234)
    shard = codec.encode(digest, data)[4]
    header = verify_shard(shard.raw)
    assert header == shard.header
    assert (header.scheme, header.k, header.m, header.index, header.digest) == ("isa_l_rs_cauchy", 3, 2, 4, digest)
    assert header.library_version == LIBRARY_VERSION
    assert shard_format.parse_header(shard.raw) == header
    with pytest.raises(DataLoss, match="BLAKE3"):
        verify_shard(flip(shard.raw, len(shard.raw) - 1))


def test_shard_objects_are_reverified_from_their_bytes() -> None:
    codec = ErasureCodec()
    digest, data = blob(5000, seed=11)
    shards = codec.encode(digest, data)
    lying = shard_format.Shard(shards[0].header, flip(shards[0].raw, len(shards[0].raw) - 1))
    assert 0 not in codec.good_shards(digest, [lying, *shards[1:]])


def test_rebuild_reproduces_lost_shards_exactly() -> None:
    codec = ErasureCodec()
    digest, data = blob(30_000, seed=12)
    raws = [s.raw for s in codec.encode(digest, data)]
    for lost in itertools.combinations(range(codec.total), codec.m):
        kept = [raw for index, raw in enumerate(raws) if index not in lost]
        rebuilt = codec.rebuild(digest, kept, lost)
        assert rebuilt == {index: raws[index] for index in lost}
    with pytest.raises(DataLoss):
        codec.rebuild(digest, raws[:3], [3, 4, 5])
    with pytest.raises(InvalidInput):
        codec.rebuild(digest, raws, [6])
