"""The client's calls about the appliance's own integrity and the life of stored studies:
scrub, check, volume rebuild, legal holds, the trash. A mixin of each client (blocking and
asyncio), so the two stay alike; both give the same arguments and answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import grpc
import grpc.aio

from pacsvault.client._errors import mapped_errors
from pacsvault.client._streams import AioMessageStream, MessageStream
from pacsvault.v1 import integrity_pb2, integrity_pb2_grpc, lifecycle_pb2, lifecycle_pb2_grpc, storage_pb2
from pacsvault.v1 import storage_pb2_grpc

if TYPE_CHECKING:
    from pacsvault.v1.integrity_pb2_grpc import IntegrityServiceAsyncStub
    from pacsvault.v1.lifecycle_pb2_grpc import LifecycleServiceAsyncStub

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def _undelete_request(study_instance_uid: str, series_instance_uid: str,
                      sop_instance_uid: str) -> lifecycle_pb2.UndeleteRequest:
    return lifecycle_pb2.UndeleteRequest(study_instance_uid=study_instance_uid,
                                         series_instance_uid=series_instance_uid, sop_instance_uid=sop_instance_uid)


class LifecycleCalls:
    """Scrub, check, rebuild, holds and the trash, for ``PacsvaultClient``."""

    if TYPE_CHECKING:
        _channel: grpc.Channel
        _metadata: tuple[tuple[str, str], ...]

        def _unary(self, method: grpc.UnaryUnaryMultiCallable[Req, Resp], request: Req) -> Resp: ...

    @property
    def _integrity(self) -> integrity_pb2_grpc.IntegrityServiceStub:
        return integrity_pb2_grpc.IntegrityServiceStub(self._channel)

    @property
    def _lifecycle(self) -> lifecycle_pb2_grpc.LifecycleServiceStub:
        return lifecycle_pb2_grpc.LifecycleServiceStub(self._channel)

    def scrub_status(self) -> integrity_pb2.GetScrubStatusResponse:
        """The local scrub: progress, last full pass, what it found, repaired and could not repair."""
        return self._unary(self._integrity.GetScrubStatus, integrity_pb2.GetScrubStatusRequest())

    def start_scrub(self) -> bool:
        """Starts a scrub pass now; False when one is under way already."""
        return self._unary(self._integrity.StartScrub, integrity_pb2.StartScrubRequest()).started

    def check_integrity(self) -> MessageStream[integrity_pb2.CheckIntegrityResponse]:
        """Every inconsistency, by class; changes nothing. No deadline: it reads the whole archive."""
        with mapped_errors():
            call = self._integrity.CheckIntegrity(integrity_pb2.CheckIntegrityRequest(), metadata=self._metadata)
        return MessageStream(call, None)

    def repair_integrity(self) -> MessageStream[integrity_pb2.RepairIntegrityResponse]:
        """Checks, then repairs what can be repaired safely; yields the findings and what was done."""
        with mapped_errors():
            call = self._integrity.RepairIntegrity(integrity_pb2.RepairIntegrityRequest(), metadata=self._metadata)
        return MessageStream(call, None)

    def rebuild_volume(self, volume: str) -> storage_pb2.VolumeRebuild:
        """Starts rebuilding a lost volume's blobs from the peer (admin); ``list_volumes`` shows progress."""
        stub = storage_pb2_grpc.StorageServiceStub(self._channel).RebuildVolume
        return self._unary(stub, storage_pb2.RebuildVolumeRequest(volume=volume)).rebuild

    def add_legal_hold(self, study_instance_uid: str, reason: str) -> lifecycle_pb2.LegalHold:
        """No delete passes a held study, here or at the peer, until the hold is removed (admin)."""
        return self._unary(self._lifecycle.AddLegalHold, lifecycle_pb2.AddLegalHoldRequest(
            study_instance_uid=study_instance_uid, reason=reason)).hold

    def remove_legal_hold(self, study_instance_uid: str, reason: str) -> None:
        self._unary(self._lifecycle.RemoveLegalHold, lifecycle_pb2.RemoveLegalHoldRequest(
            study_instance_uid=study_instance_uid, reason=reason))

    def legal_holds(self) -> list[lifecycle_pb2.LegalHold]:
        return list(self._unary(self._lifecycle.ListLegalHolds, lifecycle_pb2.ListLegalHoldsRequest()).holds)

    def delete_series(self, series_instance_uid: str, reason: str) -> lifecycle_pb2.DeleteSeriesResponse:
        """Moves one series to the trash, like ``delete_study`` a study (admin)."""
        return self._unary(self._lifecycle.DeleteSeries, lifecycle_pb2.DeleteSeriesRequest(
            series_instance_uid=series_instance_uid, reason=reason))

    def delete_instance(self, sop_instance_uid: str, reason: str) -> lifecycle_pb2.DeleteInstanceResponse:
        """Moves one instance to the trash (DICOM IOCM rejection), like ``delete_study`` a study (admin)."""
        return self._unary(self._lifecycle.DeleteInstance, lifecycle_pb2.DeleteInstanceRequest(
            sop_instance_uid=sop_instance_uid, reason=reason))

    def undelete(self, *, study_instance_uid: str = "", series_instance_uid: str = "",
                 sop_instance_uid: str = "") -> lifecycle_pb2.UndeleteResponse:
        """Brings back what a delete put in the trash (name exactly what the delete named)."""
        return self._unary(self._lifecycle.Undelete, _undelete_request(study_instance_uid, series_instance_uid,
                                                                       sop_instance_uid))

    def deleted_items(self) -> list[lifecycle_pb2.DeletedItem]:
        """What waits in the trash, and when each is purged."""
        return list(self._unary(self._lifecycle.ListDeleted, lifecycle_pb2.ListDeletedRequest()).items)


