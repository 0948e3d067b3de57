"""pacsvault.v1.ApplianceService: the operators' view (served by the back office; serving processes forward)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from pacsvault.daemon.appliance_health import ApplianceHealthReport
from pacsvault.daemon.errors import Unavailable
from pacsvault.daemon.health import HealthMonitor, HealthSnapshot
from pacsvault.daemon.health.report import combine
from pacsvault.daemon.service.health_convert import STATES, event_to_proto, report_to_proto
from pacsvault.daemon.service.status import mapped
from pacsvault.v1 import appliance_pb2, appliance_pb2_grpc

__all__ = ["STATES", "ApplianceServicer"]


class ApplianceServicer(appliance_pb2_grpc.ApplianceServiceServicer):
    def __init__(self, archive: ApplianceHealthReport, monitor: HealthMonitor | None = None) -> None:
        self._archive = archive
        self._monitor = monitor

    @mapped
    def GetApplianceHealth(
        self, request: appliance_pb2.GetApplianceHealthRequest, context: grpc.ServicerContext
    ) -> appliance_pb2.GetApplianceHealthResponse:
        return self._report(self._monitor.snapshot() if self._monitor else None)

    @mapped
    def WatchHealth(
        self, request: appliance_pb2.WatchHealthRequest, context: grpc.ServicerContext
    ) -> Iterator[appliance_pb2.WatchHealthResponse]:
        if self._monitor is None:
            raise Unavailable("health monitoring is not running in this daemon")
        with self._monitor.watch() as (subscription, updates):
            # Cancellation and a passed deadline end the wait at once.
            if not context.add_callback(subscription.close):
                return
            for update in updates:
                if update.event is not None:
                    yield appliance_pb2.WatchHealthResponse(event=event_to_proto(update.event))
                elif update.snapshot is not None:
                    yield appliance_pb2.WatchHealthResponse(
                        snapshot=self._report(update.snapshot), dropped_events=update.dropped)
            if context.is_active():
                raise Unavailable(f"health watch ended: {subscription.closed}; reconnect")

    def _report(self, snapshot: HealthSnapshot | None) -> appliance_pb2.GetApplianceHealthResponse:
        return report_to_proto(combine(self._archive.health(), snapshot))
