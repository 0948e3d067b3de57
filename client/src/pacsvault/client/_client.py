"""The typed client: one method per thing an integrator does."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import blake3
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pacsvault.v1 import (
    appliance_pb2,
    appliance_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    archive_pb2,
    archive_pb2_grpc,
    common_pb2,
    replication_pb2,
    replication_pb2_grpc,
    security_pb2,
    security_pb2_grpc,
    storage_pb2,
    storage_pb2_grpc,
)

DEFAULT_SERVER = "127.0.0.1:50051"
CHUNK_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
LEVELS = {
    "patient": archive_pb2.QUERY_LEVEL_PATIENT,
    "study": archive_pb2.QUERY_LEVEL_STUDY,
    "series": archive_pb2.QUERY_LEVEL_SERIES,
    "instance": archive_pb2.QUERY_LEVEL_INSTANCE,
}
_STATUS = {archive_pb2.STORE_STATUS_STORED: "stored", archive_pb2.STORE_STATUS_DUPLICATE: "duplicate"}


def default_server() -> str:
    return os.environ.get("PACSVAULT_SERVER") or DEFAULT_SERVER


@dataclass(frozen=True)
class StoreResult:
    """What happened to one file: status is stored, duplicate or rejected."""

    path: str
    status: str
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    digest: str = ""
    message: str = ""
    code: str = "OK"

    @property
    def ok(self) -> bool:
        return self.status != "rejected"


class IntegrityError(Exception):
    """Received bytes do not match the digest the appliance sent with them."""


class PacsvaultClient:
    """A connection to one appliance. Thread-safe; share one per process."""

    def __init__(self, target: str | None = None, *, timeout: float | None = 300.0,
                 ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None,
                 token: str | None = None, pin: str | None = None) -> None:
        """Plaintext to a loopback appliance; mutual TLS when ``ca_file`` is given (or
        ``$PACSVAULT_CA_FILE``, with ``$PACSVAULT_CERT_FILE`` / ``$PACSVAULT_KEY_FILE``).
        ``token`` (or ``$PACSVAULT_TOKEN``) is sent as a bearer token; ``pin`` goes
        with a share token that asks for one."""
        self.target = target or default_server()
        self.timeout = timeout
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        ca_file = ca_file or os.environ.get("PACSVAULT_CA_FILE")
        if ca_file:
            cert_file = cert_file or os.environ.get("PACSVAULT_CERT_FILE")
            key_file = key_file or os.environ.get("PACSVAULT_KEY_FILE")
            credentials = grpc.ssl_channel_credentials(
                Path(ca_file).read_bytes(),
                Path(key_file).read_bytes() if key_file else None,
                Path(cert_file).read_bytes() if cert_file else None,
            )
            self._channel = grpc.secure_channel(self.target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(self.target, options=options)
        token = token or os.environ.get("PACSVAULT_TOKEN")
        if token:
            metadata = [("authorization", f"Bearer {token}")] + ([("x-pacsvault-pin", pin)] if pin else [])
            self._channel = grpc.intercept_channel(self._channel, _Credentials(metadata))
        self._archive = archive_pb2_grpc.ArchiveServiceStub(self._channel)
        self._appliance = appliance_pb2_grpc.ApplianceServiceStub(self._channel)
        self._storage = storage_pb2_grpc.StorageServiceStub(self._channel)
        self._replication = replication_pb2_grpc.ReplicationServiceStub(self._channel)
        self._security = security_pb2_grpc.SecurityServiceStub(self._channel)
        self._shares = security_pb2_grpc.ShareServiceStub(self._channel)
        self._audit = audit_pb2_grpc.AuditServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PacsvaultClient:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    # -- store ------------------------------------------------------------

    def store(self, data: bytes, *, path: str = "", timeout: float | None = None) -> StoreResult:
        """Stores one DICOM Part 10 file; a rejection is a result, not an exception."""
        digest = blake3.blake3(data).hexdigest()
        expected = common_pb2.Digest(
            function=common_pb2.DIGEST_FUNCTION_BLAKE3, hash=digest, size_bytes=len(data)
        )

        def chunks() -> Iterator[archive_pb2.StoreInstanceRequest]:
            yield archive_pb2.StoreInstanceRequest(data=data[:CHUNK_BYTES], expected_digest=expected)
            for at in range(CHUNK_BYTES, len(data), CHUNK_BYTES):
                yield archive_pb2.StoreInstanceRequest(data=data[at : at + CHUNK_BYTES])

        try:
            response = self._archive.StoreInstance(chunks(), timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            return StoreResult(path, "rejected", digest=digest, message=exc.details() or "", code=exc.code().name)
        return StoreResult(
            path, _STATUS.get(response.status, "rejected"), response.sop_instance_uid,
            response.study_instance_uid, response.digest.hash, response.message,
        )

    def store_file(self, path: str | os.PathLike[str]) -> StoreResult:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            return StoreResult(str(path), "rejected", message=f"cannot read: {exc.strerror}", code="LOCAL")
        return self.store(data, path=str(path))

    # -- find -------------------------------------------------------------

    def find(self, level: str = "study", *, limit: int | None = None, page_size: int = 0,
             **filters: str) -> Iterator[common_pb2.Match]:
        """Every match, page after page; ``filters`` are QueryFilter fields.

        ``study_date`` takes "YYYYMMDD-YYYYMMDD" (either side may be empty).
        """
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}")
        study_date = filters.pop("study_date", "")
        query_filter = archive_pb2.QueryFilter(**filters)
        if study_date:
            start, _, end = study_date.partition("-")
            query_filter.study_date.CopyFrom(archive_pb2.DateRange(start=start, end=end if "-" in study_date else start))
        request = archive_pb2.FindRequest(level=LEVELS[level], filter=query_filter, page_size=page_size)
        yield from self._pages(lambda r: self._archive.Find(r, timeout=self.timeout), request, "matches", limit)

    def patient_studies(self, patient_id: str, issuer_of_patient_id: str = "",
                        *, limit: int | None = None) -> Iterator[common_pb2.Match]:
        """Every study of one patient (under every issuer when none is given)."""
        request = archive_pb2.ListPatientStudiesRequest(
            patient_id=patient_id, issuer_of_patient_id=issuer_of_patient_id
        )
        yield from self._pages(
            lambda r: self._archive.ListPatientStudies(r, timeout=self.timeout), request, "studies", limit
        )

    @staticmethod
    def _pages(call, request, field: str, limit: int | None) -> Iterator[common_pb2.Match]:  # type: ignore[no-untyped-def]
        seen = 0
        while True:
            response = call(request)
            for match in getattr(response, field):
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield match
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    # -- retrieve ---------------------------------------------------------

    def get_instance(self, sop_instance_uid: str) -> bytes:
        """The stored bytes, checked against their digest."""
        stream = self._archive.GetInstance(
            archive_pb2.GetInstanceRequest(sop_instance_uid=sop_instance_uid), timeout=self.timeout
        )
        return b"".join(data for _, data in _instances(stream))

    def save_instance(self, sop_instance_uid: str, path: str | os.PathLike[str]) -> Path:
        stream = self._archive.GetInstance(
            archive_pb2.GetInstanceRequest(sop_instance_uid=sop_instance_uid), timeout=self.timeout
        )
        target = Path(path)
        for _ in _write_instances(stream, lambda _: target):
            pass
        return target

    def iter_study(self, study_instance_uid: str) -> Iterator[tuple[common_pb2.InstanceAttributes, bytes]]:
        """Each instance of the study with its bytes, one at a time."""
        stream = self._archive.GetStudy(
            archive_pb2.GetStudyRequest(study_instance_uid=study_instance_uid), timeout=self.timeout
        )
        yield from _instances(stream)

    def iter_series(self, series_instance_uid: str) -> Iterator[tuple[common_pb2.InstanceAttributes, bytes]]:
        stream = self._archive.GetSeries(
            archive_pb2.GetSeriesRequest(series_instance_uid=series_instance_uid), timeout=self.timeout
        )
        yield from _instances(stream)

    def save_study(self, study_instance_uid: str, directory: str | os.PathLike[str]) -> list[Path]:
        """Streams a study to ``directory``, one <SOPInstanceUID>.dcm per instance."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        stream = self._archive.GetStudy(
            archive_pb2.GetStudyRequest(study_instance_uid=study_instance_uid), timeout=self.timeout
        )
        return list(_write_instances(stream, lambda a: out / f"{a.sop_instance_uid}.dcm"))

    def study_metadata(self, study_instance_uid: str) -> list[dict[str, object]]:
        """The study as DICOM JSON (PS3.18 F): a list of instance objects."""
        stream = self._archive.GetStudyMetadata(
            archive_pb2.GetStudyMetadataRequest(study_instance_uid=study_instance_uid), timeout=self.timeout
        )
        return [json.loads(m.dicom_json) for m in stream]

    # -- tiering -----------------------------------------------------------

    def prefetch(self, patient_id: str, issuer_of_patient_id: str = "") -> archive_pb2.PrefetchResponse:
        """Brings a patient's studies to the fastest tier ahead of an exam."""
        return self._archive.Prefetch(archive_pb2.PrefetchRequest(
            patient_id=patient_id, issuer_of_patient_id=issuer_of_patient_id), timeout=self.timeout)

    def pin(self, study_instance_uid: str, until: str) -> archive_pb2.PinResponse:
        """Keeps a study on the fastest tier until ``until`` (YYYYMMDD); '' unpins."""
        return self._archive.Pin(archive_pb2.PinRequest(study_instance_uid=study_instance_uid, until=until),
                                 timeout=self.timeout)

    def delete_study(self, study_instance_uid: str, reason: str) -> archive_pb2.DeleteStudyResponse:
        """Deletes a study for good, here and at the peer (admin role); ``reason`` goes to the audit trail.

        Where a second admin must approve, nothing is deleted yet: the answer's
        ``approval_request_id`` is what they approve.
        """
        return self._archive.DeleteStudy(archive_pb2.DeleteStudyRequest(
            study_instance_uid=study_instance_uid, reason=reason), timeout=self.timeout)

    def approve_study_deletion(self, request_id: str) -> archive_pb2.ApproveStudyDeletionResponse:
        """Approves another admin's deletion request: the study is deleted now."""
        return self._archive.ApproveStudyDeletion(archive_pb2.ApproveStudyDeletionRequest(request_id=request_id),
                                                  timeout=self.timeout)

    def study_deletion_requests(self) -> list[archive_pb2.StudyDeletionRequest]:
        """Deletions waiting for a second admin."""
        return list(self._archive.ListStudyDeletionRequests(archive_pb2.ListStudyDeletionRequestsRequest(),
                                                            timeout=self.timeout).requests)

    def list_volumes(self) -> storage_pb2.ListVolumesResponse:
        return self._storage.ListVolumes(storage_pb2.ListVolumesRequest(), timeout=self.timeout)

    def plan_moves(self, limit: int = 100) -> storage_pb2.PlanMovesResponse:
        return self._storage.PlanMoves(storage_pb2.PlanMovesRequest(limit=limit), timeout=self.timeout)

    def add_volume(self, tier: str, path: str) -> storage_pb2.Volume:
        return self._storage.AddVolume(storage_pb2.AddVolumeRequest(tier=tier, path=path), timeout=self.timeout).volume

    def drain_volume(self, volume: str) -> storage_pb2.Volume:
        return self._storage.DrainVolume(storage_pb2.DrainVolumeRequest(volume=volume), timeout=self.timeout).volume

    # -- replication -------------------------------------------------------

    def replication_status(self) -> replication_pb2.GetReplicationStatusResponse:
        return self._replication.GetReplicationStatus(replication_pb2.GetReplicationStatusRequest(),
                                                      timeout=self.timeout)

    def restore_from_peer(self) -> Iterator[replication_pb2.RestoreFromPeerResponse]:
        """Rebuilds the appliance from its peer; yields progress. No deadline: it may take hours."""
        yield from self._replication.RestoreFromPeer(replication_pb2.RestoreFromPeerRequest())

    def reseed_peer(self) -> int:
        return self._replication.ReseedPeer(replication_pb2.ReseedPeerRequest(), timeout=self.timeout).entries_queued

    # -- security and shares ----------------------------------------------

    def rotate_keys(self) -> int:
        """Makes a new key-encryption key active; the daemon re-wraps every data key in the background."""
        return self._security.RotateKeys(security_pb2.RotateKeysRequest(), timeout=self.timeout).active_version

    def encryption_status(self) -> security_pb2.GetEncryptionStatusResponse:
        return self._security.GetEncryptionStatus(security_pb2.GetEncryptionStatusRequest(), timeout=self.timeout)

    def create_share(self, *, study_instance_uid: str = "", patient_id: str = "", issuer_of_patient_id: str = "",
                     ttl_seconds: float = 7 * 86400, max_uses: int = 0,
                     pin: str = "") -> security_pb2.CreateShareResponse:
        """A read-only grant to one study or one patient's studies; the token is shown only here."""
        return self._shares.CreateShare(security_pb2.CreateShareRequest(
            study_instance_uid=study_instance_uid, patient_id=patient_id,
            issuer_of_patient_id=issuer_of_patient_id, ttl_seconds=ttl_seconds, max_uses=max_uses, pin=pin,
        ), timeout=self.timeout)

    def list_shares(self) -> list[security_pb2.ShareInfo]:
        return list(self._shares.ListShares(security_pb2.ListSharesRequest(), timeout=self.timeout).shares)

    def revoke_share(self, share_id: str) -> None:
        self._shares.RevokeShare(security_pb2.RevokeShareRequest(share_id=share_id), timeout=self.timeout)

    def create_token(self, principal: str, ttl_seconds: float,
                     idle_timeout_seconds: float = 0) -> security_pb2.CreateTokenResponse:
        return self._security.CreateToken(security_pb2.CreateTokenRequest(
            principal=principal, ttl_seconds=ttl_seconds, idle_timeout_seconds=idle_timeout_seconds,
        ), timeout=self.timeout)

    def list_tokens(self) -> list[security_pb2.TokenInfo]:
        return list(self._security.ListTokens(security_pb2.ListTokensRequest(), timeout=self.timeout).tokens)

    def revoke_token(self, token_id: str) -> None:
        self._security.RevokeToken(security_pb2.RevokeTokenRequest(token_id=token_id), timeout=self.timeout)

    def revoke_certificate(self, *, identity: str = "", serial_hex: str = "", reason: str = "") -> None:
        self._security.RevokeCertificate(security_pb2.RevokeCertificateRequest(
            identity=identity, serial_hex=serial_hex, reason=reason), timeout=self.timeout)

    def break_glass(self, reason: str, minutes: int) -> float:
        return self._security.BreakGlass(security_pb2.BreakGlassRequest(reason=reason, minutes=minutes),
                                         timeout=self.timeout).expires_at

    # -- audit ---------------------------------------------------------------

    def audit_verify(self) -> audit_pb2.VerifyAuditResponse:
        return self._audit.VerifyAudit(audit_pb2.VerifyAuditRequest(), timeout=self.timeout)

    def audit_query(self, *, patient_id: str = "", principal: str = "", study_instance_uid: str = "",
                    since: float = 0, until: float = 0) -> Iterator[dict[str, object]]:
        request = audit_pb2.QueryAuditRequest(patient_id=patient_id, principal=principal,
                                              study_instance_uid=study_instance_uid, since=since, until=until)
        for message in self._audit.QueryAudit(request, timeout=self.timeout):
            yield json.loads(message.record_json)

    # -- health -----------------------------------------------------------

    def health(self) -> appliance_pb2.GetApplianceHealthResponse:
        return self._appliance.GetApplianceHealth(appliance_pb2.GetApplianceHealthRequest(), timeout=self.timeout)

    def watch_health(self, timeout: float | None = None) -> Iterator[appliance_pb2.WatchHealthResponse]:
        """The current health (a ``snapshot``), then each ``event`` as it happens.

        Runs until ``timeout`` seconds (None: until cancelled or the daemon
        stops); ``.cancel()`` on the returned iterator ends it early.
        """
        return self._appliance.WatchHealth(appliance_pb2.WatchHealthRequest(), timeout=timeout)  # type: ignore[no-any-return]

    def serving_status(self, service: str = "") -> str:
        """The standard grpc.health.v1 answer: SERVING, NOT_SERVING, ..."""
        response = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


