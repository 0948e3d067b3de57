"""The DIMSE door with DICOM TLS (PS3.15 B.1), as it runs off loopback: the API's rules, per AE.

The listener is on loopback (every test server is), but with [security]
TLS files set it takes only TLS connections with a client certificate of
the client CA, exactly like an appliance's listener on the hospital
network; dcmtk's tools connect with +tls.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pacsvault.client import PacsvaultClient
from pacsvault.daemon.replication import certs
from tests import dcmtk
from tests.conftest import Daemon, dicom_bytes, identity

pytestmark = pytest.mark.slow
CLIENTS = {"ct-room": ["ingest"], "viewer": ["reader"], "secadmin": ["security-admin"], "auditor": ["auditor"]}


@pytest.fixture
def tls_daemon(daemon_factory, tmp_path: Path) -> tuple[Daemon, Path]:  # type: ignore[no-untyped-def]
    dcmtk.require_dcmtk()
    root = tmp_path / "pki"
    root.mkdir()
    ca = certs.make_ca()
    server = certs.issue_cert(ca, "site-a", ip_addresses=["127.0.0.1"])
    files = {"ca.pem": ca.cert_pem(), "s.pem": server.cert_pem(), "s.key": server.key_pem()}
    for name in [*CLIENTS, "stranger"]:
        issued = certs.issue_cert(ca, name, kind="client", server=False)
        files |= {f"{name}.pem": issued.cert_pem(), f"{name}.key": issued.key_pem()}
    for name, data in files.items():
        (root / name).write_bytes(data)
    principals = ", ".join(f'{{ identity = "{certs.identity_uri(n, "client")}", roles = {roles!r} }}'.replace("'", '"')
                           for n, roles in CLIENTS.items())
    config = tmp_path / "pv.toml"
    config.write_text(
        f'[security]\ntls_cert_file = "{root / "s.pem"}"\ntls_key_file = "{root / "s.key"}"\n'
        f'client_ca_file = "{root / "ca.pem"}"\nprincipals = [{principals}]\n'
        f'[dicom]\ncalling_aes = [{{ ae_title = "CT_ROOM", identity = "{certs.identity_uri("ct-room", "client")}" }},'
        f' {{ ae_title = "VIEWER", identity = "{certs.identity_uri("viewer", "client")}" }}]\n')
    return daemon_factory(config=config), root


def _tls(root: Path, who: str) -> tuple[str, ...]:
    return ("+tls", str(root / f"{who}.key"), str(root / f"{who}.pem"), "+cf", str(root / "ca.pem"))


def _echo(daemon: Daemon, root: Path, who: str, calling_ae: str) -> str:
    done = dcmtk.run("echoscu", "-v", *_tls(root, who), "-aet", calling_ae, "-aec", "PACSVAULT", "127.0.0.1",
                     str(daemon.dicom_port))
    return "OK" if done.returncode == 0 else done.stdout + done.stderr


def _grpc(daemon: Daemon, root: Path, who: str) -> PacsvaultClient:
    return PacsvaultClient(daemon.target, ca_file=str(root / "ca.pem"), cert_file=str(root / f"{who}.pem"),
                           key_file=str(root / f"{who}.key"))


def test_a_known_ae_with_its_principals_certificate_is_let_in(tls_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon, root = tls_daemon
    assert _echo(daemon, root, "ct-room", "CT_ROOM") == "OK"
    path = root.parent / "ct.dcm"
    path.write_bytes(dicom_bytes(**identity(1)))
    done = dcmtk.store(daemon.dicom_port, [path], root.parent, calling_ae="CT_ROOM", extra=_tls(root, "ct-room"))
    assert done.returncode == 0, done.stdout + done.stderr
    with _grpc(daemon, root, "auditor") as client:
        records = [r for r in client.audit_query() if r.get("door") == "dimse" and r["action"] == "StoreInstance"]
    assert records and all(r["principal"] == certs.identity_uri("ct-room", "client") for r in records)


@pytest.mark.parametrize(("who", "calling_ae"), [("ct-room", "BOGUS"), ("ct-room", "VIEWER"), ("stranger", "CT_ROOM")])
def test_unknown_calling_aes_and_principals_are_rejected_at_association(tls_daemon, who: str,  # type: ignore[no-untyped-def]
                                                                        calling_ae: str) -> None:
    daemon, root = tls_daemon
    answer = _echo(daemon, root, who, calling_ae)
    assert "Association Rejected" in answer, answer
    if who == "ct-room":
        assert "Calling AE Title Not Recognized" in answer, answer
    with _grpc(daemon, root, "auditor") as client:
        refusals = [r for r in client.audit_query() if r.get("phase") == "refused" and r.get("door") == "dimse"]
    assert any(r["calling_ae"] == calling_ae and r["action"] == "DicomAssociation" for r in refusals), refusals


def test_plaintext_is_not_served_on_a_tls_listener(tls_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon, _ = tls_daemon
    done = dcmtk.run("echoscu", "-to", "5", "-aec", "PACSVAULT", "127.0.0.1", str(daemon.dicom_port))
    assert done.returncode != 0


def test_each_request_needs_the_role_its_grpc_method_needs(tls_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon, root = tls_daemon
    path = root.parent / "ct.dcm"
    path.write_bytes(dicom_bytes(**identity(2)))
    done = dcmtk.store(daemon.dicom_port, [path], root.parent, calling_ae="VIEWER",
                       extra=(*_tls(root, "viewer"), "-d"))
    assert "0x0124" in (done.stdout + done.stderr).lower(), done.stderr[-2000:]
    assert "may not StoreInstance" in done.stdout + done.stderr
    done = dcmtk.run("findscu", "-d", *_tls(root, "ct-room"), "-S", "-aet", "CT_ROOM", "-aec", "PACSVAULT",
                     "-k", "QueryRetrieveLevel=STUDY", "127.0.0.1", str(daemon.dicom_port))
    assert "may not Find" in done.stdout + done.stderr
    done = dcmtk.run("findscu", *_tls(root, "viewer"), "-S", "-aet", "VIEWER", "-aec", "PACSVAULT",
                     "-k", "QueryRetrieveLevel=STUDY", "127.0.0.1", str(daemon.dicom_port))
    assert done.returncode == 0, done.stderr


def test_a_revoked_certificate_is_refused_at_the_next_association(tls_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon, root = tls_daemon
    assert _echo(daemon, root, "ct-room", "CT_ROOM") == "OK"
    with _grpc(daemon, root, "secadmin") as admin:
        admin.revoke_certificate(identity=certs.identity_uri("ct-room", "client"), reason="stolen modality")
    assert "Association Rejected" in _echo(daemon, root, "ct-room", "CT_ROOM")
