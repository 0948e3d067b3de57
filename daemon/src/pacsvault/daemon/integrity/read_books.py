"""What a read that failed its integrity check leaves in the books, for health and metrics.

A repaired read counts as a read failure (health warns for a day); one that
could not be repaired answers DATA_LOSS and stays a problem, named by its
study and instance, until a repair or a delete clears it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pacsvault.daemon.errors import NotFound, PacsvaultError
from pacsvault.daemon.index import integrity_books, keys
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BlobRecord, InstanceRecord, IntegrityProblem


class ReadBooks:
    def __init__(self, env: IndexEnvironment, clock: Callable[[], float] = time.time) -> None:
        self._env, self._clock = env, clock

    def failed_read(self, instance: InstanceRecord, blob: BlobRecord, problem: PacsvaultError,
                    repaired: bool) -> None:
        now = self._clock()
        integrity_books.note_read_failure(self._env, repaired, now)
        if repaired:
            integrity_books.clear_problem(self._env, keys.blob_key(blob.digest_function, blob.digest))
            return
        integrity_books.note_problem(self._env, IntegrityProblem(
            digest_function=blob.digest_function, digest=blob.digest, volume_id=blob.location.volume_id,
            tier=blob.location.tier, kind="missing" if isinstance(problem, NotFound) else "damaged",
            reason=f"a read: {problem}"[:500], found_at=now, study_instance_uid=instance.study_instance_uid,
            sop_instance_uids=[instance.sop_instance_uid]))