class _Credentials(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the bearer token (and PIN) to every call."""

    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata

    def _details(self, details):  # type: ignore[no-untyped-def]
        return details._replace(metadata=[*(details.metadata or []), *self._metadata])

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), requests)


def _instances(stream) -> Iterator[tuple[common_pb2.InstanceAttributes, bytes]]:  # type: ignore[no-untyped-def]
    current: common_pb2.InstanceAttributes | None = None
    parts: list[bytes] = []
    for message in stream:
        if message.HasField("instance"):
            if current is not None:
                yield current, _verified(current, b"".join(parts))
            current, parts = message.instance, []
        parts.append(message.data)
    if current is not None:
        yield current, _verified(current, b"".join(parts))


def _verified(attributes: common_pb2.InstanceAttributes, data: bytes) -> bytes:
    if blake3.blake3(data).hexdigest() != attributes.digest.hash or len(data) != attributes.digest.size_bytes:
        raise IntegrityError(f"instance {attributes.sop_instance_uid}: received bytes fail their digest")
    return data


def _write_instances(stream, name_of) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    """Writes each instance as it streams in; a file appears only once it verifies."""
    current = None
    out = None
    hasher = None
    tmp: Path | None = None
    try:
        for message in stream:
            if message.HasField("instance"):
                if current is not None:
                    yield _finish(current, out, hasher, tmp, name_of(current))
                current, hasher = message.instance, blake3.blake3()
                tmp = name_of(current).with_suffix(".part")
                out = open(tmp, "wb")  # noqa: SIM115 - closed in _finish
            out.write(message.data)
            hasher.update(message.data)
        if current is not None:
            yield _finish(current, out, hasher, tmp, name_of(current))
            current = None
    finally:
        if current is not None and out is not None:
            out.close()
            tmp.unlink(missing_ok=True)


def _finish(attributes, out, hasher, tmp: Path, final: Path) -> Path:  # type: ignore[no-untyped-def]
    out.close()
    if hasher.hexdigest() != attributes.digest.hash:
        tmp.unlink(missing_ok=True)
        raise IntegrityError(f"instance {attributes.sop_instance_uid}: received bytes fail their digest")
    os.replace(tmp, final)
    return final
