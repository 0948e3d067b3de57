"""The keys one appliance uses, opened once at start and handed to each module."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import blake3

from pacsvault.daemon.config import Config
from pacsvault.daemon.crypto import keyring as keyring_module
from pacsvault.daemon.crypto.keyring import KeyringHolder
from pacsvault.daemon.crypto.sealing import KeyWrapper, SealingKey

log = logging.getLogger(__name__)
TAG_BYTES = 16


@dataclass(frozen=True)
class ApplianceKeys:
    holder: KeyringHolder
    # Wraps and unwraps per-blob data keys under the keyring's KEKs.
    wrapper: KeyWrapper
    # Keyed BLAKE3 of a blob's original bytes: its address on disk and at the peer.
    address_key: bytes
    # Index values that carry PHI, sealed with their index key as associated data.
    index_values: SealingKey
    # Keyed lookup tags that stand in for PHI in index keys (patient ID, name, accession).
    index_tag_key: bytes
    # Records of the audit store, sealed.
    audit_store: SealingKey
    # The audit trail's chain key (HMAC) and the seed of its checkpoint signing key.
    audit_chain_key: bytes

    def index_tag(self, value: str | bytes, purpose: bytes) -> bytes:
        """A fixed-width keyed tag of ``value``: equal values, equal tags; nothing else learnt."""
        data = value.encode() if isinstance(value, str) else value
        return blake3.blake3(purpose + b"\x00" + data, key=self.index_tag_key).digest(TAG_BYTES)

    @classmethod
    def from_holder(cls, holder: KeyringHolder) -> ApplianceKeys:
        ring = holder.current
        return cls(
            holder=holder,
            wrapper=KeyWrapper(holder),
            address_key=ring.derive(keyring_module.ADDRESS),
            index_values=SealingKey(ring.derive(keyring_module.INDEX_VALUES), keyring_module.INDEX_VALUES),
            index_tag_key=ring.derive(keyring_module.INDEX_TAGS),
            audit_store=SealingKey(ring.derive(keyring_module.AUDIT_STORE), keyring_module.AUDIT_STORE),
            audit_chain_key=ring.derive(keyring_module.AUDIT_CHAIN),
        )


def open_keys(config: Config) -> ApplianceKeys | None:
    """The appliance's keys, or None when encryption is off."""
    settings = config.encryption
    if not settings.enabled:
        return None
    if settings.key_command:
        holder = KeyringHolder(keyring_module.load_command(settings.key_command), None)
    else:
        path = config.key_file_path()
        holder = KeyringHolder(keyring_module.load_file(path, create=settings.create_key_file), path)
    return ApplianceKeys.from_holder(holder)
