"""Tokens, revocation, break-glass and share grants against a real daemon.
Each case asserts the status code and that nothing outside the grant leaks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest

from pacsvault.client import PacsvaultClient
from pacsvault.daemon.replication import certs
from pacsvault.v1 import archive_pb2, archive_pb2_grpc
from tests.conftest import Daemon, dicom_bytes, identity, run_cli

StatusCode = grpc.StatusCode


def code_of(call) -> StatusCode:  # type: ignore[no-untyped-def]
    try:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)
    except grpc.RpcError as exc:
        return exc.code()
    return StatusCode.OK


@pytest.fixture
def archive_with_two_patients(daemon: Daemon) -> Daemon:
    with daemon.client() as client:
        for n, patient in [(1, "PAT-A"), (2, "PAT-A"), (3, "PAT-B")]:
            assert client.store(dicom_bytes(PatientID=patient, **identity(n))).status == "stored"
    return daemon


def study(n: int) -> str:
    return identity(n)["StudyInstanceUID"]


def sop(n: int) -> str:
    return identity(n)["SOPInstanceUID"]


def test_a_study_share_sees_its_study_and_nothing_else(archive_with_two_patients: Daemon) -> None:
    daemon = archive_with_two_patients
    with daemon.client() as reader:
        grant = reader.create_share(study_instance_uid=study(1), ttl_seconds=60)
    with PacsvaultClient(daemon.target, token=grant.token) as guest:
        assert guest.get_instance(sop(1)) == dicom_bytes(PatientID="PAT-A", **identity(1))
        assert [m.study.study_instance_uid for m in guest.find("study")] == [study(1)]
        assert list(guest.find("study", study_instance_uid=study(2))) == []
        assert list(guest.patient_studies("PAT-B")) == []
        # Outside the grant: NOT_FOUND, exactly as for a study that does not exist.
        for call in (lambda: guest.get_instance(sop(2)), lambda: guest.save_study(study(3), "/tmp/never"),
                     lambda: guest.study_metadata(study(2))):
            assert code_of(call) == StatusCode.NOT_FOUND
        # Read-only: no store, no pin, no new shares, no health.
        assert guest.store(dicom_bytes(**identity(9))).code == "PERMISSION_DENIED"
        assert code_of(lambda: guest.pin(study(1), "20991231")) == StatusCode.PERMISSION_DENIED
        assert code_of(lambda: guest.create_share(study_instance_uid=study(1))) == StatusCode.PERMISSION_DENIED
        assert code_of(guest.health) == StatusCode.PERMISSION_DENIED


def test_a_patient_share_sees_every_study_of_that_patient_only(archive_with_two_patients: Daemon) -> None:
    daemon = archive_with_two_patients
    with daemon.client() as reader:
        grant = reader.create_share(patient_id="PAT-A", ttl_seconds=60)
    with PacsvaultClient(daemon.target, token=grant.token) as guest:
        assert {m.study.study_instance_uid for m in guest.find("study")} == {study(1), study(2)}
        assert code_of(lambda: guest.get_instance(sop(3))) == StatusCode.NOT_FOUND
        assert list(guest.find("patient", patient_id="PAT-B")) == []


def test_a_patient_share_without_issuer_never_shows_another_issuers_patient(daemon: Daemon) -> None:
    # The same PatientID at two hospitals: one without an issuer, one issued by HOSP-B.
    with daemon.client() as client:
        assert client.store(dicom_bytes(PatientID="MRN-7", PatientName="Here^Anna", **identity(11))).status == \
            "stored"
        assert client.store(dicom_bytes(PatientID="MRN-7", IssuerOfPatientID="HOSP-B", PatientName="Elsewhere^Bob",
                                        **identity(12))).status == "stored"
        grant = client.create_share(patient_id="MRN-7", ttl_seconds=60)
        assert grant.share.issuer_of_patient_id == ""
        other = client.create_share(patient_id="MRN-7", issuer_of_patient_id="HOSP-B", ttl_seconds=60)
    with PacsvaultClient(daemon.target, token=grant.token) as guest:
        for level in ("patient", "study", "series", "instance"):
            found = list(guest.find(level))
            assert {m.patient.patient_name for m in found} == {"Here^Anna"}, level
            assert {m.patient.issuer_of_patient_id for m in found} == {""}, level
        assert [m.study.study_instance_uid for m in guest.patient_studies("MRN-7")] == [study(11)]
        assert list(guest.find("study", patient_id="MRN-7", issuer_of_patient_id="HOSP-B")) == []
        assert list(guest.find("study", patient_name="elsewhere*")) == []
        assert code_of(lambda: guest.get_instance(sop(12))) == StatusCode.NOT_FOUND
        assert code_of(lambda: guest.study_metadata(study(12))) == StatusCode.NOT_FOUND
        assert guest.get_instance(sop(11))
    with PacsvaultClient(daemon.target, token=other.token) as guest:
        assert {m.patient.patient_name for m in guest.find("study")} == {"Elsewhere^Bob"}
        assert code_of(lambda: guest.get_instance(sop(11))) == StatusCode.NOT_FOUND
    # A share names a patient that exists under exactly that issuer, the empty one included.
    with daemon.client() as client:
        assert client.store(dicom_bytes(PatientID="MRN-8", IssuerOfPatientID="HOSP-B", **identity(13))).status == \
            "stored"
        assert code_of(lambda: client.create_share(patient_id="MRN-8", ttl_seconds=60)) == StatusCode.NOT_FOUND


def test_share_expiry_revocation_use_limit_and_pin(archive_with_two_patients: Daemon) -> None:
    daemon = archive_with_two_patients
    with daemon.client() as reader:
        short = reader.create_share(study_instance_uid=study(1), ttl_seconds=1)
        limited = reader.create_share(study_instance_uid=study(1), ttl_seconds=60, max_uses=2)
        revocable = reader.create_share(study_instance_uid=study(1), ttl_seconds=60)
        pinned = reader.create_share(study_instance_uid=study(1), ttl_seconds=60, pin="4711")
        time.sleep(1.2)
        with PacsvaultClient(daemon.target, token=short.token) as guest:
            assert code_of(lambda: guest.get_instance(sop(1))) == StatusCode.UNAUTHENTICATED
        with PacsvaultClient(daemon.target, token=limited.token) as guest:
            guest.get_instance(sop(1))
            guest.get_instance(sop(1))
            assert code_of(lambda: guest.get_instance(sop(1))) == StatusCode.UNAUTHENTICATED
        with PacsvaultClient(daemon.target, token=revocable.token) as guest:
            guest.get_instance(sop(1))
            reader.revoke_share(revocable.share.share_id)
            assert code_of(lambda: guest.get_instance(sop(1))) == StatusCode.UNAUTHENTICATED  # at once
        with PacsvaultClient(daemon.target, token=pinned.token) as guest:
            assert code_of(lambda: guest.get_instance(sop(1))) == StatusCode.UNAUTHENTICATED
        with PacsvaultClient(daemon.target, token=pinned.token, pin="4711") as guest:
            assert guest.get_instance(sop(1))
        shares = {s.share_id: s for s in reader.list_shares()}
        assert shares[limited.share.share_id].uses == 2 and shares[revocable.share.share_id].revoked
        assert shares[pinned.share.share_id].pin_required
    with PacsvaultClient(daemon.target, token="pv_" + "A" * 43) as forger:
        assert code_of(lambda: forger.get_instance(sop(1))) == StatusCode.UNAUTHENTICATED
    # Tokens are stored as hashes only: the token text is nowhere in the index.
    index = (daemon.data_dir / "index" / "data.mdb").read_bytes()
    assert revocable.token.encode() not in index and pinned.token.encode() not in index


def test_a_share_revoked_mid_transfer_stops_the_stream(daemon: Daemon) -> None:
    big = "1.2.826.0.1.3680043.10.78"
    total = 0
    with daemon.client() as client:
        for n in range(16):
            data = dicom_bytes(**{**identity(n, root=big), "StudyInstanceUID": f"{big}.1"},
                               ImageComments="x" * (2 << 20))
            total += len(data)
            assert client.store(data).status == "stored"
        grant = client.create_share(study_instance_uid=f"{big}.1", ttl_seconds=60)
        stream = archive_pb2_grpc.ArchiveServiceStub(grpc.insecure_channel(
            daemon.target, options=[("grpc.max_receive_message_length", 8 << 20)])).GetStudy(
            archive_pb2.GetStudyRequest(study_instance_uid=f"{big}.1"), timeout=60,
            metadata=[("authorization", f"Bearer {grant.token}")])
        received = len(next(stream).data)
        client.revoke_share(grant.share.share_id)
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as stopped:
            for message in stream:
                received += len(message.data)
    assert stopped.value.code() == StatusCode.UNAUTHENTICATED, stopped.value.details()
    assert "revoked" in (stopped.value.details() or "")
    # What was already on its way may arrive (flow-control buffers), the rest of the study does not.
    assert received < total / 2, (received, total)


def test_wrong_pins_lock_the_share(archive_with_two_patients: Daemon) -> None:
    daemon = archive_with_two_patients
    with daemon.client() as reader:
        pinned = reader.create_share(study_instance_uid=study(1), ttl_seconds=60, pin="4711")
    with PacsvaultClient(daemon.target, token=pinned.token, pin="0000") as guesser:
        for _ in range(5):
            assert code_of(lambda: guesser.get_instance(sop(1))) == StatusCode.UNAUTHENTICATED
    with PacsvaultClient(daemon.target, token=pinned.token, pin="4711") as holder:
        assert code_of(lambda: holder.get_instance(sop(1))) == StatusCode.UNAUTHENTICATED


def test_share_cli(archive_with_two_patients: Daemon) -> None:
    daemon = archive_with_two_patients
    created = run_cli(daemon.target, "share", "create", "--study-uid", study(1), "--days", "1", "--json")
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    listed = run_cli(daemon.target, "share", "list", "--json")
    assert body["share_id"] in listed.stdout
    got = run_cli(daemon.target, "--token", body["token"], "find", "--json")
    assert [json.loads(line)["StudyInstanceUID"] for line in got.stdout.splitlines()] == [study(1)]
    assert run_cli(daemon.target, "share", "revoke", body["share_id"]).returncode == 0
    refused = run_cli(daemon.target, "--token", body["token"], "find")
    assert refused.returncode == 4 and "UNAUTHENTICATED" in refused.stderr  # permission denied
    bad = run_cli(daemon.target, "share", "create", "--study-uid", "1.2.3.404")
    assert bad.returncode == 3 and "NOT_FOUND" in bad.stderr  # not found


@pytest.fixture
def tls_pair(daemon_factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    ca = certs.make_ca()
    server = certs.issue_cert(ca, "site-a", ip_addresses=["127.0.0.1"])
    people = {name: certs.issue_cert(ca, name, kind="client", server=False)
              for name in ("secadmin", "viewer", "robot")}
    pki = tmp_path / "pki"
    pki.mkdir()
    for name, data in {"ca.pem": ca.cert_pem(), "s.pem": server.cert_pem(), "s.key": server.key_pem()}.items():
        (pki / name).write_bytes(data)
    uri = {name: certs.identity_uri(name, "client") for name in people}
    (tmp_path / "pv.toml").write_text(
        f'[security]\ntls_cert_file = "{pki / "s.pem"}"\ntls_key_file = "{pki / "s.key"}"\n'
        f'client_ca_file = "{pki / "ca.pem"}"\n'
        f'principals = [{{ identity = "{uri["secadmin"]}", roles = ["security-admin"] }}, '
        f'{{ identity = "{uri["viewer"]}", roles = ["reader"] }}, '
        f'{{ identity = "{uri["robot"]}", roles = ["monitor"] }}]\n')
    daemon = daemon_factory(config=tmp_path / "pv.toml")
    files = {}
    for name, issued in people.items():
        (pki / f"{name}.pem").write_bytes(issued.cert_pem())
        (pki / f"{name}.key").write_bytes(issued.key_pem())
        files[name] = {"ca_file": str(pki / "ca.pem"), "cert_file": str(pki / f"{name}.pem"),
                       "key_file": str(pki / f"{name}.key")}
    return daemon, files, uri, people


def test_tokens_are_bound_expire_idle_and_die_on_revocation(tls_pair) -> None:  # type: ignore[no-untyped-def]
    daemon, files, uri, _ = tls_pair
    with PacsvaultClient(daemon.target, **files["secadmin"]) as admin:
        robot = admin.create_token(uri["robot"], ttl_seconds=60)
        idle = admin.create_token(uri["robot"], ttl_seconds=60, idle_timeout_seconds=1)
        assert code_of(lambda: admin.create_token("spiffe://pacsvault/client/nobody", 60)) == \
            StatusCode.INVALID_ARGUMENT
        assert {t.token_id for t in admin.list_tokens()} >= {robot.info.token_id, idle.info.token_id}
    # The robot's own certificate with its token: its roles, monitor only.
    with PacsvaultClient(daemon.target, token=robot.token, **files["robot"]) as client:
        assert client.serving_status() == "SERVING"
        assert code_of(lambda: list(client.find("study"))) == StatusCode.PERMISSION_DENIED
    # Bound to the robot: the viewer's certificate with the robot's token is refused.
    with PacsvaultClient(daemon.target, token=robot.token, **files["viewer"]) as thief:
        assert code_of(lambda: list(thief.find("study"))) == StatusCode.UNAUTHENTICATED
    with PacsvaultClient(daemon.target, token=idle.token, **files["robot"]) as client:
        client.health()
        time.sleep(1.5)
        assert code_of(client.health) == StatusCode.UNAUTHENTICATED
    with PacsvaultClient(daemon.target, **files["secadmin"]) as admin:
        admin.revoke_token(robot.info.token_id)
    with PacsvaultClient(daemon.target, token=robot.token, **files["robot"]) as replay:
        assert code_of(replay.health) == StatusCode.UNAUTHENTICATED


def test_a_revoked_certificate_is_refused_within_seconds(tls_pair) -> None:  # type: ignore[no-untyped-def]
    daemon, files, uri, people = tls_pair
    with PacsvaultClient(daemon.target, **files["viewer"]) as viewer:
        assert list(viewer.find("study")) == []
        with PacsvaultClient(daemon.target, **files["secadmin"]) as admin:
            admin.revoke_certificate(serial_hex=format(people["viewer"].cert.serial_number, "x"), reason="laptop lost")
        assert code_of(lambda: list(viewer.find("study"))) == StatusCode.UNAUTHENTICATED
    with PacsvaultClient(daemon.target, **files["robot"]) as robot:
        assert robot.serving_status() == "SERVING"
        with PacsvaultClient(daemon.target, **files["secadmin"]) as admin:
            admin.revoke_certificate(identity=uri["robot"], reason="decommissioned")
        assert code_of(robot.health) == StatusCode.UNAUTHENTICATED


def test_break_glass_is_time_boxed_needs_a_reason_and_is_flagged(daemon_factory, tmp_path: Path) -> None:
    (tmp_path / "pv.toml").write_text(
        '[security]\nloopback_roles = ["monitor", "auditor"]\nbreak_glass_principals = ["local:loopback"]\n')
    daemon = daemon_factory(config=tmp_path / "pv.toml")
    reason = "trauma bay 3, Zqdoe^Jane unconscious"  # reasons name patients: PHI
    with daemon.client() as client:
        assert code_of(lambda: list(client.find("study"))) == StatusCode.PERMISSION_DENIED
        assert code_of(lambda: client.break_glass("because", 5)) == StatusCode.INVALID_ARGUMENT
        assert code_of(lambda: client.break_glass(reason, 999)) == StatusCode.INVALID_ARGUMENT
        expires = client.break_glass(reason, 1)
        assert 50 < expires - time.time() <= 60
        assert list(client.find("study")) == []
        # The reason is kept where it is sealed and only auditors read it: the audit trail.
        flagged = [r for r in client.audit_query(principal="local:loopback") if r.get("action") == "Find"]
        assert any(r.get("break_glass") == reason for r in flagged), flagged
    log = daemon.log()
    assert f"BREAK-GLASS Find by local:loopback (reason of {len(reason)} characters in the audit trail)" in log
    assert "Zqdoe" not in log and "trauma" not in log
