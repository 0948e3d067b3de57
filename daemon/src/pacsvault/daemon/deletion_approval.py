"""Deletion by two admins (security.delete_requires_second_admin).

A study deletion destroys the only copies, here and at the peer, and cannot
be undone. With the setting on, DeleteStudy only records a request (who,
which study, why, until when); a different admin approves it, and only then
is the study deleted, for the reason first given. Both steps are calls, so
both are in the audit trail with their principals; the approval's record
names who asked. A request not approved within a day lapses: an approval
weeks later would no longer be a decision about the situation it was asked
in. With the setting off, DeleteStudy deletes at once, as before.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from pacsvault.daemon.deletion import Deletion
from pacsvault.daemon.dicom import uid
from pacsvault.daemon.errors import InvalidInput, NotFound, PermissionDenied, shown
from pacsvault.daemon.index import deletion_requests
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import DeletionRequest

__all__ = ["APPROVAL_WINDOW_S", "Approved", "DeletionApproval", "Outcome"]

APPROVAL_WINDOW_S = 24 * 3600.0


@dataclass(frozen=True)
class Outcome:
    """What DeleteStudy did: deleted (counts), or asked for approval (request_id)."""

    instances_deleted: int = 0
    blobs_destroyed: int = 0
    request_id: str = ""
    # In the trash until then (None: purged at once, or nothing deleted yet).
    purge_after: float | None = None


@dataclass(frozen=True)
class Approved:
    request: DeletionRequest
    instances_deleted: int
    blobs_destroyed: int
    purge_after: float | None = None


class DeletionApproval:
    def __init__(self, deletion: Deletion, catalog: Catalog, env: IndexEnvironment, requires_second_admin: bool,
                 clock: Callable[[], float] = time.time) -> None:
        self._deletion, self._catalog, self._env = deletion, catalog, env
        self._second, self._clock = requires_second_admin, clock

    def delete(self, study_uid: str, reason: str, admin: str) -> Outcome:
        if not self._second:
            deleted = self._deletion.delete_study(study_uid, reason, admin)
            return Outcome(deleted.instances, deleted.blobs_destroyed, purge_after=deleted.purge_after)
        uid.check(study_uid, "study_instance_uid")
        _check_reason(reason)
        if self._catalog.study(study_uid) is None:
            raise NotFound(f"no study {shown(study_uid)}")
        # A study under legal hold or within its retention is refused at once, not at approval.
        self._deletion.refuse_if_kept(study_uid)
        now = self._clock()
        request = DeletionRequest(request_id=secrets.token_hex(8), study_instance_uid=study_uid, reason=reason,
                                  requested_by=admin, requested_at=now, expires_at=now + APPROVAL_WINDOW_S)
        deletion_requests.put(self._env, request)
        return Outcome(request_id=request.request_id)

    def approve(self, request_id: str, admin: str) -> Approved:
        request = self._pending(request_id)
        if request.requested_by == admin:
            raise PermissionDenied(f"{admin} asked for this deletion; another admin must approve it "
                                   "(security.delete_requires_second_admin)", who=admin)
        if not deletion_requests.take(self._env, request_id):
            raise NotFound(f"deletion request {shown(request_id)} was approved meanwhile")
        deleted = self._deletion.delete_study(request.study_instance_uid, request.reason, request.requested_by)
        return Approved(request, deleted.instances, deleted.blobs_destroyed, deleted.purge_after)

    def pending(self) -> list[DeletionRequest]:
        deletion_requests.forget_lapsed(self._env, self._clock())
        return deletion_requests.all_requests(self._env)

    def _pending(self, request_id: str) -> DeletionRequest:
        request = deletion_requests.get(self._env, request_id) if request_id else None
        if request is None or request.expires_at <= self._clock():
            raise NotFound(f"no deletion request {shown(request_id)} waiting for approval "
                           "(approved already, or not approved within a day)")
        return request


def _check_reason(reason: str) -> None:
    if not reason.strip():
        raise InvalidInput("reason is required: say why the study is deleted (it is kept in the audit trail)")
    if len(reason) > 500:
        raise InvalidInput(f"reason is {len(reason)} characters; at most 500")
