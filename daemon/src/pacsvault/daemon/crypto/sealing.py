"""AES-256-GCM, used so that a nonce can never repeat under one key.

GCM fails badly when a (key, nonce) pair repeats, so no caller chooses
nonces; the two shapes here choose them by construction:

* ``SealingKey`` for many small messages under one long-lived key (index
  values, audit records, wrapped data keys). Each process derives its own
  subkey from the long-lived key and a random 128-bit salt, and numbers its
  messages with a counter. A nonce repeats only if a process's salt repeats
  (random 128 bits) or its counter wraps (refused long before).
* ``BlobCipher`` for the frames of one blob: a fresh random data key per
  blob written, the frame index as the nonce, and each index sealed at most
  once (enforced). Re-writing a blob makes a new key, never reuses one.

Associated data binds each ciphertext to where it belongs (a blob address
and frame position, an index key), so a ciphertext moved elsewhere fails
authentication instead of decrypting in the wrong place.
"""

from __future__ import annotations

import os
import struct
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pacsvault.daemon.crypto.keyring import KEY_BYTES, Keyring
from pacsvault.daemon.errors import DataLoss

NONCE_BYTES = 12
TAG_BYTES = 16
SALT_BYTES = 16
_SEALED_VERSION = 1
_HEADER = 1 + SALT_BYTES + NONCE_BYTES
# Far below GCM's limit; a process that gets here starts a new subkey.
_MAX_MESSAGES_PER_SUBKEY = 1 << 32
_U32 = struct.Struct("<I")


class SealingKey:
    """Seals small messages: version byte, salt, nonce, ciphertext and tag."""

    OVERHEAD = _HEADER + TAG_BYTES

    def __init__(self, key: bytes, label: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a sealing key is {KEY_BYTES} bytes")
        self._key, self._label = key, label
        self._lock = threading.Lock()
        self._openers: dict[bytes, AESGCM] = {}
        self._new_subkey()

    def _new_subkey(self) -> None:
        self._salt = os.urandom(SALT_BYTES)
        self._aead = self._opener(self._salt)
        self._counter = 0

    def _opener(self, salt: bytes) -> AESGCM:
        aead = self._openers.get(salt)
        if aead is None:
            subkey = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=self._label).derive(self._key)
            aead = AESGCM(subkey)
            if len(self._openers) > 4096:  # salts of long-gone processes
                self._openers.clear()
            self._openers[salt] = aead
        return aead

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        with self._lock:
            if self._counter >= _MAX_MESSAGES_PER_SUBKEY:
                self._new_subkey()
            nonce = self._counter.to_bytes(NONCE_BYTES, "big")
            self._counter += 1
            salt, aead = self._salt, self._aead
        return bytes([_SEALED_VERSION]) + salt + nonce + aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes = b"", what: str = "sealed value") -> bytes:
        """The plaintext; DataLoss when the value was changed, moved, or sealed under another key."""
        if len(sealed) < self.OVERHEAD or sealed[0] != _SEALED_VERSION:
            raise DataLoss(f"{what} is not a sealed value of this appliance (damaged or truncated)")
        salt = bytes(sealed[1 : 1 + SALT_BYTES])
        nonce = bytes(sealed[1 + SALT_BYTES : _HEADER])
        with self._lock:
            aead = self._opener(salt)
        try:
            return aead.decrypt(nonce, bytes(sealed[_HEADER:]), aad)
        except InvalidTag:
            raise DataLoss(f"{what} fails authentication: changed at rest, or not sealed by this keyring") from None


class KeyWrapper:
    """Wraps per-blob data keys under the keyring's active KEK; unwraps under any version it holds."""

    LABEL = b"pacsvault/v1/dek-wrap"
    WRAPPED_BYTES = 4 + SealingKey.OVERHEAD + KEY_BYTES

    def __init__(self, ring_source: object) -> None:
        # ring_source has a .current Keyring (a KeyringHolder), so rotation takes effect at once.
        self._source = ring_source
        self._keys: dict[tuple[int, bytes], SealingKey] = {}
        self._lock = threading.Lock()

    def _sealing(self, ring: Keyring, version: int) -> SealingKey:
        kek = ring.kek(version)
        with self._lock:
            key = self._keys.get((version, kek))
            if key is None:
                key = self._keys[(version, kek)] = SealingKey(kek, self.LABEL)
            return key

    def current_version(self) -> int:
        return self._source.current.active  # type: ignore[attr-defined,no-any-return]

    def wrap(self, dek: bytes, aad: bytes) -> bytes:
        ring: Keyring = self._source.current  # type: ignore[attr-defined]
        return _U32.pack(ring.active) + self._sealing(ring, ring.active).seal(dek, aad)

    def unwrap(self, wrapped: bytes, aad: bytes, what: str) -> bytes:
        if len(wrapped) != self.WRAPPED_BYTES:
            raise DataLoss(f"{what}: wrapped data key has {len(wrapped)} bytes, expected {self.WRAPPED_BYTES}")
        (version,) = _U32.unpack_from(wrapped)
        ring: Keyring = self._source.current  # type: ignore[attr-defined]
        if version not in ring.keks and version > ring.active and hasattr(self._source, "reload"):
            ring = self._source.reload()  # another process rotated: its keyring file has this version
        try:
            key = self._sealing(ring, version)
        except KeyError as exc:
            raise DataLoss(f"{what}: {exc.args[0]}") from None
        return key.open(wrapped[4:], aad, f"{what}: wrapped data key")

    @staticmethod
    def version_of(wrapped: bytes) -> int:
        return _U32.unpack_from(wrapped)[0]


class BlobCipher:
    """One blob's data key. Fresh keys seal each frame index once; unwrapped keys only open."""

    def __init__(self, dek: bytes, *, fresh: bool) -> None:
        if len(dek) != KEY_BYTES:
            raise ValueError(f"a data key is {KEY_BYTES} bytes")
        self.dek = dek
        self._aead = AESGCM(dek)
        self._fresh = fresh
        self._sealed: set[int] = set()

    @classmethod
    def fresh(cls) -> BlobCipher:
        return cls(os.urandom(KEY_BYTES), fresh=True)

    @classmethod
    def for_reading(cls, dek: bytes) -> BlobCipher:
        return cls(dek, fresh=False)

    def seal_frame(self, index: int, data: bytes | memoryview, aad: bytes) -> bytes:
        if not self._fresh:
            raise RuntimeError("a data key read back from a blob never encrypts again (its nonces are used)")
        if index in self._sealed:
            raise RuntimeError(f"frame {index} is already sealed under this data key")
        self._sealed.add(index)
        return self._aead.encrypt(index.to_bytes(NONCE_BYTES, "big"), data, aad)

    def open_frame(self, index: int, data: bytes, aad: bytes, where: str) -> bytes:
        try:
            return self._aead.decrypt(index.to_bytes(NONCE_BYTES, "big"), data, aad)
        except InvalidTag:
            raise DataLoss(f"{where}: frame {index} fails authentication (changed at rest)") from None
