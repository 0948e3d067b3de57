"""The certificate helper, and real mutual TLS with its certificates."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from pacsvault.daemon.errors import InvalidInput
from pacsvault.daemon.replication.certs import identity_uri, issue_cert, make_ca, write_set

METHOD = "/pacsvault.test.Identity/Who"


def run_certs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pacsvault.daemon.replication.certs", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_writes_a_pair_and_is_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    args = [str(out), "--appliance", "site-a=127.0.0.1,localhost", "--appliance", "site-b=127.0.0.2",
            "--client", "operator"]
    first = run_certs(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split("\n")[:4] == ["created ca.pem", "created site-a.pem", "created site-b.pem",
                                            "created operator.pem"]
    for name in ("ca", "site-a", "site-b", "operator"):
        assert (out / f"{name}.key").stat().st_mode & 0o777 == 0o600
        assert (out / f"{name}.pem").exists()
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    second = run_certs(*args)
    assert second.returncode == 0 and "created" not in second.stdout
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    changed = run_certs(str(out), "--appliance", "site-a=127.0.0.9")  # new address: reissued, CA kept
    assert changed.stdout.split("\n")[:2] == ["kept ca.pem", "created site-a.pem"]
    forced = run_certs(*args, "--force")
    assert forced.returncode == 0 and (out / "ca.pem").read_bytes() != before["ca.pem"]


def test_appliance_certificate_contents() -> None:
    ca = make_ca()
    issued = issue_cert(ca, "site-a", dns_names=["localhost"], ip_addresses=["127.0.0.1", "::1"])
    cert = issued.cert
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [identity_uri("site-a")]
    assert identity_uri("site-a") == "spiffe://pacsvault/appliance/site-a"
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert isinstance(issued.key, ec.EllipticCurvePrivateKey) and issued.key.curve.name == "secp256r1"
    cert.verify_directly_issued_by(ca.cert)
    client = issue_cert(ca, "operator", server=False, kind="client")
    assert list(client.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_a_certificate_not_from_the_current_ca_is_reissued(tmp_path: Path) -> None:
    write_set(tmp_path, {"site-a": ["127.0.0.1"]})
    stray = issue_cert(make_ca("another CA"), "site-a", ip_addresses=["127.0.0.1"])
    (tmp_path / "site-a.pem").write_bytes(stray.cert_pem())
    (tmp_path / "site-a.key").write_bytes(stray.key_pem())
    assert write_set(tmp_path, {"site-a": ["127.0.0.1"]}) == ["kept ca.pem", "created site-a.pem"]
    (tmp_path / "site-a.key").write_bytes(make_ca().key_pem())  # a key that is not the cert's
    assert write_set(tmp_path, {"site-a": ["127.0.0.1"]})[1] == "created site-a.pem"


def test_bad_names_and_addresses_are_refused(tmp_path: Path) -> None:
    ca = make_ca()
    with pytest.raises(InvalidInput, match="lower-case"):
        issue_cert(ca, "Site A")
    with pytest.raises(InvalidInput):
        issue_cert(ca, "site-a", ip_addresses=["999.1.1.1"])
    with pytest.raises(InvalidInput, match="both"):
        write_set(tmp_path, {"x": []}, ["x"])


@pytest.fixture
def mtls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A real gRPC server requiring client certificates from the pair's CA."""
    out = tmp_path / "pki"
    write_set(out, {"site-a": ["127.0.0.1"], "site-b": ["127.0.0.2"]}, ["operator"])

    def who(request: bytes, context: grpc.ServicerContext) -> bytes:
        # The identity comes from the SAN URI, never the CN.
        return b",".join(context.auth_context().get("peer_spiffe_id", []))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "pacsvault.test.Identity", {"Who": grpc.unary_unary_rpc_method_handler(who)})])
    credentials = grpc.ssl_server_credentials(
        [((out / "site-a.key").read_bytes(), (out / "site-a.pem").read_bytes())],
        root_certificates=(out / "ca.pem").read_bytes(), require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield port, out
    server.stop(grace=None)


def call(port: int, ca_pem: bytes, key: bytes | None = None, cert: bytes | None = None) -> bytes:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key, certificate_chain=cert)
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        return channel.unary_unary(METHOD)(b"", timeout=10)  # type: ignore[no-any-return]


def test_mtls_accepts_a_peer_with_a_certificate_from_the_ca(mtls_server: tuple[int, Path]) -> None:
    port, out = mtls_server
    ca_pem = (out / "ca.pem").read_bytes()
    site_b = call(port, ca_pem, (out / "site-b.key").read_bytes(), (out / "site-b.pem").read_bytes())
    assert site_b == b"spiffe://pacsvault/appliance/site-b"
    operator = call(port, ca_pem, (out / "operator.key").read_bytes(), (out / "operator.pem").read_bytes())
    assert operator == b"spiffe://pacsvault/client/operator"


def test_mtls_refuses_a_client_without_a_certificate(mtls_server: tuple[int, Path]) -> None:
    port, out = mtls_server
    with pytest.raises(grpc.RpcError) as caught:
        call(port, (out / "ca.pem").read_bytes())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails; no RPC runs


def test_mtls_refuses_a_certificate_from_another_ca(mtls_server: tuple[int, Path]) -> None:
    port, out = mtls_server
    rogue = make_ca("rogue CA")
    impostor = issue_cert(rogue, "site-b", ip_addresses=["127.0.0.2"])
    with pytest.raises(grpc.RpcError) as caught:
        call(port, (out / "ca.pem").read_bytes(), impostor.key_pem(), impostor.cert_pem())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
