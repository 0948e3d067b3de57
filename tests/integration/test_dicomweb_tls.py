"""The DICOMweb door with the API's TLS files: HTTPS only, a client certificate of the client CA
required, the same principals, roles, share scopes and revocation list as over gRPC."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509
from dicomweb_client.api import DICOMwebClient

from pacsvault.client import PacsvaultClient
from pacsvault.daemon.replication import certs
from tests.conftest import dicom_bytes, identity
from tests.dicomweb_support import stow_body

ROOT = "1.2.826.0.1.3680043.10.91"


class Pki:
    def __init__(self, root: Path) -> None:
        self.root, self.ca = root, certs.make_ca()
        (root / "ca.pem").write_bytes(self.ca.cert_pem())
        server = certs.issue_cert(self.ca, "site-a", ip_addresses=["127.0.0.1"])
        (root / "s.pem").write_bytes(server.cert_pem())
        (root / "s.key").write_bytes(server.key_pem())

    def add(self, name: str) -> tuple[str, str]:
        issued = certs.issue_cert(self.ca, name, kind="client", server=False)
        (self.root / f"{name}.pem").write_bytes(issued.cert_pem())
        (self.root / f"{name}.key").write_bytes(issued.key_pem())
        return str(self.root / f"{name}.pem"), str(self.root / f"{name}.key")

    def grpc_files(self, name: str) -> dict[str, str]:
        return {"ca_file": str(self.root / "ca.pem"), "cert_file": str(self.root / f"{name}.pem"),
                "key_file": str(self.root / f"{name}.key")}


@pytest.fixture
def tls(daemon_factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "pki"
    root.mkdir()
    pki = Pki(root)
    for name in ("viewer", "ingester", "secadmin", "stranger"):
        pki.add(name)
    principals = ", ".join(f'{{ identity = "{certs.identity_uri(name, "client")}", roles = ["{role}"] }}'
                           for name, role in (("viewer", "reader"), ("ingester", "ingest"),
                                              ("secadmin", "security-admin")))
    (tmp_path / "pv.toml").write_text(
        f'[security]\ntls_cert_file = "{root / "s.pem"}"\ntls_key_file = "{root / "s.key"}"\n'
        f'client_ca_file = "{root / "ca.pem"}"\nprincipals = [{principals}]\n')
    daemon = daemon_factory(config=tmp_path / "pv.toml")
    with PacsvaultClient(daemon.target, **pki.grpc_files("ingester")) as ingester:
        for n in (1, 2):
            assert ingester.store(dicom_bytes(PatientID="TLS-1", **identity(n, ROOT))).ok
    return daemon, pki


def session(pki: Pki, name: str | None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # else REQUESTS_CA_BUNDLE would replace the test CA
    s.verify = str(pki.root / "ca.pem")
    if name:
        s.cert = (str(pki.root / f"{name}.pem"), str(pki.root / f"{name}.key"))
    return s


def test_https_with_client_certificates_only(tls) -> None:  # type: ignore[no-untyped-def]
    daemon, pki = tls
    base = f"https://127.0.0.1:{daemon.web_port}/dicom-web"
    viewer = DICOMwebClient(base, session=session(pki, "viewer"))
    found = viewer.search_for_studies(search_filters={"PatientID": "TLS-1"})
    assert sorted(s["0020000D"]["Value"][0] for s in found) == sorted(identity(n, ROOT)["StudyInstanceUID"]
                                                                      for n in (1, 2))
    assert found[0]["00081190"]["Value"][0].startswith(f"https://127.0.0.1:{daemon.web_port}/dicom-web/")
    # No certificate: no TLS session at all. Plain HTTP: no answer.
    with pytest.raises(requests.exceptions.ConnectionError):
        session(pki, None).get(f"{base}/studies", timeout=30)
    with pytest.raises(requests.exceptions.ConnectionError):
        session(pki, "viewer").get(f"http://127.0.0.1:{daemon.web_port}/dicom-web/studies", timeout=30)
    # A valid certificate naming no configured principal, and roles that do not reach Find.
    assert session(pki, "stranger").get(f"{base}/studies", timeout=30).status_code == 403
    assert session(pki, "ingester").get(f"{base}/studies", timeout=30).status_code == 403
    body, content_type = stow_body([dicom_bytes(PatientID="TLS-1", **identity(3, ROOT))])
    stored = session(pki, "ingester").post(f"{base}/studies", data=body, timeout=30,
                                           headers={"Content-Type": content_type})
    assert stored.status_code == 200, stored.text


def test_share_token_with_any_certificate_and_revocation(tls) -> None:  # type: ignore[no-untyped-def]
    daemon, pki = tls
    base = f"https://127.0.0.1:{daemon.web_port}/dicom-web"
    with PacsvaultClient(daemon.target, **pki.grpc_files("viewer")) as viewer:
        grant = viewer.create_share(study_instance_uid=identity(1, ROOT)["StudyInstanceUID"], ttl_seconds=600)
    assert grant.link.startswith(f"https://127.0.0.1:{daemon.web_port}/share/")
    portal = session(pki, "stranger")  # e.g. the patient portal's certificate: no roles of its own
    portal.headers["Authorization"] = f"Bearer {grant.token}"
    answer = portal.get(f"{base}/studies", timeout=30)
    assert answer.status_code == 200
    assert [s["0020000D"]["Value"][0] for s in answer.json()] == [identity(1, ROOT)["StudyInstanceUID"]]
    assert portal.get(grant.link, timeout=30).status_code == 200  # the share page, over HTTPS too
    with PacsvaultClient(daemon.target, **pki.grpc_files("secadmin")) as admin:
        admin.revoke_certificate(identity=certs.identity_uri("stranger", "client"), reason="portal retired")
    refused = portal.get(f"{base}/studies", timeout=30)
    assert refused.status_code == 401 and "revoked" in refused.text
    assert session(pki, "viewer").get(f"{base}/studies", timeout=30).status_code == 200


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:8080"])
def test_check_config_refuses_plain_http_off_loopback(tmp_path: Path, listen: str) -> None:
    config = tmp_path / "pv.toml"
    config.write_text(f'[web]\nlisten = "{listen}"\n')
    result = subprocess.run([sys.executable, "-m", "pacsvault.daemon", "--data-dir", str(tmp_path / "data"),
                             "--config", str(config), "--check-config"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "web.listen" in result.stderr and "tls_cert_file" in result.stderr
    config.write_text(f'[web]\nenabled = false\nlisten = "{listen}"\n')  # off: nothing listens
    result = subprocess.run([sys.executable, "-m", "pacsvault.daemon", "--data-dir", str(tmp_path / "data"),
                             "--config", str(config), "--check-config"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def served_certificate_serial(port: int, pki: Pki) -> int:
    context = ssl.create_default_context(cafile=str(pki.root / "ca.pem"))
    context.load_cert_chain(str(pki.root / "viewer.pem"), str(pki.root / "viewer.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls_socket:
        der = tls_socket.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_renewed_certificate_files_serve_without_a_restart(tls) -> None:  # type: ignore[no-untyped-def]
    daemon, pki = tls
    before = served_certificate_serial(daemon.web_port, pki)
    renewed = certs.issue_cert(pki.ca, "site-a", ip_addresses=["127.0.0.1"])
    (pki.root / "s.key.new").write_bytes(renewed.key_pem())
    (pki.root / "s.pem.new").write_bytes(renewed.cert_pem())
    os.replace(pki.root / "s.key.new", pki.root / "s.key")
    os.replace(pki.root / "s.pem.new", pki.root / "s.pem")
    deadline = time.monotonic() + 20
    # Each worker looks at the files at most once a second: soon every handshake, on either, has the new one.
    while {served_certificate_serial(daemon.web_port, pki) for _ in range(20)} != {renewed.cert.serial_number}:
        assert time.monotonic() < deadline, "the renewed certificate was not taken up by every worker"
        time.sleep(0.5)
    assert renewed.cert.serial_number != before
    viewer = session(pki, "viewer")
    assert viewer.get(f"https://127.0.0.1:{daemon.web_port}/dicom-web/studies", timeout=30).status_code == 200
