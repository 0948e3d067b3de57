"""A token is worth something only with the certificate of the principal it
was issued to; a certificate that names no single principal gets no more
than a share token's scope; revocation, by identity or by a serial typed any
way an operator copies it, reaches every certificate. Real certificates over
a real mutual-TLS daemon."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from pacsvault.client import PacsvaultClient
from pacsvault.daemon.replication import certs
from tests.conftest import Daemon, dicom_bytes, identity

StatusCode = grpc.StatusCode
OTHER_URI = certs.identity_uri("other", "client")
URN = "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"
# Serials whose hex has an odd number of digits: openssl prints them with a leading zero.
SERIALS = {"reader-1": 0xA1B2C3D4E5F, "reader-2": 0xB1B2C3D4E5F60718293, "reader-3": 0xC0FFEE1}


def code_of(call) -> StatusCode:  # type: ignore[no-untyped-def]
    try:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)
    except grpc.RpcError as exc:
        return exc.code()
    return StatusCode.OK


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = certs.make_ca()
        self.issued: dict[str, certs.Issued] = {}

    def add(self, name: str, **kwargs: object) -> certs.Issued:
        issued = certs.issue_cert(self.ca, name if "uris" not in kwargs else "odd", kind="client", server=False,
                                  **kwargs)  # type: ignore[arg-type]
        self.issued[name] = issued
        (self.root / f"{name}.pem").write_bytes(issued.cert_pem())
        (self.root / f"{name}.key").write_bytes(issued.key_pem())
        return issued

    def files(self, name: str) -> dict[str, str]:
        return {"ca_file": str(self.root / "ca.pem"), "cert_file": str(self.root / f"{name}.pem"),
                "key_file": str(self.root / f"{name}.key")}

    def openssl_serial(self, name: str) -> str:
        """The serial exactly as an operator copies it from openssl."""
        out = subprocess.run(["openssl", "x509", "-serial", "-noout", "-in", str(self.root / f"{name}.pem")],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out.startswith("serial=")
        return out.removeprefix("serial=")


@pytest.fixture
def tls(daemon_factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "pki"
    root.mkdir()
    pki = Pki(root)
    server = certs.issue_cert(pki.ca, "site-a", ip_addresses=["127.0.0.1"])
    for name, data in {"ca.pem": pki.ca.cert_pem(), "s.pem": server.cert_pem(), "s.key": server.key_pem()}.items():
        (root / name).write_bytes(data)
    pki.add("secadmin")
    pki.add("viewer")
    pki.add("ingester")
    pki.add("auditor")
    for name, serial in SERIALS.items():
        pki.add(name, serial_number=serial)
    pki.add("stranger")  # one SPIFFE identity, configured nowhere
    pki.add("cn-only", uris=[])  # CN "odd", no SAN at all
    pki.add("two-uris", uris=[certs.identity_uri("viewer", "client"), OTHER_URI])
    pki.add("urn", uris=[URN])
    readers = ", ".join(f'{{ identity = "{certs.identity_uri(n, "client")}", roles = ["reader"] }}'
                        for n in ["viewer", *SERIALS])
    (tmp_path / "pv.toml").write_text(
        f'[security]\ntls_cert_file = "{root / "s.pem"}"\ntls_key_file = "{root / "s.key"}"\n'
        f'client_ca_file = "{root / "ca.pem"}"\n'
        f'principals = [{{ identity = "{certs.identity_uri("secadmin", "client")}", '
        f'roles = ["security-admin"] }}, {{ identity = "{certs.identity_uri("ingester", "client")}", '
        f'roles = ["ingest"] }}, {{ identity = "{certs.identity_uri("auditor", "client")}", '
        f'roles = ["auditor"] }}, {readers}]\n')
    return daemon_factory(config=tmp_path / "pv.toml"), pki


# ---------------------------------------------------------------------------------------------------------
# defect 6: revocation by serial, typed any way


def test_a_serial_revoked_as_openssl_prints_it_is_refused(tls) -> None:  # type: ignore[no-untyped-def]
    daemon, pki = tls
    typed = {
        "reader-1": pki.openssl_serial("reader-1"),                         # 0A1B2C3D4E5F
        "reader-2": ":".join(pki.openssl_serial("reader-2")[i:i + 2]        # 0b:1b:2c:...
                             for i in range(0, len(pki.openssl_serial("reader-2")), 2)).lower(),
        "reader-3": "serial=000" + pki.openssl_serial("reader-3"),           # pasted with the label, extra zeros
    }
    assert typed["reader-1"].startswith("0") and typed["reader-1"].isupper()
    for name in typed:
        with PacsvaultClient(daemon.target, **pki.files(name)) as reader:
            assert code_of(lambda: list(reader.find("study"))) == StatusCode.OK, name
    with PacsvaultClient(daemon.target, **pki.files("secadmin")) as admin:
        for name, serial in typed.items():
            admin.revoke_certificate(serial_hex=serial, reason="laptop lost")
    for name in typed:
        with PacsvaultClient(daemon.target, **pki.files(name)) as reader:
            assert code_of(lambda: list(reader.find("study"))) == StatusCode.UNAUTHENTICATED, name
    with PacsvaultClient(daemon.target, **pki.files("viewer")) as viewer:
        assert code_of(lambda: list(viewer.find("study"))) == StatusCode.OK  # nobody else


@pytest.mark.parametrize("bad", ["", "xyz", "12G4", ":", "0x", "1" * 65, "serial="])
def test_a_bad_serial_is_invalid_argument(tls, bad: str) -> None:  # type: ignore[no-untyped-def]
    daemon, pki = tls
    with PacsvaultClient(daemon.target, **pki.files("secadmin")) as admin:
        try:
            admin.revoke_certificate(serial_hex=bad, reason="test") if bad else \
                admin.revoke_certificate(identity="", serial_hex="", reason="test")
        except grpc.RpcError as exc:
            assert exc.code() == StatusCode.INVALID_ARGUMENT, exc.details()
            assert "serial" in (exc.details() or ""), exc.details()
        else:
            pytest.fail(f"serial {bad!r} was accepted")


# ---------------------------------------------------------------------------------------------------------
# defect 3: tokens bound to their principal; certificates that name no single principal


ODD = ["cn-only", "two-uris", "urn", "stranger"]


@pytest.fixture
def stocked(tls):  # type: ignore[no-untyped-def]
    daemon, pki = tls
    with PacsvaultClient(daemon.target, **pki.files("ingester")) as ingester:
        for n, patient in [(1, "BIND-A"), (2, "BIND-B")]:
            assert ingester.store(dicom_bytes(PatientID=patient, **identity(n))).status == "stored"
    with PacsvaultClient(daemon.target, **pki.files("secadmin")) as admin:
        token = admin.create_token(certs.identity_uri("viewer", "client"), ttl_seconds=300).token
    with PacsvaultClient(daemon.target, **pki.files("viewer")) as viewer:
        share = viewer.create_share(study_instance_uid=identity(1)["StudyInstanceUID"], ttl_seconds=300).token
    return daemon, pki, token, share


def studies(client: PacsvaultClient) -> set[str]:
    return {m.study.study_instance_uid for m in client.find("study")}


def test_a_reader_token_is_worthless_with_any_certificate_but_its_principals(stocked) -> None:  # type: ignore[no-untyped-def]
    daemon, pki, token, _ = stocked
    everything = {identity(1)["StudyInstanceUID"], identity(2)["StudyInstanceUID"]}
    with PacsvaultClient(daemon.target, token=token, **pki.files("viewer")) as owner:
        assert studies(owner) == everything
    for name in [*ODD, "reader-1"]:
        with PacsvaultClient(daemon.target, token=token, **pki.files(name)) as thief:
            assert code_of(lambda: studies(thief)) == StatusCode.UNAUTHENTICATED, name
            assert code_of(lambda: thief.get_instance(identity(2)["SOPInstanceUID"])) == \
                StatusCode.UNAUTHENTICATED, name
        # Alone, such a certificate reaches nothing at all.
        if name in ODD:
            with PacsvaultClient(daemon.target, **pki.files(name)) as alone:
                assert code_of(lambda: studies(alone)) == StatusCode.PERMISSION_DENIED, name
                assert code_of(alone.serving_status) == StatusCode.PERMISSION_DENIED, name


def test_a_share_token_gives_its_scope_and_nothing_more_with_any_certificate(stocked) -> None:  # type: ignore[no-untyped-def]
    daemon, pki, _, share = stocked
    shared, other = identity(1), identity(2)
    # "viewer" is a reader in its own right: with the share token it still sees only the share.
    for name in [*ODD, "viewer"]:
        with PacsvaultClient(daemon.target, token=share, **pki.files(name)) as holder:
            assert studies(holder) == {shared["StudyInstanceUID"]}, name
            assert holder.get_instance(shared["SOPInstanceUID"]), name
            assert code_of(lambda: holder.get_instance(other["SOPInstanceUID"])) == StatusCode.NOT_FOUND, name
            assert holder.store(dicom_bytes(**identity(9))).code == "PERMISSION_DENIED", name
            assert code_of(holder.serving_status) == StatusCode.PERMISSION_DENIED, name
            assert code_of(lambda: holder.create_share(study_instance_uid=shared["StudyInstanceUID"])) == \
                StatusCode.PERMISSION_DENIED, name


@pytest.mark.parametrize(("name", "revoke"), [
    ("cn-only", "serial"), ("two-uris", "serial"), ("urn", "serial"), ("stranger", "serial"),
    ("urn", URN), ("two-uris", OTHER_URI), ("stranger", certs.identity_uri("stranger", "client")),
], ids=lambda v: v.rsplit("/", 1)[-1] if isinstance(v, str) else v)
def test_revocation_reaches_certificates_that_name_no_single_principal(stocked, name: str,  # type: ignore[no-untyped-def]
                                                                        revoke: str) -> None:
    daemon, pki, _, share = stocked
    with PacsvaultClient(daemon.target, token=share, **pki.files(name)) as holder:
        assert studies(holder) == {identity(1)["StudyInstanceUID"]}
    with PacsvaultClient(daemon.target, **pki.files("secadmin")) as admin:
        if revoke == "serial":
            admin.revoke_certificate(serial_hex=pki.openssl_serial(name), reason="test")
        else:
            admin.revoke_certificate(identity=revoke, reason="test")
    with PacsvaultClient(daemon.target, token=share, **pki.files(name)) as holder:
        assert code_of(lambda: studies(holder)) == StatusCode.UNAUTHENTICATED
    with PacsvaultClient(daemon.target, token=share, **pki.files("viewer")) as other_holder:
        assert studies(other_holder) == {identity(1)["StudyInstanceUID"]}  # the share itself still works


# ---------------------------------------------------------------------------------------------------------
# issue 16, item 8: a refusal record names who was refused


def refusals(daemon: Daemon, pki: Pki, principal: str) -> list[dict]:
    """The refusal records of ``principal``, waiting a little: refusals are queued, not awaited."""
    deadline = time.monotonic() + 10
    with PacsvaultClient(daemon.target, **pki.files("auditor")) as auditor:
        while True:
            found = [r for r in auditor.audit_query(principal=principal) if r.get("phase") == "refused"]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def test_refusal_records_name_the_refused_caller(stocked) -> None:  # type: ignore[no-untyped-def]
    daemon, pki, _, share = stocked
    forged = "pv_" + "F" * 43
    with PacsvaultClient(daemon.target, **pki.files("viewer")) as viewer:
        share_id = next(s.share_id for s in viewer.list_shares())
        viewer.revoke_share(share_id)
    with PacsvaultClient(daemon.target, **pki.files("secadmin")) as admin:
        admin.revoke_certificate(serial_hex=pki.openssl_serial("reader-1"), reason="laptop lost")
    attempts = {
        certs.identity_uri("reader-1", "client"): ("reader-1", None, "UNAUTHENTICATED"),  # revoked certificate
        f"token:{hashlib.sha256(forged.encode()).hexdigest()[:16]}": ("cn-only", forged, "UNAUTHENTICATED"),
        f"share:{share_id}": ("urn", share, "UNAUTHENTICATED"),  # a revoked share
        certs.identity_uri("viewer", "client"): ("viewer", forged, "UNAUTHENTICATED"),  # TLS says who it is
        f"certificate:{format(pki.issued['cn-only'].cert.serial_number, 'x')}": ("cn-only", None,
                                                                                  "PERMISSION_DENIED"),
    }
    for principal, (cert, token, code) in attempts.items():
        with PacsvaultClient(daemon.target, token=token, **pki.files(cert)) as caller:
            assert code_of(lambda: studies(caller)) == getattr(StatusCode, code), principal
        records = refusals(daemon, pki, principal)
        assert records and all(r["outcome"] == code and r["action"] == "Find" for r in records), (principal, records)
    every = refusals(daemon, pki, "")  # no filter: every refusal so far
    assert len(every) >= len(attempts) and all(r["principal"] for r in every), every


def test_a_certificate_revoked_mid_transfer_stops_the_stream(stocked) -> None:  # type: ignore[no-untyped-def]
    daemon, pki, _, _ = stocked
    big, total = "1.2.826.0.1.3680043.10.80", 0
    with PacsvaultClient(daemon.target, **pki.files("ingester")) as ingester:
        for n in range(16):
            data = dicom_bytes(**{**identity(n, root=big), "StudyInstanceUID": f"{big}.1"},
                               ImageComments="x" * (2 << 20))
            total += len(data)
            assert ingester.store(data).status == "stored"
    with PacsvaultClient(daemon.target, **pki.files("reader-2")) as reader:
        stream = reader.iter_study(f"{big}.1")
        received = len(next(stream)[1])
        with PacsvaultClient(daemon.target, **pki.files("secadmin")) as admin:
            admin.revoke_certificate(identity=certs.identity_uri("reader-2", "client"), reason="left the hospital")
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as stopped:
            for _, data in stream:
                received += len(data)
    assert stopped.value.code() == StatusCode.UNAUTHENTICATED, stopped.value.details()
    assert received < total / 2, (received, total)
