"""Legal holds, undelete and the trash's contents: the operators' side of safe deletion
(``deletion`` moves things to the trash and purges them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pacsvault.daemon.dicom import uid
from pacsvault.daemon.errors import InvalidInput
from pacsvault.daemon.index import holds, trash
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import LegalHold



@dataclass(frozen=True)
class DeletedItem:
    group: trash.DeletedGroup
    held: bool


class Lifecycle:
    def __init__(self, env: IndexEnvironment, replicate: bool, on_changed: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time,
                 on_hold: Callable[[str, bool], object] = lambda study_uid, on: None) -> None:
        """``replicate``: holds reach the peer (through the outbox); ``on_changed`` rings its doorbell;
        ``on_hold(study_uid, on)``: a hold placed or lifted reaches the objects an object store keeps."""
        self._env, self._replicate, self._on_changed, self._clock = env, replicate, on_changed, clock
        self._on_hold = on_hold

    def add_hold(self, study_uid: str, reason: str, by: str) -> LegalHold:
        uid.check(study_uid, "study_instance_uid")
        _reason(reason)
        hold = holds.place(self._env, LegalHold(study_instance_uid=study_uid, reason=reason, placed_by=by,
                                                placed_at=self._clock()), self._replicate)
        self._on_changed()
        self._on_hold(study_uid, True)
        return hold

    def remove_hold(self, study_uid: str, reason: str) -> LegalHold:
        uid.check(study_uid, "study_instance_uid")
        _reason(reason)
        hold = holds.lift(self._env, study_uid, self._clock(), self._replicate)
        self._on_changed()
        self._on_hold(study_uid, False)
        return hold

    def holds(self) -> list[LegalHold]:
        return holds.listed(self._env)

    def undelete(self, level: str, target_uid: str) -> trash.Restored:
        uid.check(target_uid, trash.UID_FIELDS[level])
        return trash.restore(self._env, level, target_uid, self._clock())

    def deleted(self) -> list[DeletedItem]:
        held = {h.study_instance_uid for h in holds.listed(self._env)}
        return [DeletedItem(g, g.study_instance_uid in held) for g in trash.groups(self._env)]


def _reason(reason: str) -> None:
    if not reason.strip():
        raise InvalidInput("reason is required: say why (it is kept in the audit trail)")
    if len(reason) > 500:
        raise InvalidInput(f"reason is {len(reason)} characters; at most 500")
