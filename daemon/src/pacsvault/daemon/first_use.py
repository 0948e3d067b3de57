"""A data dir keeps the encryption setting and keyring it was first used with; a start that
contradicts them is refused (blob addresses depend on them: anything else could read nothing)."""

from __future__ import annotations

from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys
from pacsvault.daemon.errors import ConfigError, DataLoss
from pacsvault.daemon.index import settings
from pacsvault.daemon.index.lmdb_env import IndexEnvironment

_KEYRING_CHECK = b"pacsvault: this data dir is sealed under this keyring"


def check_encryption_settings(index: IndexEnvironment, keys: ApplianceKeys | None) -> None:
    seal = None if keys is None else (lambda key: keys.index_values.seal(_KEYRING_CHECK, key))
    recorded, check = settings.first_use(index, keys is not None, seal)
    if recorded != (keys is not None):
        was, now = ("on" if recorded else "off"), ("on" if keys is not None else "off")
        raise ConfigError(f"encryption.enabled is {now} but this data dir was created with it {was}; set it "
                          "back (changing it needs a new data dir and a restore from the peer)")
    if keys is not None and check is not None:
        try:
            keys.index_values.open(check, settings.KEYRING_CHECK_KEY, "the keyring check")
        except DataLoss as exc:
            raise ConfigError(f"the keyring {keys.holder.current.source or 'from encryption.key_command'} is not "
                              "the one this data dir was sealed with; nothing here could be read with it") from exc
