"""Settings a data dir keeps from its first use: what the index records so a later start cannot
contradict it (encryption on or off, and which keyring sealed it)."""

from __future__ import annotations

from collections.abc import Callable

import lmdb

from pacsvault.daemon.index.lmdb_env import IndexEnvironment

_ENCRYPTION_KEY = b"encryption_enabled"
_KEYRING_CHECK_KEY = b"keyring_check"


def first_use(env: IndexEnvironment, encryption: bool,
              keyring_check: Callable[[bytes], bytes] | None) -> tuple[bool, bytes | None]:
    """Records the encryption setting (and a value sealed under the keyring) at the data dir's
    first use; returns what is recorded: the setting, and the sealed check value (None when new).

    ``keyring_check(key)`` seals the check value under the keyring for that key.
    """
    wanted = b"1" if encryption else b"0"

    def op(txn: lmdb.Transaction) -> tuple[bool, bytes | None]:
        meta = env.dbs["meta"]
        recorded = txn.get(_ENCRYPTION_KEY, db=meta)
        if recorded is None:
            txn.put(_ENCRYPTION_KEY, wanted, db=meta)
            if keyring_check is not None:
                txn.put(_KEYRING_CHECK_KEY, keyring_check(_KEYRING_CHECK_KEY), db=meta)
            return encryption, None
        check = txn.get(_KEYRING_CHECK_KEY, db=meta)
        return bytes(recorded) == b"1", None if check is None else bytes(check)

    return env.write(op)


KEYRING_CHECK_KEY = _KEYRING_CHECK_KEY
