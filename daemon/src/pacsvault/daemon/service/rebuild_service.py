"""StorageService with RebuildVolume: the back office's storage servicer, and a lost volume's
rebuild from the peer (its progress in ListVolumes)."""

from __future__ import annotations

import time

import grpc

from pacsvault.daemon.errors import InvalidInput
from pacsvault.daemon.integrity.volume_rebuild import Progress, VolumeRebuilder
from pacsvault.daemon.service.status import mapped
from pacsvault.daemon.service.storage_service import StorageServicer
from pacsvault.daemon.tiering.manager import TieringManager
from pacsvault.v1 import storage_pb2


class RebuildingStorageServicer(StorageServicer):
    def __init__(self, tiering: TieringManager, rebuilder: VolumeRebuilder) -> None:
        super().__init__(tiering)
        self._rebuilder = rebuilder

    def ListVolumes(self, request: storage_pb2.ListVolumesRequest,
                    context: grpc.ServicerContext) -> storage_pb2.ListVolumesResponse:
        response = super().ListVolumes(request, context)  # mapped there
        response.rebuilds.extend(rebuild_to_proto(p) for p in self._rebuilder.progress())
        return response

    @mapped
    def RebuildVolume(self, request: storage_pb2.RebuildVolumeRequest,
                      context: grpc.ServicerContext) -> storage_pb2.RebuildVolumeResponse:
        if not request.volume:
            raise InvalidInput("volume (a path or id) is required")
        return storage_pb2.RebuildVolumeResponse(rebuild=rebuild_to_proto(self._rebuilder.rebuild(request.volume)))


def rebuild_to_proto(p: Progress) -> storage_pb2.VolumeRebuild:
    now = time.monotonic()
    return storage_pb2.VolumeRebuild(
        volume_id=p.volume_id, path=p.path, state=p.state, blobs_total=p.blobs_total, blobs_done=p.blobs_done,
        blobs_failed=p.blobs_failed, bytes_done=p.bytes_done, bytes_per_second=p.rate(now), eta_seconds=p.eta(now),
        last_error=p.last_error)
