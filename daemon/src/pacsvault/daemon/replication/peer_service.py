"""pacsvault.v1.PeerService: the peer's half of replication (receiver side).

Served only on the mutual-TLS peer listener. The calling appliance is the
SAN URI of its client certificate; only the configured peer is let in, with a
certificate not on this appliance's revocation list (by identity or serial,
as on the API), and it only ever sees and restores its own records. Every
refusal is recorded in the audit trail, a security alert.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import grpc

from pacsvault.daemon.audit.alerts import AlertSink
from pacsvault.daemon.audit.witness import AuditWitness
from pacsvault.daemon.dicom import uid
from pacsvault.daemon.digest import Digest
from pacsvault.daemon.errors import InvalidInput, NotFound, PermissionDenied, Unauthenticated
from pacsvault.daemon.index import replicas
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.replication.certs import identity_uri
from pacsvault.daemon.replication.codec import ErasureCodec, verify_shard
from pacsvault.daemon.replication.lost import lost_to_proto, peer_hold
from pacsvault.daemon.replication.shard_store import ShardStore
from pacsvault.daemon.security.credentials import CredentialStore
from pacsvault.daemon.security.principals import unrevoked_certificate
from pacsvault.daemon.service import convert
from pacsvault.daemon.service.status import mapped
from pacsvault.v1 import peer_pb2, peer_pb2_grpc

CHUNK_BYTES = 1024 * 1024
_SERVICE = peer_pb2.DESCRIPTOR.services_by_name["PeerService"].full_name


class PeerServicer(peer_pb2_grpc.PeerServiceServicer):
    def __init__(self, store: ShardStore, env: IndexEnvironment, peer_name: str, witness: AuditWitness,
                 credentials: CredentialStore, alerts: AlertSink) -> None:
        self._store = store
        self._env = env
        self._witness = witness
        self._credentials, self._alerts = credentials, alerts
        self._peer_name = peer_name
        self._peer_identity = identity_uri(peer_name).encode()

    def _caller(self, context: grpc.ServicerContext, method: str) -> str:
        """The peer appliance, when the certificate is its own and not revoked; refusals are alerts."""
        try:
            certificate = unrevoked_certificate(context, self._credentials)
            identities = context.auth_context().get("peer_spiffe_id", [])
            if self._peer_identity not in identities:
                shown = b", ".join(identities).decode(errors="replace") or "no identity"
                raise PermissionDenied(f"{shown} is not this appliance's peer ({self._peer_name})",
                                       who=certificate.described if certificate else shown)
        except PermissionDenied as exc:
            outcome = "UNAUTHENTICATED" if isinstance(exc, Unauthenticated) else "PERMISSION_DENIED"
            self._alerts.refused(f"/{_SERVICE}/{method}", exc.who, outcome, context.peer())
            raise
        return self._peer_name

    @mapped
    def WriteShard(self, request_iterator: Iterable[peer_pb2.WriteShardRequest],
                   context: grpc.ServicerContext) -> peer_pb2.WriteShardResponse:
        self._caller(context, "WriteShard")
        digest, index, committed, complete = None, 0, 0, False
        for request in request_iterator:
            if digest is None:
                if not request.HasField("shard"):
                    raise InvalidInput("the first WriteShard message must name the shard")
                digest, index = _shard(request.shard)
                if request.write_offset == 0 and request.finish_write:
                    # A whole shard in one message: verified and named now,
                    # flushed with its blob's other shards at CommitBlob, which
                    # is what the sender waits for before it counts anything.
                    self._store.put(digest, index, request.data, sync=False)
                    return peer_pb2.WriteShardResponse(committed_size=len(request.data), complete=True)
            committed = self._store.write_at(digest, index, request.write_offset, request.data)
            if request.finish_write:
                self._store.finish(digest, index)
                complete = True
        if digest is None:
            raise InvalidInput("empty WriteShard stream")
        return peer_pb2.WriteShardResponse(committed_size=committed, complete=complete)

    @mapped
    def QueryWriteStatus(self, request: peer_pb2.QueryWriteStatusRequest,
                         context: grpc.ServicerContext) -> peer_pb2.QueryWriteStatusResponse:
        self._caller(context, "QueryWriteStatus")
        digest, index = _shard(request.shard)
        complete = index in self._store.indexes(digest)
        return peer_pb2.QueryWriteStatusResponse(committed_size=self._store.committed_size(digest, index),
                                                 complete=complete)

    @mapped
    def CommitBlob(self, request: peer_pb2.CommitBlobRequest,
                   context: grpc.ServicerContext) -> peer_pb2.CommitBlobResponse:
        origin = self._caller(context, "CommitBlob")
        digest = convert.digest_from_proto(request.blob_digest)
        codec = ErasureCodec(request.data_shards, request.parity_shards)
        for raw in request.inline_shards:
            self._store.put(digest, verify_shard(raw).index, raw, sync=False)
        verified = sorted(codec.good_shards(digest, self._shards(digest)))
        for index in set(self._store.indexes(digest)) - set(verified):
            # A shard that does not verify (e.g. cut short by a crash before its
            # flush) is set aside, so the sender sees it missing and sends it again.
            self._store.quarantine(digest, index, "failed verification at commit")
        missing = sorted(set(range(codec.total)) - set(verified))
        if missing:
            raise InvalidInput(f"blob {digest.hex[:16]} is missing verified shards {missing}; upload them first")
        self._store.sync_blob(digest, verified)
        replicas.put_records(self._env, origin, list(request.records))
        return peer_pb2.CommitBlobResponse(verified_shards=verified)

    @mapped
    def ReadBlob(self, request: peer_pb2.ReadBlobRequest,
                 context: grpc.ServicerContext) -> Iterator[peer_pb2.ReadBlobResponse]:
        self._caller(context, "ReadBlob")
        digest = convert.digest_from_proto(request.blob_digest)
        header = self._store.header_of(digest)
        if header is None:
            raise NotFound(f"no shards of blob {digest.hex[:16]} here")
        data = ErasureCodec(header.k, header.m).decode(digest, self._shards(digest))
        for at in range(0, max(len(data), 1), CHUNK_BYTES):
            yield peer_pb2.ReadBlobResponse(data=data[at : at + CHUNK_BYTES])

    @mapped
    def ListReplicaRecords(self, request: peer_pb2.ListReplicaRecordsRequest,
                           context: grpc.ServicerContext) -> peer_pb2.ListReplicaRecordsResponse:
        origin = self._caller(context, "ListReplicaRecords")
        size = min(request.page_size or 500, 5000)
        records = replicas.list_records(self._env, origin, request.page_token, size + 1)
        more = len(records) > size
        records = records[:size]
        return peer_pb2.ListReplicaRecordsResponse(
            records=records, next_page_token=records[-1].sop_instance_uid if more else "")

    @mapped
    def PutAuditCheckpoint(self, request: peer_pb2.PutAuditCheckpointRequest,
                           context: grpc.ServicerContext) -> peer_pb2.PutAuditCheckpointResponse:
        self._witness.keep(self._caller(context, "PutAuditCheckpoint"), request.checkpoint_json)
        return peer_pb2.PutAuditCheckpointResponse()

    @mapped
    def ListAuditCheckpoints(self, request: peer_pb2.ListAuditCheckpointsRequest,
                             context: grpc.ServicerContext) -> peer_pb2.ListAuditCheckpointsResponse:
        origin = self._caller(context, "ListAuditCheckpoints")
        found, token = self._witness.page(origin, request.min_seq, request.page_token, request.page_size)
        return peer_pb2.ListAuditCheckpointsResponse(checkpoint_json=found, next_page_token=token)

    @mapped
    def DeleteReplicas(self, request: peer_pb2.DeleteReplicasRequest,
                       context: grpc.ServicerContext) -> peer_pb2.DeleteReplicasResponse:
        origin = self._caller(context, "DeleteReplicas")
        wanted = [(uid.check(i.sop_instance_uid, "instances.sop_instance_uid"), i.release_blob)
                  for i in request.instances]

        released: list[Digest] = []
        # Records first: a crash in between leaves shards nobody lists (scrub
        # still checks them), never a record whose shards are gone.
        deleted, held = replicas.delete_records(
            self._env, origin, wanted, lambda record: released.append(convert.digest_from_proto(record.digest)))
        files = sum(self._store.delete(name) for name in released)
        return peer_pb2.DeleteReplicasResponse(records_deleted=deleted, shard_files_deleted=files, records_held=held)

    @mapped
    def ListLostReplicas(self, request: peer_pb2.ListLostReplicasRequest,
                         context: grpc.ServicerContext) -> peer_pb2.ListLostReplicasResponse:
        origin = self._caller(context, "ListLostReplicas")
        return peer_pb2.ListLostReplicasResponse(
            replicas=[lost_to_proto(r) for r in replicas.list_lost(self._env, origin)])

    @mapped
    def SetLegalHold(self, request: peer_pb2.SetLegalHoldRequest,
                     context: grpc.ServicerContext) -> peer_pb2.SetLegalHoldResponse:
        origin = self._caller(context, "SetLegalHold")
        study_uid = uid.check(request.study_instance_uid, "study_instance_uid")
        replicas.set_peer_hold(self._env, origin, peer_hold(request, origin) if request.held else None, study_uid)
        return peer_pb2.SetLegalHoldResponse()

    def _shards(self, digest: Digest) -> list[bytes]:
        return [raw for i in self._store.indexes(digest) if (raw := self._store.get(digest, i)) is not None]


def _shard(ref: peer_pb2.ShardRef) -> tuple[Digest, int]:
    if not ref.HasField("blob_digest"):
        raise InvalidInput("shard.blob_digest is required")
    if not 0 <= ref.shard_index < 32:
        raise InvalidInput(f"shard.shard_index {ref.shard_index} is out of range")
    return convert.digest_from_proto(ref.blob_digest), ref.shard_index
