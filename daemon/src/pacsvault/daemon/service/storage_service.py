"""pacsvault.v1.StorageService: tiers, volumes and the mover, for operators (served by the back office)."""

from __future__ import annotations

import grpc

from pacsvault.daemon.errors import InvalidInput
from pacsvault.daemon.service.status import mapped
from pacsvault.daemon.tiering.manager import TieringManager, VolumeStatus
from pacsvault.v1 import storage_pb2, storage_pb2_grpc


def volume_to_proto(v: VolumeStatus) -> storage_pb2.Volume:
    message = storage_pb2.Volume(
        tier=v.tier, volume_id=v.volume_id, path=v.path, volume_class=v.volume_class, state=v.state,
        reason=v.reason, capacity_bytes=v.capacity_bytes, used_bytes=v.used_bytes, free_bytes=v.free_bytes,
        blobs=v.blobs, stored_bytes=v.stored_bytes, watermark=v.watermark, accepts_writes=v.accepts_writes,
        backend=v.backend,
    )
    if v.store is not None and v.store.objects is not None:
        message.store_objects = v.store.objects
        message.store_bytes = v.store.object_bytes or 0
    return message


class StorageServicer(storage_pb2_grpc.StorageServiceServicer):
    def __init__(self, tiering: TieringManager) -> None:
        self._tiering = tiering

    @mapped
    def ListVolumes(self, request: storage_pb2.ListVolumesRequest,
                    context: grpc.ServicerContext) -> storage_pb2.ListVolumesResponse:
        mover = self._tiering.mover
        stats = mover.stats
        return storage_pb2.ListVolumesResponse(
            volumes=[volume_to_proto(v) for v in self._tiering.status()],
            mover=storage_pb2.MoverStatus(
                enabled=self._tiering.config.tiering.mover_enabled, passes=stats.passes,
                blobs_moved=stats.blobs_moved, bytes_moved=stats.bytes_moved, failures=stats.failures,
                last_error=stats.last_error, last_pass_bytes_per_second=stats.last_rate,
                pending_promotions=mover.pending_promotions(), interrupted_moves=mover.interrupted_count(),
            ),
        )

    @mapped
    def PlanMoves(self, request: storage_pb2.PlanMovesRequest,
                  context: grpc.ServicerContext) -> storage_pb2.PlanMovesResponse:
        if request.limit < 0:
            raise InvalidInput("limit must not be negative")
        moves = self._tiering.plan(min(request.limit or 100, 10_000))
        return storage_pb2.PlanMovesResponse(
            moves=[storage_pb2.PlannedMove(study_instance_uid=m.study_uid, from_tier=m.from_tier,
                                           to_tier=m.to_tier, size_bytes=m.bytes, reason=m.reason)
                   for m in moves],
            total_bytes=sum(m.bytes for m in moves),
        )

    @mapped
    def AddVolume(self, request: storage_pb2.AddVolumeRequest,
                  context: grpc.ServicerContext) -> storage_pb2.AddVolumeResponse:
        if not request.tier or not request.path:
            raise InvalidInput("tier and path are required")
        volume = self._tiering.add_volume(request.tier, request.path)
        return storage_pb2.AddVolumeResponse(volume=self._status_of(volume.volume_id))

    @mapped
    def DrainVolume(self, request: storage_pb2.DrainVolumeRequest,
                    context: grpc.ServicerContext) -> storage_pb2.DrainVolumeResponse:
        if not request.volume:
            raise InvalidInput("volume (a path or id) is required")
        volume = self._tiering.drain(request.volume)
        return storage_pb2.DrainVolumeResponse(volume=self._status_of(volume.volume_id))

    def _status_of(self, volume_id: str) -> storage_pb2.Volume:
        return volume_to_proto(next(v for v in self._tiering.status() if v.volume_id == volume_id))
