"""The blocking client: one method per thing an integrator or operator does."""

from __future__ import annotations

import itertools

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeVar, overload

import blake3
import grpc
import pydicom
from grpc_health.v1 import health_pb2

from pacsvault.client._channel import DEFAULT_CONNECTIONS, DEFAULT_RETRY, HEALTH_CHECK, Connection, RetryPolicy
from pacsvault.client._consume import as_datasets, assembled, save
from pacsvault.client._errors import DeadlineExceeded, PacsvaultError, mapped_errors
from pacsvault.client._lifecycle import LifecycleCalls
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
from pacsvault.client._streams import MessageStream
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


class PacsvaultClient(LifecycleCalls):
    """A connection to one appliance. Thread-safe: share one per process.

    ``timeout`` bounds each call; for streamed answers (retrievals, metadata,
    audit queries) it bounds each wait for the next message instead, so a
    long transfer that keeps moving never times out. ``retry`` is gRPC's retry
    of the idempotent reads on UNAVAILABLE (None turns it off). Every method
    raises only the exceptions of ``pacsvault.client`` (``PacsvaultError`` and
    its subclasses) for the appliance's refusals, and ``OSError`` for local files.
    """

    def __init__(self, target: str | None = None, *, timeout: float | None = 300.0,
                 ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None,
                 token: str | None = None, pin: str | None = None,
                 retry: RetryPolicy | None = DEFAULT_RETRY, connections: int = DEFAULT_CONNECTIONS) -> None:
        """Plaintext to a loopback appliance; mutual TLS when ``ca_file`` is given (or
        ``$PACSVAULT_CA_FILE``, with ``$PACSVAULT_CERT_FILE`` / ``$PACSVAULT_KEY_FILE``).
        ``token`` (or ``$PACSVAULT_TOKEN``) is sent as a bearer token; ``pin`` goes
        with a share token that asks for one.

        ``connections``: the archive's calls (store, find, retrieve) go round-robin
        over this many connections. The appliance's serving processes share its
        port and the kernel hands each connection to one of them, so one
        connection is served by one process (one core) however many calls it
        carries; several spread a busy client over the appliance's cores."""
        if connections < 1:
            raise ValueError("connections must be at least 1")
        connection = Connection.resolve(target, ca_file=ca_file, cert_file=cert_file, key_file=key_file,
                                        token=token, pin=pin, retry=retry)
        self.target = connection.target
        self.timeout = timeout
        self._metadata = connection.metadata
        self._channels = [connection.channel(own_connection=connections > 1) for _ in range(connections)]
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
    def _archive(self) -> archive_pb2_grpc.ArchiveServiceStub:
        """The next connection's stub (round-robin; a stream stays on the one it started on)."""
        return next(self._archives)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> PacsvaultClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _unary(self, method: grpc.UnaryUnaryMultiCallable[Req, Resp], request: Req) -> Resp:
        with mapped_errors():
            return method(request, timeout=self.timeout, metadata=self._metadata)

    def _stream(self, method: grpc.UnaryStreamMultiCallable[Req, Resp], request: Req) -> MessageStream[Resp]:
        with mapped_errors():
            return MessageStream(method(request, metadata=self._metadata), self.timeout)

    # -- store ------------------------------------------------------------

    def store(self, data: bytes, *, path: str = "", timeout: float | None = None) -> StoreResult:
        """Stores one DICOM Part 10 file; a rejection is a result, not an exception.

        A file that fits in one message goes whole in one call (PutInstance); a larger one,
        or one an older appliance will not take so, is streamed in chunks (StoreInstance).
        """
        if len(data) <= ONE_MESSAGE_BYTES:
            digest, expected = expected_digest(data)
            try:
                with mapped_errors():
                    put = self._archive.PutInstance(archive_pb2.PutInstanceRequest(data=data, expected_digest=expected),
                                                    timeout=timeout or self.timeout, metadata=self._metadata)
                return store_result(path, put.outcome)
            except PacsvaultError as error:
                if error.code() not in (grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNIMPLEMENTED):
                    return rejected(path, digest, error)
        digest, chunks = store_requests(data)
        try:
            with mapped_errors():
                response = self._archive.StoreInstance(chunks, timeout=timeout or self.timeout,
                                                       metadata=self._metadata)
        except PacsvaultError as error:
            return rejected(path, digest, error)
        return store_result(path, response)

    def store_file(self, path: str | os.PathLike[str]) -> StoreResult:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            return StoreResult(str(path), "rejected", message=f"cannot read: {exc.strerror}", code="LOCAL")
        return self.store(data, path=str(path))

    # -- find -------------------------------------------------------------

    def find(self, level: Level = "study", *, patient_id: str = "", issuer_of_patient_id: str = "",
             patient_name: str = "", study_instance_uid: str = "", series_instance_uid: str = "",
             accession_number: str = "", modality: str = "", study_date: str = "",
             limit: int | None = None, page_size: int = 0) -> Iterator[common_pb2.Match]:
        """Every match, page after page, in the appliance's order.

        ``patient_name`` is case-insensitive with ``*`` and ``?``; ``study_date``
        takes ``YYYYMMDD`` or ``YYYYMMDD-YYYYMMDD`` (either side may be empty).
        """
        request = FindFilter(patient_id, issuer_of_patient_id, patient_name, study_instance_uid,
                             series_instance_uid, accession_number, modality, study_date).request(level, page_size)
        seen = 0
        while True:
            response = self._unary(self._archive.Find, request)
            for match in response.matches:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield match
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def patient_studies(self, patient_id: str, issuer_of_patient_id: str = "",
                        *, limit: int | None = None) -> Iterator[common_pb2.Match]:
        """Every study of one patient (under every issuer when none is given)."""
        request = archive_pb2.ListPatientStudiesRequest(patient_id=patient_id,
                                                        issuer_of_patient_id=issuer_of_patient_id)
        seen = 0
        while True:
            response = self._unary(self._archive.ListPatientStudies, request)
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
    def get_instance(self, sop_instance_uid: str, *, as_dataset: Literal[False] = False) -> bytes: ...
    @overload
    def get_instance(self, sop_instance_uid: str, *, as_dataset: Literal[True]) -> pydicom.Dataset: ...

    def get_instance(self, sop_instance_uid: str, *, as_dataset: bool = False) -> bytes | pydicom.Dataset:
        """The stored bytes, checked against their digest (a ``pydicom.Dataset`` with ``as_dataset``).

        One message (ReadInstance) for an instance that fits in one; a larger one is streamed.
        """
        try:
            with mapped_errors():
                response = self._archive.ReadInstance(
                    archive_pb2.ReadInstanceRequest(sop_instance_uid=sop_instance_uid), timeout=self.timeout,
                    metadata=self._metadata)
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
            [(_, data)] = list(assembled(stream))
        return to_dataset(data) if as_dataset else data

    def save_instance(self, sop_instance_uid: str, path: str | os.PathLike[str], *,
                      overwrite: bool = True) -> SavedInstance:
        """Writes one instance to ``path`` (its folder must exist), verified before it takes the name.

        A file already there with the same bytes is left as it is; one with
        other bytes is replaced, or FileExistsError when not ``overwrite``.
        """
        target = Path(path)
        check_file(target)
        stream = self._stream(self._archive.GetInstance,
                              archive_pb2.GetInstanceRequest(sop_instance_uid=sop_instance_uid))
        [saved] = save(stream, InstanceFiles(lambda _: target, overwrite=overwrite), None)
        return saved

    @overload
    def iter_study(self, study_instance_uid: str, *, as_dataset: Literal[False] = False) -> Iterator[Instance]: ...
    @overload
    def iter_study(self, study_instance_uid: str, *, as_dataset: Literal[True]) -> Iterator[DatasetInstance]: ...

    def iter_study(self, study_instance_uid: str, *,
                   as_dataset: bool = False) -> Iterator[Instance] | Iterator[DatasetInstance]:
        """Each instance of the study with its verified bytes, one at a time, series by series in
        InstanceNumber order."""
        stream = self._stream(self._archive.GetStudy,
                              archive_pb2.GetStudyRequest(study_instance_uid=study_instance_uid))
        return as_datasets(assembled(stream)) if as_dataset else assembled(stream)

    @overload
    def iter_series(self, series_instance_uid: str, *, as_dataset: Literal[False] = False) -> Iterator[Instance]: ...
    @overload
    def iter_series(self, series_instance_uid: str, *, as_dataset: Literal[True]) -> Iterator[DatasetInstance]: ...

    def iter_series(self, series_instance_uid: str, *,
                    as_dataset: bool = False) -> Iterator[Instance] | Iterator[DatasetInstance]:
        stream = self._stream(self._archive.GetSeries,
                              archive_pb2.GetSeriesRequest(series_instance_uid=series_instance_uid))
        return as_datasets(assembled(stream)) if as_dataset else assembled(stream)

    def save_study(self, study_instance_uid: str, directory: str | os.PathLike[str], *,
                   progress: Progress | None = None) -> list[SavedInstance]:
        """Streams a study into ``directory`` (made when the first instance arrives), one
        ``<SOPInstanceUID>.dcm`` per instance. Files already there with the digest the
        appliance sends are kept: running it again after an interruption resumes it.
        ``progress`` is called after each instance."""
        out = Path(directory)
        check_folder(out)
        stream = self._stream(self._archive.GetStudy,
                              archive_pb2.GetStudyRequest(study_instance_uid=study_instance_uid))
        return save(stream, InstanceFiles(in_folder(out)), progress)

    def save_series(self, series_instance_uid: str, directory: str | os.PathLike[str], *,
                    progress: Progress | None = None) -> list[SavedInstance]:
        """As ``save_study``, for one series."""
        out = Path(directory)
        check_folder(out)
        stream = self._stream(self._archive.GetSeries,
                              archive_pb2.GetSeriesRequest(series_instance_uid=series_instance_uid))
        return save(stream, InstanceFiles(in_folder(out)), progress)

    def study_metadata(self, study_instance_uid: str) -> list[dict[str, object]]:
        """The study as DICOM JSON (PS3.18 F): a list of instance objects, in reading order."""
        return [item.dicom_json for item in self.study_metadata_items(study_instance_uid)]

    def study_metadata_items(self, study_instance_uid: str) -> list[InstanceMetadata]:
        """Each instance's DICOM JSON with the tier that holds it, in reading order."""
        stream = self._stream(self._archive.GetStudyMetadata,
                              archive_pb2.GetStudyMetadataRequest(study_instance_uid=study_instance_uid))
        return sorted((metadata_item(m) for m in stream), key=metadata_order)

    # -- tiering -----------------------------------------------------------

    def prefetch(self, patient_id: str, issuer_of_patient_id: str = "") -> archive_pb2.PrefetchResponse:
        """Brings a patient's studies to the fastest tier ahead of an exam."""
        return self._unary(self._archive.Prefetch, archive_pb2.PrefetchRequest(
            patient_id=patient_id, issuer_of_patient_id=issuer_of_patient_id))

    def pin(self, study_instance_uid: str, until: str) -> archive_pb2.PinResponse:
        """Keeps a study on the fastest tier until ``until`` (YYYYMMDD); '' unpins."""
        return self._unary(self._archive.Pin, archive_pb2.PinRequest(study_instance_uid=study_instance_uid,
                                                                     until=until))

    def delete_study(self, study_instance_uid: str, reason: str) -> archive_pb2.DeleteStudyResponse:
        """Deletes a study for good, here and at the peer (admin role); ``reason`` goes to the audit trail.

        Where a second admin must approve, nothing is deleted yet: the answer's
        ``approval_request_id`` is what they approve.
        """
        return self._unary(self._archive.DeleteStudy, archive_pb2.DeleteStudyRequest(
            study_instance_uid=study_instance_uid, reason=reason))

    def approve_study_deletion(self, request_id: str) -> archive_pb2.ApproveStudyDeletionResponse:
        """Approves another admin's deletion request: the study is deleted now."""
        return self._unary(self._archive.ApproveStudyDeletion,
                           archive_pb2.ApproveStudyDeletionRequest(request_id=request_id))

    def study_deletion_requests(self) -> list[archive_pb2.StudyDeletionRequest]:
        """Deletions waiting for a second admin."""
        return list(self._unary(self._archive.ListStudyDeletionRequests,
                                archive_pb2.ListStudyDeletionRequestsRequest()).requests)

    def list_volumes(self) -> storage_pb2.ListVolumesResponse:
        return self._unary(self._storage.ListVolumes, storage_pb2.ListVolumesRequest())

    def plan_moves(self, limit: int = 100) -> storage_pb2.PlanMovesResponse:
        return self._unary(self._storage.PlanMoves, storage_pb2.PlanMovesRequest(limit=limit))

    def add_volume(self, tier: str, path: str) -> storage_pb2.Volume:
        return self._unary(self._storage.AddVolume, storage_pb2.AddVolumeRequest(tier=tier, path=path)).volume

    def drain_volume(self, volume: str) -> storage_pb2.Volume:
        return self._unary(self._storage.DrainVolume, storage_pb2.DrainVolumeRequest(volume=volume)).volume

    # -- replication -------------------------------------------------------

    def replication_status(self) -> replication_pb2.GetReplicationStatusResponse:
        return self._unary(self._replication.GetReplicationStatus, replication_pb2.GetReplicationStatusRequest())

    def restore_from_peer(self) -> Iterator[replication_pb2.RestoreFromPeerResponse]:
        """Rebuilds the appliance from its peer; yields progress. No deadline: it may take hours."""
        with mapped_errors():
            call = self._replication.RestoreFromPeer(replication_pb2.RestoreFromPeerRequest(),
                                                     metadata=self._metadata)
        return MessageStream(call, None)

    def reseed_peer(self) -> int:
        """Queues every instance for the peer again; returns how many."""
        return self._unary(self._replication.ReseedPeer, replication_pb2.ReseedPeerRequest()).entries_queued

    # -- security and shares ----------------------------------------------

    def rotate_keys(self) -> int:
        """Makes a new key-encryption key active; the daemon re-wraps every data key in the background."""
        return self._unary(self._security.RotateKeys, security_pb2.RotateKeysRequest()).active_version

    def encryption_status(self) -> security_pb2.GetEncryptionStatusResponse:
        return self._unary(self._security.GetEncryptionStatus, security_pb2.GetEncryptionStatusRequest())

    def create_share(self, *, study_instance_uid: str = "", patient_id: str = "", issuer_of_patient_id: str = "",
                     ttl_seconds: float = 7 * 86400, max_uses: int = 0,
                     pin: str = "") -> security_pb2.CreateShareResponse:
        """A read-only grant to one study or one patient's studies; the token is shown only here."""
        return self._unary(self._shares.CreateShare, security_pb2.CreateShareRequest(
            study_instance_uid=study_instance_uid, patient_id=patient_id,
            issuer_of_patient_id=issuer_of_patient_id, ttl_seconds=ttl_seconds, max_uses=max_uses, pin=pin))

    def list_shares(self) -> list[security_pb2.ShareInfo]:
        return list(self._unary(self._shares.ListShares, security_pb2.ListSharesRequest()).shares)

    def revoke_share(self, share_id: str) -> None:
        self._unary(self._shares.RevokeShare, security_pb2.RevokeShareRequest(share_id=share_id))

    def create_token(self, principal: str, ttl_seconds: float,
                     idle_timeout_seconds: float = 0) -> security_pb2.CreateTokenResponse:
        return self._unary(self._security.CreateToken, security_pb2.CreateTokenRequest(
            principal=principal, ttl_seconds=ttl_seconds, idle_timeout_seconds=idle_timeout_seconds))

    def list_tokens(self) -> list[security_pb2.TokenInfo]:
        return list(self._unary(self._security.ListTokens, security_pb2.ListTokensRequest()).tokens)

    def revoke_token(self, token_id: str) -> None:
        self._unary(self._security.RevokeToken, security_pb2.RevokeTokenRequest(token_id=token_id))

    def revoke_certificate(self, *, identity: str = "", serial_hex: str = "", reason: str = "") -> None:
        self._unary(self._security.RevokeCertificate, security_pb2.RevokeCertificateRequest(
            identity=identity, serial_hex=serial_hex, reason=reason))

    def break_glass(self, reason: str, minutes: int) -> float:
        """Adds the break-glass roles for ``minutes``; returns when they expire (epoch seconds)."""
        return self._unary(self._security.BreakGlass,
                           security_pb2.BreakGlassRequest(reason=reason, minutes=minutes)).expires_at

    # -- audit ---------------------------------------------------------------

    def audit_verify(self) -> audit_pb2.VerifyAuditResponse:
        return self._unary(self._audit.VerifyAudit, audit_pb2.VerifyAuditRequest())

    def audit_query(self, *, patient_id: str = "", principal: str = "", study_instance_uid: str = "",
                    since: float = 0, until: float = 0) -> Iterator[dict[str, object]]:
        request = audit_pb2.QueryAuditRequest(patient_id=patient_id, principal=principal,
                                              study_instance_uid=study_instance_uid, since=since, until=until)
        for message in self._stream(self._audit.QueryAudit, request):
            yield json.loads(message.record_json)

    # -- health -----------------------------------------------------------

    def health(self) -> appliance_pb2.GetApplianceHealthResponse:
        return self._unary(self._appliance.GetApplianceHealth, appliance_pb2.GetApplianceHealthRequest())

    def watch_health(self, timeout: float | None = None) -> MessageStream[appliance_pb2.WatchHealthResponse]:
        """The current health (a ``snapshot``), then each ``event`` as it happens.

        Runs until ``timeout`` seconds (None: until cancelled or the daemon
        stops); ``.cancel()`` on the returned stream ends it early.
        """
        with mapped_errors():
            call = self._appliance.WatchHealth(appliance_pb2.WatchHealthRequest(), timeout=timeout,
                                               metadata=self._metadata)
        return MessageStream(call, None)

    def serving_status(self, service: str = "") -> str:
        """The standard grpc.health.v1 answer: SERVING, NOT_SERVING, ..."""
        response = self._unary(self._health_check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

