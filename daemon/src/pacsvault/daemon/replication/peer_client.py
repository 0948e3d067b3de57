"""This appliance as a client of its peer's PeerService, over mutual TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import blake3
import grpc

from pacsvault.daemon.digest import Digest
from pacsvault.daemon.errors import Conflict, DataLoss, PermissionDenied, Unavailable
from pacsvault.daemon.service.convert import digest_to_proto
from pacsvault.v1 import peer_pb2, peer_pb2_grpc

CHUNK_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# How long `audit verify` may wait for the witness: longer than the channel's longest reconnect back-off.
WITNESS_TIMEOUT_S = 5.0


def mtls_credentials(ca_file: Path, cert_file: Path, key_file: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca_file.read_bytes(), private_key=key_file.read_bytes(),
        certificate_chain=cert_file.read_bytes(),
    )


class PeerClient:
    """Shard uploads, commits, reads and record listings against the peer."""

    def __init__(self, address: str, credentials: grpc.ChannelCredentials, timeout_s: float = 60.0) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._channel = grpc.secure_channel(address, credentials, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # A peer back after an outage is reached within seconds, not after gRPC's default
            # back-off of up to two minutes (the sender, repair and the audit witness all wait on it).
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 3000),
        ])
        self._stub = peer_pb2_grpc.PeerServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def write_status(self, digest: Digest, index: int) -> tuple[int, bool]:
        response = self._stub.QueryWriteStatus(
            peer_pb2.QueryWriteStatusRequest(shard=_shard(digest, index)), timeout=self.timeout_s)
        return response.committed_size, response.complete

    def write_shard(self, digest: Digest, index: int, raw: bytes, offset: int) -> int:
        """Sends ``raw[offset:]`` and finishes the shard; returns the committed size."""

        def requests() -> Iterator[peer_pb2.WriteShardRequest]:
            at = offset
            first = True
            while True:
                chunk = raw[at : at + CHUNK_BYTES]
                last = at + len(chunk) >= len(raw)
                yield peer_pb2.WriteShardRequest(shard=_shard(digest, index) if first else None,
                                                 write_offset=at, data=chunk, finish_write=last)
                first, at = False, at + len(chunk)
                if last:
                    return

        return self._stub.WriteShard(requests(), timeout=self.timeout_s).committed_size

    def commit_blob(self, digest: Digest, k: int, m: int, records: list[peer_pb2.ReplicaRecord],
                    inline_shards: list[bytes] | None = None) -> list[int]:
        response = self._stub.CommitBlob(peer_pb2.CommitBlobRequest(
            blob_digest=digest_to_proto(digest), data_shards=k, parity_shards=m, records=records,
            inline_shards=inline_shards or [],
        ), timeout=self.timeout_s)
        return list(response.verified_shards)

    def read_blob(self, digest: Digest) -> bytes:
        stream = self._stub.ReadBlob(peer_pb2.ReadBlobRequest(blob_digest=digest_to_proto(digest)),
                                     timeout=self.timeout_s)
        return b"".join(message.data for message in stream)

    def fetch_verified(self, digest: Digest) -> bytes:
        """The blob named ``digest`` at the peer, decoded there from verified shards and checked again here."""
        try:
            data = self.read_blob(digest)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DATA_LOSS:
                raise DataLoss(f"the peer cannot rebuild it either: {exc.details()}") from exc
            raise Unavailable(f"the peer could not be asked ({exc.code().name}: {exc.details()})") from exc
        if blake3.blake3(data).digest() != digest.hash or len(data) != digest.size_bytes:
            raise DataLoss("the peer returned bytes that fail the digest")
        return data

    def list_records(self, page_token: str = "", page_size: int = 500) -> tuple[list[peer_pb2.ReplicaRecord], str]:
        response = self._stub.ListReplicaRecords(
            peer_pb2.ListReplicaRecordsRequest(page_size=page_size, page_token=page_token), timeout=self.timeout_s)
        return list(response.records), response.next_page_token

    def delete_replicas(self, instances: list[tuple[str, bool]]) -> None:
        """Makes the peer forget (SOP Instance UID, release its blob too) for each instance."""
        self._stub.DeleteReplicas(peer_pb2.DeleteReplicasRequest(instances=[
            peer_pb2.DeletedInstance(sop_instance_uid=sop_uid, release_blob=release) for sop_uid, release in instances
        ]), timeout=self.timeout_s)

    def put_audit_checkpoint(self, checkpoint_json: str) -> None:
        """Hands a checkpoint to the witness. Conflict / PermissionDenied: it refused it; Unavailable: not reached."""
        try:
            self._stub.PutAuditCheckpoint(peer_pb2.PutAuditCheckpointRequest(checkpoint_json=checkpoint_json),
                                          timeout=self.timeout_s)
        except grpc.RpcError as exc:
            refusal = {grpc.StatusCode.ALREADY_EXISTS: Conflict, grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
                       grpc.StatusCode.INVALID_ARGUMENT: PermissionDenied}.get(exc.code(), Unavailable)
            raise refusal(f"the witness at {self.address}: {exc.code().name}: {exc.details()}") from exc

    def list_lost_replicas(self, timeout_s: float) -> list[peer_pb2.LostReplica]:
        """The replicas of ours the peer cannot rebuild; also the liveness probe (a short deadline)."""
        return list(self._stub.ListLostReplicas(peer_pb2.ListLostReplicasRequest(), timeout=timeout_s).replicas)

    def set_legal_hold(self, study_uid: str, held: bool, reason: str) -> None:
        self._stub.SetLegalHold(peer_pb2.SetLegalHoldRequest(study_instance_uid=study_uid, held=held, reason=reason),
                                timeout=self.timeout_s)

    def list_audit_checkpoints(self, min_seq: int = 0, timeout_s: float = WITNESS_TIMEOUT_S,
                               wait_for_ready: bool = True) -> list[str]:
        """Every checkpoint of ours the witness keeps, numbered ``min_seq`` and later, page by page.

        Waits up to ``timeout_s`` for the peer to be reachable (``wait_for_ready``: also while it
        refuses connections, as a peer just back is reached only at the channel's next reconnect);
        Unavailable when it is not.
        """
        found: list[str] = []
        token = ""
        while True:
            try:
                response = self._stub.ListAuditCheckpoints(
                    peer_pb2.ListAuditCheckpointsRequest(min_seq=min_seq, page_token=token, page_size=5000),
                    timeout=timeout_s, wait_for_ready=wait_for_ready)
            except grpc.RpcError as exc:
                raise Unavailable(f"the witness at {self.address} could not be asked "
                                  f"({exc.code().name}: {exc.details()})") from exc
            found += response.checkpoint_json
            token = response.next_page_token
            if not token:
                return found


def _shard(digest: Digest, index: int) -> peer_pb2.ShardRef:
    return peer_pb2.ShardRef(blob_digest=digest_to_proto(digest), shard_index=index)