class AsyncLifecycleCalls:
    """The same, for ``AsyncPacsvaultClient``."""

    if TYPE_CHECKING:
        _channel: grpc.aio.Channel
        _metadata: tuple[tuple[str, str], ...]

        async def _unary(self, method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp], request: Req) -> Resp: ...

    @property
    def _integrity(self) -> IntegrityServiceAsyncStub:
        return integrity_pb2_grpc.IntegrityServiceStub(self._channel)

    @property
    def _lifecycle(self) -> LifecycleServiceAsyncStub:
        return lifecycle_pb2_grpc.LifecycleServiceStub(self._channel)

    async def scrub_status(self) -> integrity_pb2.GetScrubStatusResponse:
        return await self._unary(self._integrity.GetScrubStatus, integrity_pb2.GetScrubStatusRequest())

    async def start_scrub(self) -> bool:
        return (await self._unary(self._integrity.StartScrub, integrity_pb2.StartScrubRequest())).started

    def check_integrity(self) -> AioMessageStream[integrity_pb2.CheckIntegrityResponse]:
        with mapped_errors():
            call = self._integrity.CheckIntegrity(integrity_pb2.CheckIntegrityRequest(), metadata=self._metadata)
        return AioMessageStream(call, None)

    def repair_integrity(self) -> AioMessageStream[integrity_pb2.RepairIntegrityResponse]:
        with mapped_errors():
            call = self._integrity.RepairIntegrity(integrity_pb2.RepairIntegrityRequest(), metadata=self._metadata)
        return AioMessageStream(call, None)

    async def rebuild_volume(self, volume: str) -> storage_pb2.VolumeRebuild:
        stub = storage_pb2_grpc.StorageServiceStub(self._channel).RebuildVolume
        return (await self._unary(stub, storage_pb2.RebuildVolumeRequest(volume=volume))).rebuild

    async def add_legal_hold(self, study_instance_uid: str, reason: str) -> lifecycle_pb2.LegalHold:
        return (await self._unary(self._lifecycle.AddLegalHold, lifecycle_pb2.AddLegalHoldRequest(
            study_instance_uid=study_instance_uid, reason=reason))).hold

    async def remove_legal_hold(self, study_instance_uid: str, reason: str) -> None:
        await self._unary(self._lifecycle.RemoveLegalHold, lifecycle_pb2.RemoveLegalHoldRequest(
            study_instance_uid=study_instance_uid, reason=reason))

    async def legal_holds(self) -> list[lifecycle_pb2.LegalHold]:
        return list((await self._unary(self._lifecycle.ListLegalHolds, lifecycle_pb2.ListLegalHoldsRequest())).holds)

    async def delete_series(self, series_instance_uid: str, reason: str) -> lifecycle_pb2.DeleteSeriesResponse:
        return await self._unary(self._lifecycle.DeleteSeries, lifecycle_pb2.DeleteSeriesRequest(
            series_instance_uid=series_instance_uid, reason=reason))

    async def delete_instance(self, sop_instance_uid: str, reason: str) -> lifecycle_pb2.DeleteInstanceResponse:
        return await self._unary(self._lifecycle.DeleteInstance, lifecycle_pb2.DeleteInstanceRequest(
            sop_instance_uid=sop_instance_uid, reason=reason))

    async def undelete(self, *, study_instance_uid: str = "", series_instance_uid: str = "",
                       sop_instance_uid: str = "") -> lifecycle_pb2.UndeleteResponse:
        return await self._unary(self._lifecycle.Undelete, _undelete_request(
            study_instance_uid, series_instance_uid, sop_instance_uid))

    async def deleted_items(self) -> list[lifecycle_pb2.DeletedItem]:
        return list((await self._unary(self._lifecycle.ListDeleted, lifecycle_pb2.ListDeletedRequest())).items)
