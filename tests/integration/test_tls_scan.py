"""The client API's TLS listener, scanned from outside as an auditor would.

sslyze (PyPI; its nassl bundles a modern and a legacy OpenSSL, so SSL 3.0 and
TLS 1.0/1.1 are really offered, whatever this machine's OpenSSL allows)
tries every protocol version and every cipher suite it knows against a real
pacsvaultd with TLS and client certificates, configured as in
test_access_control.py. Asserted: nothing below TLS 1.2 is accepted, no
anonymous, NULL, EXPORT, RC4, DES/3DES or MD5 suite is accepted, the server
sends its certificate chain, and it requires a client certificate.

A second test checks the same with nothing but Python's ssl module, so the
claim does not rest on one scanner.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from sslyze import (
    ClientAuthenticationCredentials,
    ScanCommand,
    ScanCommandAttemptStatusEnum,
    Scanner,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)

from pacsvault.daemon.replication import certs

# Substrings of IANA / OpenSSL cipher-suite names that must never be accepted.
WEAK = ("_anon_", "ADH", "AECDH", "NULL", "EXPORT", "EXP-", "RC4", "_DES_", "DES-CBC", "3DES", "MD5")
OLD = {
    ScanCommand.SSL_2_0_CIPHER_SUITES: "SSL 2.0",
    ScanCommand.SSL_3_0_CIPHER_SUITES: "SSL 3.0",
    ScanCommand.TLS_1_0_CIPHER_SUITES: "TLS 1.0",
    ScanCommand.TLS_1_1_CIPHER_SUITES: "TLS 1.1",
}
MODERN = {ScanCommand.TLS_1_2_CIPHER_SUITES: "TLS 1.2", ScanCommand.TLS_1_3_CIPHER_SUITES: "TLS 1.3"}


@pytest.fixture
def tls_listener(daemon_factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A TLS daemon plus the PEM files a scanner needs (a client certificate of the CA)."""
    ca = certs.make_ca()
    pki = tmp_path / "pki"
    pki.mkdir()
    server = certs.issue_cert(ca, "site-a", ip_addresses=["127.0.0.1"])
    scanner = certs.issue_cert(ca, "scanner", kind="client", server=False)
    files = {"ca.pem": ca.cert_pem(), "server.pem": server.cert_pem(), "server.key": server.key_pem(),
             "scanner.pem": scanner.cert_pem(), "scanner.key": scanner.key_pem()}
    for name, data in files.items():
        (pki / name).write_bytes(data)
    identity = certs.identity_uri("scanner", "client")
    config = tmp_path / "tls.toml"
    config.write_text(f'[security]\ntls_cert_file = "{pki / "server.pem"}"\ntls_key_file = "{pki / "server.key"}"\n'
                      f'client_ca_file = "{pki / "ca.pem"}"\n'
                      f'principals = [{{ identity = "{identity}", roles = ["monitor"] }}]\n')
    daemon = daemon_factory(config=config)
    return daemon, pki, server


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")  # sslyze's bundled trust stores
def test_sslyze_scan_of_the_client_api_listener(tls_listener) -> None:  # type: ignore[no-untyped-def]
    daemon, pki, server = tls_listener
    request = ServerScanRequest(
        server_location=ServerNetworkLocation("127.0.0.1", daemon.port),
        network_configuration=ServerNetworkConfiguration(
            tls_server_name_indication="127.0.0.1",
            tls_client_auth_credentials=ClientAuthenticationCredentials(
                certificate_chain_path=pki / "scanner.pem", key_path=pki / "scanner.key"),
        ),
        scan_commands={ScanCommand.CERTIFICATE_INFO, *OLD, *MODERN},
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    (result,) = list(scanner.get_results())

    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    attempts = result.scan_result
    assert attempts is not None

    accepted: dict[str, list[str]] = {}
    for command, label in {**OLD, **MODERN}.items():
        attempt = getattr(attempts, command.value)
        # An errored scan command has empty lists: it must not pass for "rejected everything".
        assert attempt.status == ScanCommandAttemptStatusEnum.COMPLETED, (label, attempt.error_reason,
                                                                           attempt.error_trace)
        accepted[label] = [s.cipher_suite.name for s in attempt.result.accepted_cipher_suites]
        rejected = attempt.result.rejected_cipher_suites
        assert accepted[label] or rejected, f"{label}: sslyze tried no cipher suite at all"

    for label in OLD.values():
        assert accepted[label] == [], f"{label} is accepted: {accepted[label]}"
    assert accepted["TLS 1.2"], "TLS 1.2 must be offered (grpcio's floor)"
    for label in MODERN.values():
        weak = [name for name in accepted[label] if any(w in name.upper() or w in name for w in WEAK)]
        assert weak == [], f"{label} accepts weak suites: {weak}"

    info = attempts.certificate_info
    assert info.status == ScanCommandAttemptStatusEnum.COMPLETED, info.error_trace
    deployments = info.result.certificate_deployments
    assert deployments, "no certificate deployment analysed"
    chain = deployments[0].received_certificate_chain
    assert chain, "the server sent no certificate"
    assert chain[0].serial_number == server.cert.serial_number, "the leaf is not the configured server certificate"


def test_no_client_certificate_no_session(tls_listener) -> None:  # type: ignore[no-untyped-def]
    # sslyze 6.3 cannot report this one: its TLS 1.3 probe expects an alert where
    # BoringSSL just closes, and it gives up with ERROR_NO_CONNECTIVITY. So, by hand:
    daemon, pki, _ = tls_listener
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(pki / "ca.pem")
        ctx.check_hostname = False
        ctx.minimum_version = ctx.maximum_version = version
        ctx.set_alpn_protocols(["h2"])
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as raw:
            try:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    # TLS 1.3: the client finishes first; the server's refusal arrives on the next read.
                    tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                    answer = tls.recv(1024)
            except (ssl.SSLError, ConnectionError) as exc:
                answer = exc  # type: ignore[assignment]
        assert not isinstance(answer, bytes) or answer == b"", f"{version.name}: served without a client cert"


def _context(pki: Path, version: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki / "ca.pem")
    ctx.load_cert_chain(pki / "scanner.pem", pki / "scanner.key")
    ctx.check_hostname = False  # the certificate names 127.0.0.1 as an IP SAN; the CA check stays on
    # Let this client really offer old versions and weak suites, so a failure is the server's refusal.
    ctx.set_ciphers((ciphers or "ALL:COMPLEMENTOFALL") + ":@SECLEVEL=0")
    ctx.minimum_version = version
    ctx.maximum_version = version
    ctx.set_alpn_protocols(["h2"])
    return ctx


def _handshake(port: int, ctx: ssl.SSLContext) -> tuple[str, str] | ssl.SSLError:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                cipher = tls.cipher()
                assert cipher is not None
                return tls.version() or "", cipher[0]
        except ssl.SSLError as exc:
            return exc


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")  # offering TLS 1.0/1.1 is the point
def test_ssl_module_cross_check(tls_listener) -> None:  # type: ignore[no-untyped-def]
    daemon, pki, _ = tls_listener
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        try:
            ctx = _context(pki, version)
        except ssl.SSLError as exc:  # this OpenSSL cannot even be asked: nothing to prove here
            pytest.skip(f"local OpenSSL cannot offer {version.name}: {exc}")
        outcome = _handshake(daemon.port, ctx)
        assert isinstance(outcome, ssl.SSLError), f"{version.name} accepted: {outcome}"
        # The refusal must come from the server (an alert or a version it will not speak),
        # not from this client having nothing to offer.
        assert "NO_PROTOCOLS_AVAILABLE" not in str(outcome) and "NO_CIPHERS" not in str(outcome), outcome

    negotiated = {}
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        outcome = _handshake(daemon.port, _context(pki, version))
        assert not isinstance(outcome, ssl.SSLError), f"{version.name} refused: {outcome}"
        negotiated[version.name] = outcome
        assert not any(w in outcome[1] for w in WEAK), outcome

    # Offer only weak suites (TLS 1.2; TLS 1.3 has none): every handshake must fail.
    for weak in ("aNULL", "eNULL", "EXPORT", "RC4", "3DES", "DES", "MD5"):
        try:
            ctx = _context(pki, ssl.TLSVersion.TLSv1_2, weak)
        except ssl.SSLError:
            continue  # this OpenSSL has no such suite at all
        outcome = _handshake(daemon.port, ctx)
        assert isinstance(outcome, ssl.SSLError), f"weak suites {weak!r} accepted: {outcome}"
    assert negotiated["TLSv1_2"][0] == "TLSv1.2" and negotiated["TLSv1_3"][0] == "TLSv1.3", negotiated
