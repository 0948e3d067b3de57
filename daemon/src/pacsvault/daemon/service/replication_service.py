"""pacsvault.v1.ReplicationService: recovery point, restore and re-seed, for operators."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from pacsvault.daemon.archive import Archive
from pacsvault.daemon.errors import Unavailable
from pacsvault.daemon.service.status import mapped
from pacsvault.v1 import replication_pb2, replication_pb2_grpc


class ReplicationServicer(replication_pb2_grpc.ReplicationServiceServicer):
    def __init__(self, archive: Archive) -> None:
        self._archive = archive

    def _manager(self):  # type: ignore[no-untyped-def]
        if self._archive.replication is None:
            raise Unavailable("replication is not configured on this appliance ([replication] enabled = false)")
        return self._archive.replication

    @mapped
    def GetReplicationStatus(self, request: replication_pb2.GetReplicationStatusRequest,
                             context: grpc.ServicerContext) -> replication_pb2.GetReplicationStatusResponse:
        if self._archive.replication is None:
            return replication_pb2.GetReplicationStatusResponse(enabled=False, state="disabled")
        s = self._archive.replication.status()
        return replication_pb2.GetReplicationStatusResponse(
            enabled=True, appliance=s.appliance, peer=s.peer, peer_address=s.peer_address, state=s.state,
            pending_entries=s.pending_entries, pending_bytes=s.pending_bytes,
            oldest_pending_age_seconds=s.oldest_pending_age_s, bytes_per_second=s.bytes_per_second,
            blobs_replicated=s.blobs_replicated, bytes_replicated=s.bytes_replicated, last_error=s.last_error,
            rpo_warning_seconds=s.rpo_warning_s, repairs=s.repairs,
        )

    @mapped
    def RestoreFromPeer(self, request: replication_pb2.RestoreFromPeerRequest,
                        context: grpc.ServicerContext) -> Iterator[replication_pb2.RestoreFromPeerResponse]:
        self._manager()
        for p in self._archive.restore_from_peer():
            if not context.is_active():
                return
            yield replication_pb2.RestoreFromPeerResponse(
                instances_total=p.total, instances_done=p.done, instances_already_present=p.already_present,
                bytes_restored=p.bytes_restored, instances_failed=p.failed)

    @mapped
    def ReseedPeer(self, request: replication_pb2.ReseedPeerRequest,
                   context: grpc.ServicerContext) -> replication_pb2.ReseedPeerResponse:
        self._manager()
        return replication_pb2.ReseedPeerResponse(entries_queued=self._archive.reseed_peer())
