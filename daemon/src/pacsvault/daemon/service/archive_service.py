"""pacsvault.v1.ArchiveService: the integrators' API."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import grpc

from pacsvault.daemon.config import LimitsConfig
from pacsvault.daemon.deletion_approval import DeletionApproval
from pacsvault.daemon.digest import Digest
from pacsvault.daemon.dicom.reading_order import in_reading_order
from pacsvault.daemon.errors import InvalidInput, OutOfRange, PermissionDenied, TooLarge, Unavailable
from pacsvault.daemon.index.catalog import AddOutcome
from pacsvault.daemon.index.records import BlobRecord, InstanceRecord
from pacsvault.daemon.ingest import Ingest, StoreResult
from pacsvault.daemon.retrieval import Retrieval
from pacsvault.daemon.search import Search
from pacsvault.daemon.security.credentials import CredentialStore
from pacsvault.daemon.security.scope import current_principal
from pacsvault.daemon.security.stream_watch import CredentialWatch
from pacsvault.daemon.service import convert
from pacsvault.daemon.service.lifecycle_service import timestamp
from pacsvault.daemon.service.status import mapped
from pacsvault.daemon.tiering.reads import ClinicalRequests
from pacsvault.v1 import archive_pb2, archive_pb2_grpc

CHUNK_BYTES = 1024 * 1024


def _caller() -> str:
    principal = current_principal.get()
    if principal is None:
        raise PermissionDenied("no authenticated caller")
    return principal.id


_STATUS = {
    AddOutcome.STORED: archive_pb2.STORE_STATUS_STORED,
    AddOutcome.DUPLICATE: archive_pb2.STORE_STATUS_DUPLICATE,
}


def _stored(result: StoreResult) -> archive_pb2.StoreInstanceResponse:
    return archive_pb2.StoreInstanceResponse(
        status=_STATUS[result.outcome], sop_instance_uid=result.instance.sop_instance_uid,
        series_instance_uid=result.instance.series_instance_uid,
        study_instance_uid=result.instance.study_instance_uid,
        digest=convert.digest_to_proto(result.received), message=result.message,
        patient_id=result.instance.patient_id, issuer_of_patient_id=result.instance.issuer_of_patient_id,
    )


class ArchiveServicer(archive_pb2_grpc.ArchiveServiceServicer):
    def __init__(self, limits: LimitsConfig, ingest: Ingest, search: Search, retrieval: Retrieval,
                 deletions: DeletionApproval, requests: ClinicalRequests, credentials: CredentialStore,
                 one_message_bytes: int = 3 * CHUNK_BYTES) -> None:
        """``one_message_bytes``: the largest instance ReadInstance answers (the server's message
        size less room for the attributes)."""
        self._one_message_bytes = one_message_bytes
        self._limits, self._ingest, self._search, self._retrieval = limits, ingest, search, retrieval
        self._deletions, self._requests, self._credentials = deletions, requests, credentials

    @mapped
    def StoreInstance(
        self, request_iterator: Iterable[archive_pb2.StoreInstanceRequest], context: grpc.ServicerContext
    ) -> archive_pb2.StoreInstanceResponse:
        data, expected = self._receive(request_iterator)
        return _stored(self._ingest.store(data, expected, still_wanted=context.is_active))

    @mapped
    def PutInstance(
        self, request: archive_pb2.PutInstanceRequest, context: grpc.ServicerContext
    ) -> archive_pb2.PutInstanceResponse:
        data = request.data  # each read of a bytes field copies it: once
        if len(data) > self._one_message_bytes:
            raise OutOfRange(f"upload of {len(data)} bytes is more than one message carries "
                             f"({self._one_message_bytes}): stream it with StoreInstance")
        if not data:
            raise InvalidInput("empty upload: no bytes received")
        expected = convert.digest_from_proto(request.expected_digest) if request.HasField("expected_digest") else None
        if expected is not None and expected.size_bytes != len(data):
            raise InvalidInput(f"received {len(data)} bytes but expected_digest.size_bytes is "
                               f"{expected.size_bytes}; nothing stored")
        result = self._ingest.store(data, expected, still_wanted=context.is_active)
        return archive_pb2.PutInstanceResponse(outcome=_stored(result))

    def _receive(self, requests: Iterable[archive_pb2.StoreInstanceRequest]) -> tuple[bytes, Digest | None]:
        limit = self._limits.max_instance_bytes
        # Chunks are kept and joined once: an upload of one message (most instances) is
        # never copied, and the result is bytes, which the parser reads without a copy.
        chunks: list[bytes] = []
        received = 0
        expected: Digest | None = None
        for index, request in enumerate(requests):
            if request.HasField("expected_digest"):
                if index:
                    raise InvalidInput("expected_digest may only be set in the first message")
                expected = convert.digest_from_proto(request.expected_digest)
            chunk = request.data  # each read of a bytes field copies it: once
            chunks.append(chunk)
            received += len(chunk)
            if received > limit:
                # Stop reading at once: the rest of the upload is never buffered.
                raise TooLarge(f"upload is over limits.max_instance_bytes ({limit} bytes); nothing stored")
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not data:
            raise InvalidInput("empty upload: no bytes received")
        if expected is not None and expected.size_bytes != len(data):
            raise InvalidInput(
                f"received {len(data)} bytes but expected_digest.size_bytes is {expected.size_bytes}; "
                "nothing stored"
            )
        return data, expected

    @mapped
    def Find(self, request: archive_pb2.FindRequest, context: grpc.ServicerContext) -> archive_pb2.FindResponse:
        query = convert.query_from_proto(request.level, request.filter)
        matches, token = self._search.find(query, request.page_size, request.page_token)
        return archive_pb2.FindResponse(
            matches=[convert.match_to_proto(m) for m in matches], next_page_token=token
        )

    @mapped
    def ListPatientStudies(
        self, request: archive_pb2.ListPatientStudiesRequest, context: grpc.ServicerContext
    ) -> archive_pb2.ListPatientStudiesResponse:
        matches, token = self._search.patient_studies(
            request.patient_id, request.issuer_of_patient_id, request.page_size, request.page_token
        )
        return archive_pb2.ListPatientStudiesResponse(
            studies=[convert.match_to_proto(m) for m in matches], next_page_token=token
        )

    @mapped
    def GetInstance(
        self, request: archive_pb2.GetInstanceRequest, context: grpc.ServicerContext
    ) -> Iterator[archive_pb2.GetInstanceResponse]:
        instance, blob = self._retrieval.instance(request.sop_instance_uid)
        for attributes, chunk in self._stream([(instance, blob)], context):
            yield archive_pb2.GetInstanceResponse(instance=attributes, data=chunk)

    @mapped
    def ReadInstance(
        self, request: archive_pb2.ReadInstanceRequest, context: grpc.ServicerContext
    ) -> archive_pb2.ReadInstanceResponse:
        instance, blob = self._retrieval.instance(request.sop_instance_uid)
        if blob.size_bytes > self._one_message_bytes:
            raise OutOfRange(f"instance {request.sop_instance_uid} has {blob.size_bytes} bytes, more than one "
                             f"message carries ({self._one_message_bytes}): stream it with GetInstance")
        data = self._retrieval.read(instance, blob)
        return archive_pb2.ReadInstanceResponse(
            instance=convert.instance_to_proto(instance, blob, self._retrieval.content_digest(blob, data)), data=data)

    @mapped
    def GetSeries(
        self, request: archive_pb2.GetSeriesRequest, context: grpc.ServicerContext
    ) -> Iterator[archive_pb2.GetSeriesResponse]:
        members = in_reading_order(self._retrieval.series_instances(request.series_instance_uid))
        for attributes, chunk in self._stream(members, context):
            yield archive_pb2.GetSeriesResponse(instance=attributes, data=chunk)

    @mapped
    def GetStudy(
        self, request: archive_pb2.GetStudyRequest, context: grpc.ServicerContext
    ) -> Iterator[archive_pb2.GetStudyResponse]:
        members = in_reading_order(self._retrieval.study_instances(request.study_instance_uid))
        for attributes, chunk in self._stream(members, context):
            yield archive_pb2.GetStudyResponse(instance=attributes, data=chunk)

    def _stream(
        self, members: list[tuple[InstanceRecord, BlobRecord]], context: grpc.ServicerContext
    ) -> Iterator[tuple[object, bytes]]:
        """(attributes on an instance's first chunk, else None; chunk) for each instance.

        Each instance is read whole and checked against its digest first (and
        repaired from the peer if need be), so no byte of a bad copy leaves.
        A credential revoked or expired meanwhile stops the stream.
        """
        watch = CredentialWatch(self._credentials, current_principal.get())
        for instance, blob in members:
            watch.check()
            data = self._retrieval.read(instance, blob)
            attributes = convert.instance_to_proto(instance, blob, self._retrieval.content_digest(blob, data))
            for at in range(0, max(len(data), 1), CHUNK_BYTES):
                if not context.is_active():
                    raise Unavailable("the caller went away")
                watch.check()
                yield attributes, data[at : at + CHUNK_BYTES]
                attributes = None

    @mapped
    def GetStudyMetadata(
        self, request: archive_pb2.GetStudyMetadataRequest, context: grpc.ServicerContext
    ) -> Iterator[archive_pb2.GetStudyMetadataResponse]:
        for sop_uid, dicom_json, tier in self._retrieval.study_metadata(request.study_instance_uid):
            yield archive_pb2.GetStudyMetadataResponse(sop_instance_uid=sop_uid, dicom_json=dicom_json, tier=tier)

    @mapped
    def Prefetch(self, request: archive_pb2.PrefetchRequest,
                 context: grpc.ServicerContext) -> archive_pb2.PrefetchResponse:
        studies, size = self._requests.prefetch(request.patient_id, request.issuer_of_patient_id)
        return archive_pb2.PrefetchResponse(studies_queued=studies, bytes_queued=size)

    @mapped
    def DeleteStudy(self, request: archive_pb2.DeleteStudyRequest,
                    context: grpc.ServicerContext) -> archive_pb2.DeleteStudyResponse:
        outcome = self._deletions.delete(request.study_instance_uid, request.reason, _caller())
        response = archive_pb2.DeleteStudyResponse(instances_deleted=outcome.instances_deleted,
                                                   blobs_destroyed=outcome.blobs_destroyed,
                                                   approval_request_id=outcome.request_id)
        if outcome.purge_after is not None:  # in the trash until then: restorable
            response.purge_time.CopyFrom(timestamp(outcome.purge_after))
        return response

    @mapped
    def ApproveStudyDeletion(self, request: archive_pb2.ApproveStudyDeletionRequest,
                             context: grpc.ServicerContext) -> archive_pb2.ApproveStudyDeletionResponse:
        done = self._deletions.approve(request.request_id, _caller())
        response = archive_pb2.ApproveStudyDeletionResponse(
            instances_deleted=done.instances_deleted, blobs_destroyed=done.blobs_destroyed,
            study_instance_uid=done.request.study_instance_uid, requested_by=done.request.requested_by)
        if done.purge_after is not None:
            response.purge_time.CopyFrom(timestamp(done.purge_after))
        return response

    @mapped
    def ListStudyDeletionRequests(self, request: archive_pb2.ListStudyDeletionRequestsRequest,
                                  context: grpc.ServicerContext) -> archive_pb2.ListStudyDeletionRequestsResponse:
        return archive_pb2.ListStudyDeletionRequestsResponse(requests=[
            archive_pb2.StudyDeletionRequest(
                request_id=r.request_id, study_instance_uid=r.study_instance_uid, reason=r.reason,
                requested_by=r.requested_by, requested_at=r.requested_at, expires_at=r.expires_at)
            for r in self._deletions.pending()])

    @mapped
    def Pin(self, request: archive_pb2.PinRequest, context: grpc.ServicerContext) -> archive_pb2.PinResponse:
        study = self._requests.pin(request.study_instance_uid, request.until)
        return archive_pb2.PinResponse(study_instance_uid=study.study_instance_uid, pinned_until=study.pinned_until)
