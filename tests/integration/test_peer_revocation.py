"""The peer listener applies the appliance's revocation list (issue 16, defect 7): a peer certificate
revoked by identity or by serial gets nothing, and every refusal is a security alert on the listener's side."""

from __future__ import annotations

import json

import grpc
import pytest
from cryptography import x509

from pacsvault.client import corpus as corpus_module
from pacsvault.daemon.replication import certs
from pacsvault.v1 import common_pb2, peer_pb2, peer_pb2_grpc
from tests.conftest import Daemon, run_cli
from tests.integration.test_replication_pair import Pair, pair, status, store, wait_drained  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[corpus_module.GeneratedInstance]:
    return corpus_module.generate(tmp_path_factory.mktemp("revocation-corpus"), patients=1, studies_per_patient=1,
                                  series_per_study=1, instances_per_series=4, seed=43)


def as_site_a(pair: Pair) -> peer_pb2_grpc.PeerServiceStub:  # noqa: F811
    credentials = grpc.ssl_channel_credentials((pair.cert_dir / "ca.pem").read_bytes(),
                                               (pair.cert_dir / "site-a.key").read_bytes(),
                                               (pair.cert_dir / "site-a.pem").read_bytes())
    return peer_pb2_grpc.PeerServiceStub(grpc.secure_channel(f"127.0.0.1:{pair.peer_ports['site-b']}", credentials))


def every_call(stub: peer_pb2_grpc.PeerServiceStub) -> dict[str, object]:
    digest = common_pb2.Digest(hash=b"\x01" * 32, size_bytes=1)
    return {
        "ListReplicaRecords": lambda: stub.ListReplicaRecords(peer_pb2.ListReplicaRecordsRequest(), timeout=10),
        "ReadBlob": lambda: list(stub.ReadBlob(peer_pb2.ReadBlobRequest(blob_digest=digest), timeout=10)),
        "DeleteReplicas": lambda: stub.DeleteReplicas(peer_pb2.DeleteReplicasRequest(), timeout=10),
        "PutAuditCheckpoint": lambda: stub.PutAuditCheckpoint(
            peer_pb2.PutAuditCheckpointRequest(checkpoint_json='{"seq": 1}'), timeout=10),
        "ListAuditCheckpoints": lambda: stub.ListAuditCheckpoints(peer_pb2.ListAuditCheckpointsRequest(), timeout=10),
    }


def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def refusals(daemon: Daemon) -> list[dict]:
    result = run_cli(daemon.target, "audit", "query", "--json")
    assert result.returncode == 0, result.stderr
    return [r for r in map(json.loads, result.stdout.splitlines()) if r.get("phase") == "refused"]


def test_a_peer_certificate_revoked_by_identity_gets_nothing(pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]  # noqa: F811
    store(pair.a, corpus[:2])
    wait_drained(pair.a)
    stub = as_site_a(pair)
    assert code_of(every_call(stub)["ListReplicaRecords"]) == grpc.StatusCode.OK
    with pair.b.client() as site_b:
        site_b.revoke_certificate(identity=certs.identity_uri("site-a"), reason="appliance stolen")
    for name, call in every_call(stub).items():
        assert code_of(call) == grpc.StatusCode.UNAUTHENTICATED, name
    store(pair.a, corpus[2:4])  # the real sender is refused as well: nothing more reaches b
    assert status(pair.a)["pending_entries"] == 2
    refused = [r for r in refusals(pair.b) if r["outcome"] == "UNAUTHENTICATED"]
    assert {r["action"] for r in refused} >= set(every_call(stub))
    assert all(r["principal"] == certs.identity_uri("site-a") for r in refused)


def test_a_peer_certificate_revoked_by_serial_gets_nothing(pair: Pair) -> None:  # noqa: F811
    serial = x509.load_pem_x509_certificate((pair.cert_dir / "site-a.pem").read_bytes()).serial_number
    with pair.b.client() as site_b:
        site_b.revoke_certificate(serial_hex=f"{serial:X}", reason="key leaked")
    assert code_of(every_call(as_site_a(pair))["ListAuditCheckpoints"]) == grpc.StatusCode.UNAUTHENTICATED
