"""What seals blobs at rest: a fresh data key per blob, wrapped under the keyring's KEK.

The data key lives only in the blob's own header (wrapped), so a blob is
self-contained: the mover copies it as it is, the peer keeps it as it is
(still sealed), and a blob restored from the peer opens with the keyring
alone. Rotation re-wraps the key in the header's spare slot; deleting the
last copy zeroes both slots first, which destroys the key (crypto-shredding).
"""

from __future__ import annotations

from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys
from pacsvault.daemon.crypto.sealing import BlobCipher, KeyWrapper
from pacsvault.daemon.errors import DataLoss
from pacsvault.daemon.storage.blob_format import KeySlot


class BlobSealer:
    def __init__(self, keys: ApplianceKeys) -> None:
        self._wrapper = keys.wrapper
        self.address_key = keys.address_key

    @property
    def active_version(self) -> int:
        return self._wrapper.current_version()

    def wrap(self, dek: bytes, address: bytes, generation: int) -> KeySlot:
        return KeySlot(generation, self._wrapper.wrap(dek, address))

    def open_cipher(self, slots: tuple[KeySlot | None, ...], address: bytes, where: str) -> BlobCipher:
        """The blob's data key from its newest slot that unwraps; DataLoss when none does."""
        filled = sorted((s for s in slots if s is not None), key=lambda s: s.generation, reverse=True)
        if not filled:
            raise DataLoss(f"{where}: the blob's data key was destroyed (shredded); its contents are gone")
        problems = []
        for slot in filled:
            try:
                return BlobCipher.for_reading(self._wrapper.unwrap(slot.wrapped, address, where))
            except DataLoss as exc:
                problems.append(str(exc))
        raise DataLoss("; ".join(problems))

    @staticmethod
    def version_of(slot: KeySlot) -> int:
        return KeyWrapper.version_of(slot.wrapped)
