"""Erasure coding of blobs into self-checking shards, and back.

A blob becomes k data + m parity shards with pyeclib. Two facts measured on
this hardware shape the code (see ARCHITECTURE.md):

- ``isa_l_rs_cauchy`` recovers every loss pattern of up to m shards;
  ``isa_l_rs_vand`` does not when m > 4, so it is not offered.
- pyeclib decodes a fragment with a flipped bit into wrong bytes without a
  word, so every shard carries our own BLAKE3 and a shard that fails it is
  dropped *before* decoding; the decoded blob is then checked against its
  digest, and a mismatch is ``DataLoss``, never wrong bytes.

pyeclib holds the GIL while it works: callers on an event loop or a gRPC
thread pool run these methods in an executor (the daemon's CPU seam).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import blake3
from pyeclib import ec_iface

from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.errors import DataLoss, InvalidInput
from pacsvault.daemon.replication import shard_format
from pacsvault.daemon.replication.shard_format import MAX_SHARDS, Shard, ShardHeader

DEFAULT_SCHEME = "isa_l_rs_cauchy"
# Only schemes measured to recover every loss pattern of up to m shards.
SUPPORTED_SCHEMES = frozenset({"isa_l_rs_cauchy"})
LIBRARY_VERSION = f"pyeclib {ec_iface.__version__}; liberasurecode {ec_iface.LIBERASURECODE_VERSION}"
_MAX_REASONS = 4


def verify_shard(raw: bytes | memoryview) -> ShardHeader:
    """Checks one shard on its own: intact header and a payload matching its BLAKE3.

    Returns:
        The shard's header.

    Raises:
        DataLoss: the shard is damaged.
    """
    return shard_format.parse(raw).header


class ErasureCodec:
    """k data + m parity shards of a blob with one pyeclib scheme.

    Args:
        k: data shards, at least 1.
        m: parity shards (the losses survived), at least 1.
        scheme: the pyeclib ec_type; only ``isa_l_rs_cauchy`` is accepted.

    Raises:
        InvalidInput: k, m or the scheme are not usable.
    """

    def __init__(self, k: int = 4, m: int = 2, scheme: str = DEFAULT_SCHEME) -> None:
        _validate(k, m, scheme)
        self.k, self.m, self.scheme = k, m, scheme
        self.library_version = LIBRARY_VERSION
        self._driver = ec_iface.ECDriver(k=k, m=m, ec_type=scheme)

    @property
    def total(self) -> int:
        """Shards per blob, k + m."""
        return self.k + self.m

    def __repr__(self) -> str:
        return f"ErasureCodec(k={self.k}, m={self.m}, scheme={self.scheme!r})"

    def encode(self, digest: Digest, data: bytes) -> list[Shard]:
        """Splits ``data`` into k + m shards, index order.

        Raises:
            InvalidInput: ``data`` does not match ``digest``; shards of the
                wrong bytes could never be decoded, so nothing is produced.
        """
        if len(data) != digest.size_bytes or not _digest_matches(digest, data):
            raise InvalidInput(f"blob bytes ({len(data)}) do not match digest {digest}")
        # Special case: an empty blob is k + m empty payloads without calling
        # pyeclib, because liberasurecode before 1.8 rejects zero-length input.
        # The headers still carry the digest, so empty shards are self-describing.
        fragments = self._driver.encode(data) if data else [b""] * self.total
        return [self._wrap(digest, index, bytes(fragment)) for index, fragment in enumerate(fragments)]

    def decode(self, digest: Digest, shards: Iterable[bytes | Shard]) -> bytes:
        """The blob from any k good shards of it.

        Every shard is re-verified from its bytes; damaged ones, those of
        another blob or code, and repeated indexes are dropped.

        Raises:
            DataLoss: fewer than k good shards (the message says how many and
                why the others were dropped), or the decoded bytes do not match
                ``digest``.
        """
        return self._decode_good(digest, self.good_shards(digest, shards))

    def check_shard(self, digest: Digest, raw: bytes | memoryview, index: int | None = None) -> Shard:
        """Verifies one shard and that it belongs to ``digest`` under this code.

        Args:
            digest: the blob the shard must belong to.
            raw: the shard's bytes.
            index: when given, the index the shard must carry.

        Raises:
            DataLoss: damaged, or a shard of another blob, code or index.
        """
        shard = shard_format.parse(raw)
        header = shard.header
        expected = (digest, self.k, self.m, self.scheme)
        if header.code != expected:
            raise DataLoss(f"shard {header.index} is of {header.digest} k={header.k} m={header.m} "
                           f"{header.scheme}, expected {digest} k={self.k} m={self.m} {self.scheme}")
        if index is not None and header.index != index:
            raise DataLoss(f"shard stored as index {index} carries index {header.index}")
        return shard

    def verify_shard(self, raw: bytes | memoryview) -> ShardHeader:
        """Same as the module-level ``verify_shard``."""
        return verify_shard(raw)

    def good_shards(self, digest: Digest, shards: Iterable[bytes | Shard]) -> dict[int, Shard]:
        """The shards that verify, by index, first one of each index kept.

        Raises:
            DataLoss: fewer than k of them.
        """
        good: dict[int, Shard] = {}
        dropped: list[str] = []
        for position, item in enumerate(shards):
            raw = item.raw if isinstance(item, Shard) else item
            try:
                shard = self.check_shard(digest, raw)
            except DataLoss as exc:
                dropped.append(f"#{position}: {exc}")
                continue
            if shard.index in good:
                dropped.append(f"#{position}: repeats index {shard.index}")
                continue
            good[shard.index] = shard
        if len(good) < self.k:
            reasons = "; ".join(dropped[:_MAX_REASONS]) + (" ..." if len(dropped) > _MAX_REASONS else "")
            raise DataLoss(f"blob {digest}: {len(good)} good shards, {self.k} of {self.total} needed; "
                           f"{len(dropped)} dropped ({reasons or 'none offered'})")
        return good

    def rebuild(self, digest: Digest, shards: Iterable[bytes | Shard],
                missing_indexes: Iterable[int]) -> dict[int, bytes]:
        """Full shards (header included) for ``missing_indexes`` from >= k good ones.

        The blob is decoded and verified against its digest, then encoded
        again: a rebuilt shard is thereby proven to belong to the right
        bytes, which pyeclib's reconstruct alone would not prove. Encoding is
        deterministic for one library version, so rebuilt shards equal the
        lost ones.

        Raises:
            InvalidInput: an index outside 0 .. k+m-1.
            DataLoss: fewer than k good shards, or they decode to wrong bytes.
        """
        wanted = sorted(set(missing_indexes))
        if any(not 0 <= index < self.total for index in wanted):
            raise InvalidInput(f"shard indexes {wanted} outside 0..{self.total - 1}")
        data = self.decode(digest, shards)
        fresh = self.encode(digest, data)
        return {index: fresh[index].raw for index in wanted}

    def _decode_good(self, digest: Digest, good: dict[int, Shard]) -> bytes:
        if digest.size_bytes == 0:
            data = b""  # the empty special case of encode
        else:
            # Data shards first: with all k present, decoding is a concatenation.
            chosen = [bytes(good[index].payload) for index in sorted(good)[: self.k]]
            try:
                data = bytes(self._driver.decode(chosen))
            except ec_iface.ECDriverError as exc:
                raise DataLoss(f"blob {digest}: pyeclib could not decode verified shards: {exc}") from exc
        if len(data) != digest.size_bytes or not _digest_matches(digest, data):
            raise DataLoss(f"blob {digest}: decoded bytes do not match the digest")
        return data

    def _wrap(self, digest: Digest, index: int, payload: bytes) -> Shard:
        header = ShardHeader(self.scheme, self.k, self.m, self.library_version, digest, index,
                             len(payload), shard_format.payload_digest(payload))
        return shard_format.build(header, payload)


def _validate(k: int, m: int, scheme: str) -> None:
    if not (isinstance(k, int) and isinstance(m, int) and k >= 1 and m >= 1):
        raise InvalidInput(f"erasure code needs k >= 1 data and m >= 1 parity shards, got k={k!r} m={m!r}")
    if k + m > MAX_SHARDS:
        raise InvalidInput(f"erasure code k + m must be at most {MAX_SHARDS}, got {k} + {m} = {k + m}")
    if scheme not in SUPPORTED_SCHEMES:
        raise InvalidInput(f"erasure scheme {scheme!r} is not supported; use one of {sorted(SUPPORTED_SCHEMES)} "
                           "(isa_l_rs_vand cannot recover some loss patterns when m > 4)")
    if not ec_iface.check_backend_available(scheme):
        raise InvalidInput(f"erasure scheme {scheme!r} is not available in this pyeclib build")


def _digest_matches(digest: Digest, data: bytes | memoryview) -> bool:
    if digest.function == DigestFunction.BLAKE3:
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO if len(data) > (1 << 22) else 1)
        hasher.update(data)
        return hasher.digest() == digest.hash
    if digest.function == DigestFunction.SHA256:
        return hashlib.sha256(data).digest() == digest.hash
    return False
