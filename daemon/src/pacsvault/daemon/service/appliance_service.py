"""pacsvault.v1.ApplianceService: the operators' view."""

from __future__ import annotations

import grpc

from pacsvault.daemon.archive import Archive
from pacsvault.daemon.service.status import mapped
from pacsvault.v1 import appliance_pb2, appliance_pb2_grpc

STATES = {
    "healthy": appliance_pb2.HEALTH_STATE_HEALTHY,
    "warning": appliance_pb2.HEALTH_STATE_WARNING,
    "critical": appliance_pb2.HEALTH_STATE_CRITICAL,
}


class ApplianceServicer(appliance_pb2_grpc.ApplianceServiceServicer):
    def __init__(self, archive: Archive) -> None:
        self._archive = archive

    @mapped
    def GetApplianceHealth(
        self, request: appliance_pb2.GetApplianceHealthRequest, context: grpc.ServicerContext
    ) -> appliance_pb2.GetApplianceHealthResponse:
        health = self._archive.health()
        index = health.index
        return appliance_pb2.GetApplianceHealthResponse(
            state=STATES[health.state], reasons=health.reasons, version=health.version,
            uptime_seconds=health.uptime_s,
            index=appliance_pb2.IndexStatus(
                patients=index["patients"], studies=index["studies"], series=index["series"],
                instances=index["instances"], blobs=index["blobs"], stored_bytes=index["stored_bytes"],
                map_size_bytes=index["map_size"], map_used_bytes=index["map_used"],
            ),
            volumes=[
                appliance_pb2.VolumeStatus(
                    tier=v.tier, path=v.path, state=STATES[v.state], reason=v.reason,
                    capacity_bytes=v.capacity_bytes, used_bytes=v.used_bytes, free_bytes=v.free_bytes,
                    accepts_writes=v.accepts_writes,
                )
                for v in health.volumes
            ],
        )
