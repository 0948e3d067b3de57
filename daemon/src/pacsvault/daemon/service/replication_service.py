"""pacsvault.v1.ReplicationService: recovery point, restore and re-seed, for operators.

The status and re-seed are the back office's (it runs the sender); restore
runs in the serving process that took the call, through its ingest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc

from pacsvault.daemon.errors import FailedPrecondition
from pacsvault.daemon.replication.manager import ReplicationManager
from pacsvault.daemon.replication.restore import RestoreProgress
from pacsvault.daemon.service.forwarding import BackOffice, forwarded
from pacsvault.daemon.service.status import mapped
from pacsvault.v1 import replication_pb2, replication_pb2_grpc

_SERVICE = replication_pb2.DESCRIPTOR.services_by_name["ReplicationService"]
NOT_CONFIGURED = "replication is not configured on this appliance ([replication] enabled = false)"


class ReplicationServicer(replication_pb2_grpc.ReplicationServiceServicer):
    """The serving process's: restore here, the rest forwarded to the back office."""

    def __init__(self, restore: Callable[[], Iterator[RestoreProgress]] | None, back_office: BackOffice) -> None:
        self._restore, self._back_office = restore, back_office

    GetReplicationStatus = forwarded(_SERVICE.methods_by_name["GetReplicationStatus"])
    ReseedPeer = forwarded(_SERVICE.methods_by_name["ReseedPeer"])

    @mapped
    def RestoreFromPeer(self, request: replication_pb2.RestoreFromPeerRequest,
                        context: grpc.ServicerContext) -> Iterator[replication_pb2.RestoreFromPeerResponse]:
        if self._restore is None:
            raise FailedPrecondition(NOT_CONFIGURED)
        for p in self._restore():
            if not context.is_active():
                return
            yield replication_pb2.RestoreFromPeerResponse(
                instances_total=p.total, instances_done=p.done, instances_already_present=p.already_present,
                bytes_restored=p.bytes_restored, instances_failed=p.failed,
                failures=[replication_pb2.RestoreFailure(sop_instance_uid=f.sop_instance_uid,
                                                         study_instance_uid=f.study_instance_uid, reason=f.reason)
                          for f in p.failures])


class ReplicationStatusServicer(replication_pb2_grpc.ReplicationServiceServicer):
    """The back office's: the sender's status, and re-seeding a new peer."""

    def __init__(self, manager: ReplicationManager | None, reseed: Callable[[], int]) -> None:
        self._manager, self._reseed = manager, reseed

    @mapped
    def GetReplicationStatus(self, request: replication_pb2.GetReplicationStatusRequest,
                             context: grpc.ServicerContext) -> replication_pb2.GetReplicationStatusResponse:
        if self._manager is None:
            return replication_pb2.GetReplicationStatusResponse(enabled=False, state="disabled")
        s = self._manager.status()
        return replication_pb2.GetReplicationStatusResponse(
            enabled=True, appliance=s.appliance, peer=s.peer, peer_address=s.peer_address, state=s.state,
            pending_entries=s.pending_entries, pending_bytes=s.pending_bytes,
            oldest_pending_age_seconds=s.oldest_pending_age_s, bytes_per_second=s.bytes_per_second,
            blobs_replicated=s.blobs_replicated, bytes_replicated=s.bytes_replicated, last_error=s.last_error,
            rpo_warning_seconds=s.rpo_warning_s, repairs=s.repairs, peer_lost_replicas=s.peer_lost,
            last_answer_age_seconds=s.last_answer_age_s,
        )

    @mapped
    def ReseedPeer(self, request: replication_pb2.ReseedPeerRequest,
                   context: grpc.ServicerContext) -> replication_pb2.ReseedPeerResponse:
        if self._manager is None:
            raise FailedPrecondition(NOT_CONFIGURED)
        return replication_pb2.ReseedPeerResponse(entries_queued=self._reseed())
