"""The asyncio client (grpc.aio): the blocking client's surface, every method awaitable.

File writes and hashing of local files run in worker threads
(``asyncio.to_thread``), so saving a study never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeVar, overload

import blake3
import grpc.aio
import pydicom
from grpc_health.v1 import health_pb2

from pacsvault.client._channel import DEFAULT_CONNECTIONS, DEFAULT_RETRY, HEALTH_CHECK, Connection, RetryPolicy
from pacsvault.client._lifecycle import AsyncLifecycleCalls
from pacsvault.client._consume import aio_as_datasets, aio_assembled, aio_save
from pacsvault.client._errors import DeadlineExceeded, PacsvaultError, mapped_errors
from pacsvault.client._files import InstanceFiles, Progress, SavedInstance, check_file, check_folder, in_folder
from pacsvault.client._messages import (
    DatasetInstance,
    FindFilter,
    Instance,
    InstanceMetadata,
    Level,
    ONE_MESSAGE_BYTES,
    StoreResult,
    check_digest,
    expected_digest,
    metadata_item,
    metadata_order,
    rejected,
    store_requests,
    store_result,
    to_dataset,
)
from pacsvault.client._streams import AioMessageStream
from pacsvault.v1 import (
    appliance_pb2,
    appliance_pb2_grpc,
    archive_pb2,
    archive_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    replication_pb2,
    replication_pb2_grpc,
    security_pb2,
    security_pb2_grpc,
    storage_pb2,
    storage_pb2_grpc,
)

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class AsyncPacsvaultClient(AsyncLifecycleCalls):
    """As ``PacsvaultClient`` (same arguments, methods and exceptions), for asyncio code.

    Create it inside a running event loop; ``async with`` closes it.
    """

    def __init__(self, target: str | None = None, *, timeout: float | None = 300.0,
                 ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None,
                 token: str | None = None, pin: str | None = None,
                 retry: RetryPolicy | None = DEFAULT_RETRY, connections: int = DEFAULT_CONNECTIONS) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        connection = Connection.resolve(target, ca_file=ca_file, cert_file=cert_file, key_file=key_file,
                                        token=token, pin=pin, retry=retry)
        self.target = connection.target
        self.timeout = timeout
        self._metadata = connection.metadata
        self._channels = [connection.aio_channel(own_connection=connections > 1) for _ in range(connections)]
        self._channel = self._channels[0]
        self._archives = itertools.cycle([archive_pb2_grpc.ArchiveServiceStub(c) for c in self._channels])
        self._appliance = appliance_pb2_grpc.ApplianceServiceStub(self._channel)
        self._storage = storage_pb2_grpc.StorageServiceStub(self._channel)
        self._replication = replication_pb2_grpc.ReplicationServiceStub(self._channel)
        self._security = security_pb2_grpc.SecurityServiceStub(self._channel)
        self._shares = security_pb2_grpc.ShareServiceStub(self._channel)
        self._audit = audit_pb2_grpc.AuditServiceStub(self._channel)
        self._health_check = self._channel.unary_unary(
            HEALTH_CHECK, request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)

    @property
    def _archive(self) -> archive_pb2_grpc.ArchiveServiceAsyncStub:
        """The next connection's stub (round-robin, as PacsvaultClient)."""
        return next(self._archives)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def __aenter__(self) -> AsyncPacsvaultClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()

    async def _unary(self, method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp], request: Req) -> Resp:
        with mapped_errors():
            return await method(request, timeout=self.timeout, metadata=self._metadata)

    def _stream(self, method: grpc.aio.UnaryStreamMultiCallable[Req, Resp], request: Req) -> AioMessageStream[Resp]:
        with mapped_errors():
            return AioMessageStream(method(request, metadata=self._metadata), self.timeout)

    # -- store ------------------------------------------------------------

    async def store(self, data: bytes, *, path: str = "", timeout: float | None = None) -> StoreResult:
        """Stores one DICOM Part 10 file; a rejection is a result, not an exception (see PacsvaultClient.store)."""
        if len(data) <= ONE_MESSAGE_BYTES:
            digest, expected = expected_digest(data)
            try:
                with mapped_errors():
                    put = await self._archive.PutInstance(
                        archive_pb2.PutInstanceRequest(data=data, expected_digest=expected),
                        timeout=timeout or self.timeout, metadata=self._metadata)
                return store_result(path, put.outcome)
            except PacsvaultError as error:
                if error.code() not in (grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNIMPLEMENTED):
                    return rejected(path, digest, error)
        digest, chunks = store_requests(data)
        try:
            with mapped_errors():
                response = await self._archive.StoreInstance(chunks, timeout=timeout or self.timeout,
                                                             metadata=self._metadata)
        except PacsvaultError as error:
            return rejected(path, digest, error)
        return store_result(path, response)

    async def store_file(self, path: str | os.PathLike[str]) -> StoreResult:
        try:
            data = await asyncio.to_thread(Path(path).read_bytes)
        except OSError as exc:
            return StoreResult(str(path), "rejected", message=f"cannot read: {exc.strerror}", code="LOCAL")
        return await self.store(data, path=str(path))

    # -- find -------------------------------------------------------------

    async def find(self, level: Level = "study", *, patient_id: str = "", issuer_of_patient_id: str = "",
                   patient_name: str = "", study_instance_uid: str = "", series_instance_uid: str = "",
                   accession_number: str = "", modality: str = "", study_date: str = "",
                   limit: int | None = None, page_size: int = 0) -> AsyncIterator[common_pb2.Match]:
        """Every match, page after page (see ``PacsvaultClient.find``)."""
        request = FindFilter(patient_id, issuer_of_patient_id, patient_name, study_instance_uid,
                             series_instance_uid, accession_number, modality, study_date).request(level, page_size)
        seen = 0
        while True:
            response = await self._unary(self._archive.Find, request)
            for match in response.matches:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield match
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def patient_studies(self, patient_id: str, issuer_of_patient_id: str = "",
                              *, limit: int | None = None) -> AsyncIterator[common_pb2.Match]:
        """Every study of one patient (under every issuer when none is given)."""
        request = archive_pb2.ListPatientStudiesRequest(patient_id=patient_id,
                                                        issuer_of_patient_id=issuer_of_patient_id)
        seen = 0
        while True:
            response = await self._unary(self._archive.ListPatientStudies, request)
            for match in response.studies:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield match
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    # -- retrieve ---------------------------------------------------------

    @overload
    async def get_instance(self, sop_instance_uid: str, *, as_dataset: Literal[False] = False) -> bytes: ...
    @overload
    async def get_instance(self, sop_instance_uid: str, *, as_dataset: Literal[True]) -> pydicom.Dataset: ...

    async def get_instance(self, sop_instance_uid: str, *, as_dataset: bool = False) -> bytes | pydicom.Dataset:
        """The stored bytes, checked against their digest (a ``pydicom.Dataset`` with ``as_dataset``).

        One message (ReadInstance) for an instance that fits in one; a larger one is streamed.
        """
        try:
            response = await self._unary(self._archive.ReadInstance,
                                         archive_pb2.ReadInstanceRequest(sop_instance_uid=sop_instance_uid))
            data = response.data
            check_digest(response.instance, blake3.blake3(data).hexdigest(), len(data))
        except DeadlineExceeded as error:
            if self.timeout is None:
                raise
            raise DeadlineExceeded(f"no data from the appliance for {self.timeout:g} s (the deadline of the "
                                   "call)") from error
        except PacsvaultError as error:
            if error.code() != grpc.StatusCode.OUT_OF_RANGE:
                raise
            stream = self._stream(self._archive.GetInstance,
                                  archive_pb2.GetInstanceRequest(sop_instance_uid=sop_instance_uid))
            [(_, data)] = [instance async for instance in aio_assembled(stream)]
        return to_dataset(data) if as_dataset else data

    async def save_instance(self, sop_instance_uid: str, path: str | os.PathLike[str], *,
                            overwrite: bool = True) -> SavedInstance:
        """Writes one instance to ``path`` (see ``PacsvaultClient.save_instance``)."""
        target = Path(path)
        check_file(target)
        stream = self._stream(self._archive.GetInstance,
                              archive_pb2.GetInstanceRequest(sop_instance_uid=sop_instance_uid))
        [saved] = await aio_save(stream, InstanceFiles(lambda _: target, overwrite=overwrite), None)
        return saved

    @overload
    def iter_study(self, study_instance_uid: str, *,
                   as_dataset: Literal[False] = False) -> AsyncIterator[Instance]: ...
    @overload
    def iter_study(self, study_instance_uid: str, *, as_dataset: Literal[True]) -> AsyncIterator[DatasetInstance]: ...

    def iter_study(self, study_instance_uid: str, *,
                   as_dataset: bool = False) -> AsyncIterator[Instance] | AsyncIterator[DatasetInstance]:
        """Each instance of the study with its verified bytes (``async for``)."""
        stream = self._stream(self._archive.GetStudy,
                              archive_pb2.GetStudyRequest(study_instance_uid=study_instance_uid))
        return aio_as_datasets(aio_assembled(stream)) if as_dataset else aio_assembled(stream)

    @overload
    def iter_series(self, series_instance_uid: str, *,
                    as_dataset: Literal[False] = False) -> AsyncIterator[Instance]: ...
    @overload
    def iter_series(self, series_instance_uid: str, *, as_dataset: Literal[True]) -> AsyncIterator[DatasetInstance]: ...

    def iter_series(self, series_instance_uid: str, *,
                    as_dataset: bool = False) -> AsyncIterator[Instance] | AsyncIterator[DatasetInstance]:
        stream = self._stream(self._archive.GetSeries,
                              archive_pb2.GetSeriesRequest(series_instance_uid=series_instance_uid))
        return aio_as_datasets(aio_assembled(stream)) if as_dataset else aio_assembled(stream)

    async def save_study(self, study_instance_uid: str, directory: str | os.PathLike[str], *,
                         progress: Progress | None = None) -> list[SavedInstance]:
        """Streams a study into ``directory``, resumable (see ``PacsvaultClient.save_study``)."""
        out = Path(directory)
        check_folder(out)
        stream = self._stream(self._archive.GetStudy,
                              archive_pb2.GetStudyRequest(study_instance_uid=study_instance_uid))
        return await aio_save(stream, InstanceFiles(in_folder(out)), progress)

    async def save_series(self, series_instance_uid: str, directory: str | os.PathLike[str], *,
                          progress: Progress | None = None) -> list[SavedInstance]:
        out = Path(directory)
        check_folder(out)
        stream = self._stream(self._archive.GetSeries,
                              archive_pb2.GetSeriesRequest(series_instance_uid=series_instance_uid))
        return await aio_save(stream, InstanceFiles(in_folder(out)), progress)

    async def study_metadata(self, study_instance_uid: str) -> list[dict[str, object]]:
        """The study as DICOM JSON (PS3.18 F): a list of instance objects, in reading order."""
        return [item.dicom_json for item in await self.study_metadata_items(study_instance_uid)]

    async def study_metadata_items(self, study_instance_uid: str) -> list[InstanceMetadata]:
        """Each instance's DICOM JSON with the tier that holds it, in reading order."""
        stream = self._stream(self._archive.GetStudyMetadata,
                              archive_pb2.GetStudyMetadataRequest(study_instance_uid=study_instance_uid))
        return sorted([metadata_item(m) async for m in stream], key=metadata_order)

    # -- tiering -----------------------------------------------------------

    async def prefetch(self, patient_id: str, issuer_of_patient_id: str = "") -> archive_pb2.PrefetchResponse:
        return await self._unary(self._archive.Prefetch, archive_pb2.PrefetchRequest(
            patient_id=patient_id, issuer_of_patient_id=issuer_of_patient_id))

    async def pin(self, study_instance_uid: str, until: str) -> archive_pb2.PinResponse:
        return await self._unary(self._archive.Pin, archive_pb2.PinRequest(
            study_instance_uid=study_instance_uid, until=until))

    async def delete_study(self, study_instance_uid: str, reason: str) -> archive_pb2.DeleteStudyResponse:
        return await self._unary(self._archive.DeleteStudy, archive_pb2.DeleteStudyRequest(
            study_instance_uid=study_instance_uid, reason=reason))

    async def approve_study_deletion(self, request_id: str) -> archive_pb2.ApproveStudyDeletionResponse:
        """Approves another admin's deletion request: the study is deleted now."""
        return await self._unary(self._archive.ApproveStudyDeletion,
                                 archive_pb2.ApproveStudyDeletionRequest(request_id=request_id))

    async def study_deletion_requests(self) -> list[archive_pb2.StudyDeletionRequest]:
        """Deletions waiting for a second admin."""
        response = await self._unary(self._archive.ListStudyDeletionRequests,
                                     archive_pb2.ListStudyDeletionRequestsRequest())
        return list(response.requests)

    async def list_volumes(self) -> storage_pb2.ListVolumesResponse:
        return await self._unary(self._storage.ListVolumes, storage_pb2.ListVolumesRequest())

    async def plan_moves(self, limit: int = 100) -> storage_pb2.PlanMovesResponse:
        return await self._unary(self._storage.PlanMoves, storage_pb2.PlanMovesRequest(limit=limit))

    async def add_volume(self, tier: str, path: str) -> storage_pb2.Volume:
        response = await self._unary(self._storage.AddVolume, storage_pb2.AddVolumeRequest(tier=tier, path=path))
        return response.volume

    async def drain_volume(self, volume: str) -> storage_pb2.Volume:
        response = await self._unary(self._storage.DrainVolume, storage_pb2.DrainVolumeRequest(volume=volume))
        return response.volume

    # -- replication -------------------------------------------------------

    async def replication_status(self) -> replication_pb2.GetReplicationStatusResponse:
        return await self._unary(self._replication.GetReplicationStatus,
                                 replication_pb2.GetReplicationStatusRequest())

    def restore_from_peer(self) -> AioMessageStream[replication_pb2.RestoreFromPeerResponse]:
        """Rebuilds the appliance from its peer; ``async for`` the progress. No deadline."""
        with mapped_errors():
            call = self._replication.RestoreFromPeer(replication_pb2.RestoreFromPeerRequest(),
                                                     metadata=self._metadata)
        return AioMessageStream(call, None)

    async def reseed_peer(self) -> int:
        response = await self._unary(self._replication.ReseedPeer, replication_pb2.ReseedPeerRequest())
        return response.entries_queued

    # -- security and shares ----------------------------------------------

    async def rotate_keys(self) -> int:
        return (await self._unary(self._security.RotateKeys, security_pb2.RotateKeysRequest())).active_version

    async def encryption_status(self) -> security_pb2.GetEncryptionStatusResponse:
        return await self._unary(self._security.GetEncryptionStatus, security_pb2.GetEncryptionStatusRequest())

    async def create_share(self, *, study_instance_uid: str = "", patient_id: str = "",
                           issuer_of_patient_id: str = "", ttl_seconds: float = 7 * 86400, max_uses: int = 0,
                           pin: str = "") -> security_pb2.CreateShareResponse:
        return await self._unary(self._shares.CreateShare, security_pb2.CreateShareRequest(
            study_instance_uid=study_instance_uid, patient_id=patient_id,
            issuer_of_patient_id=issuer_of_patient_id, ttl_seconds=ttl_seconds, max_uses=max_uses, pin=pin))

    async def list_shares(self) -> list[security_pb2.ShareInfo]:
        return list((await self._unary(self._shares.ListShares, security_pb2.ListSharesRequest())).shares)

    async def revoke_share(self, share_id: str) -> None:
        await self._unary(self._shares.RevokeShare, security_pb2.RevokeShareRequest(share_id=share_id))

    async def create_token(self, principal: str, ttl_seconds: float,
                           idle_timeout_seconds: float = 0) -> security_pb2.CreateTokenResponse:
        return await self._unary(self._security.CreateToken, security_pb2.CreateTokenRequest(
            principal=principal, ttl_seconds=ttl_seconds, idle_timeout_seconds=idle_timeout_seconds))

    async def list_tokens(self) -> list[security_pb2.TokenInfo]:
        return list((await self._unary(self._security.ListTokens, security_pb2.ListTokensRequest())).tokens)

    async def revoke_token(self, token_id: str) -> None:
        await self._unary(self._security.RevokeToken, security_pb2.RevokeTokenRequest(token_id=token_id))

    async def revoke_certificate(self, *, identity: str = "", serial_hex: str = "", reason: str = "") -> None:
        await self._unary(self._security.RevokeCertificate, security_pb2.RevokeCertificateRequest(
            identity=identity, serial_hex=serial_hex, reason=reason))

    async def break_glass(self, reason: str, minutes: int) -> float:
        response = await self._unary(self._security.BreakGlass,
                                     security_pb2.BreakGlassRequest(reason=reason, minutes=minutes))
        return response.expires_at

    # -- audit ---------------------------------------------------------------

    async def audit_verify(self) -> audit_pb2.VerifyAuditResponse:
        return await self._unary(self._audit.VerifyAudit, audit_pb2.VerifyAuditRequest())

    async def audit_query(self, *, patient_id: str = "", principal: str = "", study_instance_uid: str = "",
                          since: float = 0, until: float = 0) -> AsyncIterator[dict[str, object]]:
        request = audit_pb2.QueryAuditRequest(patient_id=patient_id, principal=principal,
                                              study_instance_uid=study_instance_uid, since=since, until=until)
        async for message in self._stream(self._audit.QueryAudit, request):
            yield json.loads(message.record_json)

    # -- health -----------------------------------------------------------

    async def health(self) -> appliance_pb2.GetApplianceHealthResponse:
        return await self._unary(self._appliance.GetApplianceHealth, appliance_pb2.GetApplianceHealthRequest())

    def watch_health(self, timeout: float | None = None) -> AioMessageStream[appliance_pb2.WatchHealthResponse]:
        """The current health, then each event (see ``PacsvaultClient.watch_health``)."""
        with mapped_errors():
            call = self._appliance.WatchHealth(appliance_pb2.WatchHealthRequest(), timeout=timeout,
                                               metadata=self._metadata)
        return AioMessageStream(call, None)

    async def serving_status(self, service: str = "") -> str:
        response = await self._unary(self._health_check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

