"""Deny by default: every method has an entry in the access table, and over a
real TLS listener every role reaches exactly the methods the table gives it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pacsvault.daemon.replication import certs
from pacsvault.daemon.security.access_table import METHOD_ROLES, Role
from pacsvault.v1 import (
    appliance_pb2,
    appliance_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    archive_pb2,
    integrity_pb2,
    integrity_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    archive_pb2_grpc,
    peer_pb2,
    replication_pb2,
    replication_pb2_grpc,
    security_pb2,
    security_pb2_grpc,
    storage_pb2,
    storage_pb2_grpc,
)
from tests.conftest import Daemon, run_cli

SERVED = [archive_pb2, appliance_pb2, storage_pb2, replication_pb2, peer_pb2, security_pb2, audit_pb2,
          integrity_pb2, lifecycle_pb2]
CLIENT_ROLES = [r for r in Role if r not in (Role.PEER, Role.SHARE)]


def all_methods() -> set[str]:
    methods = {f"/{s.full_name}/{m.name}" for mod in SERVED for s in mod.DESCRIPTOR.services_by_name.values()
               for m in s.methods}
    methods |= {f"/{s.full_name}/{m.name}" for s in health_pb2.DESCRIPTOR.services_by_name.values()
                for m in s.methods}
    methods |= {f"/{s.full_name}/{m.name}" for s in reflection_pb2.DESCRIPTOR.services_by_name.values()
                for m in s.methods}
    return methods


def test_every_method_of_every_service_has_an_entry_and_no_entry_is_stale() -> None:
    methods = all_methods()
    assert methods - set(METHOD_ROLES) == set(), "methods without an access-table entry"
    assert set(METHOD_ROLES) - methods == set(), "entries for methods that do not exist"


def test_roles_that_must_not_read_patient_data_reach_no_such_method() -> None:
    # PlanMoves (admin) names studies by UID and size only: no name, ID or date.
    # DeleteStudy (admin) returns counts only: it removes patient data without showing any; so does
    # its approval by a second admin, and the list of requests shows study UIDs and the admins' own reasons.
    phi = {m for m in METHOD_ROLES if m.startswith("/pacsvault.v1.ArchiveService/")} - {
        "/pacsvault.v1.ArchiveService/DeleteStudy", "/pacsvault.v1.ArchiveService/ApproveStudyDeletion",
        "/pacsvault.v1.ArchiveService/ListStudyDeletionRequests"}
    phi |= {"/pacsvault.v1.ShareService/CreateShare", "/pacsvault.v1.ShareService/ListShares"}
    for method in phi:
        assert not METHOD_ROLES[method] & {Role.ADMIN, Role.SECURITY_ADMIN, Role.AUDITOR, Role.MONITOR,
                                             Role.PEER}, method


@pytest.fixture
def tls_daemon(daemon_factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    ca = certs.make_ca()
    pki = tmp_path / "pki"
    pki.mkdir()
    server = certs.issue_cert(ca, "site-a", ip_addresses=["127.0.0.1"])
    files = {"ca.pem": ca.cert_pem(), "server.pem": server.cert_pem(), "server.key": server.key_pem()}
    clients = {role: certs.issue_cert(ca, f"role-{role.value}", kind="client", server=False) for role in CLIENT_ROLES}
    clients_stranger = certs.issue_cert(ca, "stranger", kind="client", server=False)
    for name, data in files.items():
        (pki / name).write_bytes(data)
    principals = ", ".join(
        f'{{ identity = "{certs.identity_uri("role-" + role.value, "client")}", roles = ["{role.value}"] }}'
        for role in CLIENT_ROLES)
    config = tmp_path / "tls.toml"
    glass = ", ".join(f'"{certs.identity_uri("role-" + role.value, "client")}"' for role in CLIENT_ROLES)
    config.write_text(f'[security]\ntls_cert_file = "{pki / "server.pem"}"\ntls_key_file = "{pki / "server.key"}"\n'
                      f'client_ca_file = "{pki / "ca.pem"}"\nprincipals = [{principals}]\n'
                      f'break_glass_principals = [{glass}]\n')
    daemon = daemon_factory(config=config)
    return daemon, ca, clients, clients_stranger


def channel(daemon: Daemon, ca: certs.Issued, client: certs.Issued | None) -> grpc.Channel:
    if client is None:
        credentials = grpc.ssl_channel_credentials(ca.cert_pem())
    else:
        credentials = grpc.ssl_channel_credentials(ca.cert_pem(), client.key_pem(), client.cert_pem())
    return grpc.secure_channel(daemon.target, credentials)


def first(stream) -> None:  # type: ignore[no-untyped-def]
    for _ in stream:
        break


def calls(ch: grpc.Channel) -> dict[str, Callable[[], object]]:
    """A minimal real call of every method the client API serves."""
    a, ap = archive_pb2_grpc.ArchiveServiceStub(ch), appliance_pb2_grpc.ApplianceServiceStub(ch)
    st, rep = storage_pb2_grpc.StorageServiceStub(ch), replication_pb2_grpc.ReplicationServiceStub(ch)
    h, rf = health_pb2_grpc.HealthStub(ch), reflection_pb2_grpc.ServerReflectionStub(ch)
    sec, sh = security_pb2_grpc.SecurityServiceStub(ch), security_pb2_grpc.ShareServiceStub(ch)
    au = audit_pb2_grpc.AuditServiceStub(ch)
    ig, lc = integrity_pb2_grpc.IntegrityServiceStub(ch), lifecycle_pb2_grpc.LifecycleServiceStub(ch)
    uid, t = "1.2.826.0.1.404", 10
    return {
        "/pacsvault.v1.StorageService/RebuildVolume":
            lambda: st.RebuildVolume(storage_pb2.RebuildVolumeRequest(), timeout=t),
        "/pacsvault.v1.IntegrityService/GetScrubStatus":
            lambda: ig.GetScrubStatus(integrity_pb2.GetScrubStatusRequest(), timeout=t),
        "/pacsvault.v1.IntegrityService/StartScrub": lambda: ig.StartScrub(integrity_pb2.StartScrubRequest(), timeout=t),
        "/pacsvault.v1.IntegrityService/CheckIntegrity":
            lambda: first(ig.CheckIntegrity(integrity_pb2.CheckIntegrityRequest(), timeout=t)),
        "/pacsvault.v1.IntegrityService/RepairIntegrity":
            lambda: first(ig.RepairIntegrity(integrity_pb2.RepairIntegrityRequest(), timeout=t)),
        "/pacsvault.v1.LifecycleService/AddLegalHold": lambda: lc.AddLegalHold(
            lifecycle_pb2.AddLegalHoldRequest(study_instance_uid=uid, reason="access test"), timeout=t),
        "/pacsvault.v1.LifecycleService/RemoveLegalHold": lambda: lc.RemoveLegalHold(
            lifecycle_pb2.RemoveLegalHoldRequest(study_instance_uid=uid, reason="access test"), timeout=t),
        "/pacsvault.v1.LifecycleService/ListLegalHolds":
            lambda: lc.ListLegalHolds(lifecycle_pb2.ListLegalHoldsRequest(), timeout=t),
        "/pacsvault.v1.LifecycleService/DeleteSeries": lambda: lc.DeleteSeries(
            lifecycle_pb2.DeleteSeriesRequest(series_instance_uid=uid, reason="access test"), timeout=t),
        "/pacsvault.v1.LifecycleService/DeleteInstance": lambda: lc.DeleteInstance(
            lifecycle_pb2.DeleteInstanceRequest(sop_instance_uid=uid, reason="access test"), timeout=t),
        "/pacsvault.v1.LifecycleService/Undelete": lambda: lc.Undelete(lifecycle_pb2.UndeleteRequest(), timeout=t),
        "/pacsvault.v1.LifecycleService/ListDeleted":
            lambda: lc.ListDeleted(lifecycle_pb2.ListDeletedRequest(), timeout=t),
        "/pacsvault.v1.ArchiveService/StoreInstance":
            lambda: a.StoreInstance(iter([archive_pb2.StoreInstanceRequest(data=b"x")]), timeout=t),
        "/pacsvault.v1.ArchiveService/PutInstance":
            lambda: a.PutInstance(archive_pb2.PutInstanceRequest(data=b"x"), timeout=t),
        "/pacsvault.v1.ArchiveService/Find":
            lambda: a.Find(archive_pb2.FindRequest(level=archive_pb2.QUERY_LEVEL_STUDY), timeout=t),
        "/pacsvault.v1.ArchiveService/ListPatientStudies":
            lambda: a.ListPatientStudies(archive_pb2.ListPatientStudiesRequest(patient_id="X"), timeout=t),
        "/pacsvault.v1.ArchiveService/GetInstance":
            lambda: first(a.GetInstance(archive_pb2.GetInstanceRequest(sop_instance_uid=uid), timeout=t)),
        "/pacsvault.v1.ArchiveService/ReadInstance":
            lambda: a.ReadInstance(archive_pb2.ReadInstanceRequest(sop_instance_uid=uid), timeout=t),
        "/pacsvault.v1.ArchiveService/GetSeries":
            lambda: first(a.GetSeries(archive_pb2.GetSeriesRequest(series_instance_uid=uid), timeout=t)),
        "/pacsvault.v1.ArchiveService/GetStudy":
            lambda: first(a.GetStudy(archive_pb2.GetStudyRequest(study_instance_uid=uid), timeout=t)),
        "/pacsvault.v1.ArchiveService/GetStudyMetadata": lambda: first(a.GetStudyMetadata(
            archive_pb2.GetStudyMetadataRequest(study_instance_uid=uid), timeout=t)),
        "/pacsvault.v1.ArchiveService/Prefetch":
            lambda: a.Prefetch(archive_pb2.PrefetchRequest(patient_id="X"), timeout=t),
        "/pacsvault.v1.ArchiveService/Pin":
            lambda: a.Pin(archive_pb2.PinRequest(study_instance_uid=uid, until="20991231"), timeout=t),
        "/pacsvault.v1.ArchiveService/DeleteStudy": lambda: a.DeleteStudy(
            archive_pb2.DeleteStudyRequest(study_instance_uid=uid, reason="access test"), timeout=t),
        "/pacsvault.v1.ArchiveService/ApproveStudyDeletion": lambda: a.ApproveStudyDeletion(
            archive_pb2.ApproveStudyDeletionRequest(request_id="0123456789abcdef"), timeout=t),
        "/pacsvault.v1.ArchiveService/ListStudyDeletionRequests": lambda: a.ListStudyDeletionRequests(
            archive_pb2.ListStudyDeletionRequestsRequest(), timeout=t),
        "/pacsvault.v1.ApplianceService/GetApplianceHealth":
            lambda: ap.GetApplianceHealth(appliance_pb2.GetApplianceHealthRequest(), timeout=t),
        "/pacsvault.v1.ApplianceService/WatchHealth":
            lambda: first(ap.WatchHealth(appliance_pb2.WatchHealthRequest(), timeout=t)),
        "/pacsvault.v1.StorageService/ListVolumes": lambda: st.ListVolumes(storage_pb2.ListVolumesRequest(), timeout=t),
        "/pacsvault.v1.StorageService/PlanMoves": lambda: st.PlanMoves(storage_pb2.PlanMovesRequest(), timeout=t),
        "/pacsvault.v1.StorageService/AddVolume": lambda: st.AddVolume(storage_pb2.AddVolumeRequest(), timeout=t),
        "/pacsvault.v1.StorageService/DrainVolume":
            lambda: st.DrainVolume(storage_pb2.DrainVolumeRequest(), timeout=t),
        "/pacsvault.v1.ReplicationService/GetReplicationStatus":
            lambda: rep.GetReplicationStatus(replication_pb2.GetReplicationStatusRequest(), timeout=t),
        "/pacsvault.v1.ReplicationService/RestoreFromPeer":
            lambda: first(rep.RestoreFromPeer(replication_pb2.RestoreFromPeerRequest(), timeout=t)),
        "/pacsvault.v1.ReplicationService/ReseedPeer":
            lambda: rep.ReseedPeer(replication_pb2.ReseedPeerRequest(), timeout=t),
        "/pacsvault.v1.SecurityService/CreateToken":
            lambda: sec.CreateToken(security_pb2.CreateTokenRequest(), timeout=t),
        "/pacsvault.v1.SecurityService/ListTokens": lambda: sec.ListTokens(security_pb2.ListTokensRequest(), timeout=t),
        "/pacsvault.v1.SecurityService/RevokeToken":
            lambda: sec.RevokeToken(security_pb2.RevokeTokenRequest(token_id="x"), timeout=t),
        "/pacsvault.v1.SecurityService/RevokeCertificate":
            lambda: sec.RevokeCertificate(security_pb2.RevokeCertificateRequest(), timeout=t),
        "/pacsvault.v1.SecurityService/BreakGlass": lambda: sec.BreakGlass(security_pb2.BreakGlassRequest(), timeout=t),
        "/pacsvault.v1.SecurityService/RotateKeys": lambda: sec.RotateKeys(security_pb2.RotateKeysRequest(), timeout=t),
        "/pacsvault.v1.SecurityService/GetEncryptionStatus":
            lambda: sec.GetEncryptionStatus(security_pb2.GetEncryptionStatusRequest(), timeout=t),
        "/pacsvault.v1.ShareService/CreateShare": lambda: sh.CreateShare(security_pb2.CreateShareRequest(), timeout=t),
        "/pacsvault.v1.ShareService/ListShares": lambda: sh.ListShares(security_pb2.ListSharesRequest(), timeout=t),
        "/pacsvault.v1.ShareService/RevokeShare":
            lambda: sh.RevokeShare(security_pb2.RevokeShareRequest(share_id="x"), timeout=t),
        "/pacsvault.v1.AuditService/VerifyAudit": lambda: au.VerifyAudit(audit_pb2.VerifyAuditRequest(), timeout=t),
        "/pacsvault.v1.AuditService/QueryAudit":
            lambda: first(au.QueryAudit(audit_pb2.QueryAuditRequest(), timeout=t)),
        "/grpc.health.v1.Health/Check": lambda: h.Check(health_pb2.HealthCheckRequest(), timeout=t),
        "/grpc.health.v1.Health/Watch": lambda: first(h.Watch(health_pb2.HealthCheckRequest(), timeout=t)),
        "/grpc.health.v1.Health/List": lambda: h.List(health_pb2.HealthListRequest(), timeout=t),
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": lambda: first(rf.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=t)),
    }


def outcome(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_every_role_against_every_method(tls_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon, ca, clients, _ = tls_daemon
    client_api = {m for m in METHOD_ROLES if not m.startswith("/pacsvault.v1.PeerService/")}
    for role, cert in clients.items():
        table = calls(channel(daemon, ca, cert))
        assert set(table) == client_api
        for method, call in table.items():
            code = outcome(call)
            if role in METHOD_ROLES[method]:
                assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), \
                    (role, method, code)
            else:
                assert code == grpc.StatusCode.PERMISSION_DENIED, (role, method, code)


def test_no_method_answers_without_valid_credentials(tls_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon, ca, _, stranger = tls_daemon
    other_ca = certs.make_ca("another CA")
    forged = certs.issue_cert(other_ca, "role-reader", kind="client", server=False)
    cases = {
        "plaintext": (grpc.insecure_channel(daemon.target), {grpc.StatusCode.UNAVAILABLE}),
        "no client certificate": (channel(daemon, ca, None), {grpc.StatusCode.UNAVAILABLE}),
        "certificate of another CA": (channel(daemon, ca, forged), {grpc.StatusCode.UNAVAILABLE}),
        "valid certificate, no principal": (channel(daemon, ca, stranger), {grpc.StatusCode.PERMISSION_DENIED}),
    }
    for name, (ch, expected) in cases.items():
        for method, call in calls(ch).items():
            assert outcome(call) in expected, (name, method)


def test_off_loopback_without_tls_refuses_to_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "pacsvault.daemon", "--listen", "0.0.0.0:0", "--data-dir",
                             str(tmp_path), "--check-config"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "security.tls_cert_file" in result.stderr


@pytest.mark.parametrize("listen", ["0.0.0.0:9464", "[::]:9464", "192.0.2.10:9464"])
def test_check_config_refuses_a_metrics_listener_off_loopback(tmp_path: Path, listen: str) -> None:
    """Without TLS files the metrics listener is plain HTTP: off loopback it is refused at --check-config."""
    import subprocess
    import sys

    config = tmp_path / "pv.toml"
    config.write_text(f'[metrics]\nlisten = "{listen}"\n')
    result = subprocess.run([sys.executable, "-m", "pacsvault.daemon", "--data-dir", str(tmp_path / "data"),
                             "--config", str(config), "--check-config"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout
    assert "metrics.listen" in result.stderr and "loopback" in result.stderr, result.stderr
    config.write_text(f'[metrics]\nenabled = false\nlisten = "{listen}"\n')  # off: nothing listens
    result = subprocess.run([sys.executable, "-m", "pacsvault.daemon", "--data-dir", str(tmp_path / "data"),
                             "--config", str(config), "--check-config"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr




def test_the_cli_speaks_mutual_tls(tls_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import run_cli

    daemon, ca, clients, _ = tls_daemon
    files = {}
    for name, data in {"ca.pem": ca.cert_pem(), "monitor.pem": clients[Role.MONITOR].cert_pem(),
                       "monitor.key": clients[Role.MONITOR].key_pem()}.items():
        (tmp_path / name).write_bytes(data)
        files[name] = str(tmp_path / name)
    ok = run_cli(daemon.target, "--ca-file", files["ca.pem"], "--cert-file", files["monitor.pem"],
                 "--key-file", files["monitor.key"], "tiers", "--json")
    assert ok.returncode == 0, ok.stderr
    refused = run_cli(daemon.target, "--ca-file", files["ca.pem"], "--cert-file", files["monitor.pem"],
                      "--key-file", files["monitor.key"], "find")
    assert refused.returncode == 4 and "PERMISSION_DENIED" in refused.stderr


def test_certificates_reload_without_a_restart(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import time

    pki = tmp_path / "pki"
    pki.mkdir()

    def install(ca: certs.Issued) -> certs.Issued:
        server = certs.issue_cert(ca, "site-a", ip_addresses=["127.0.0.1"])
        client = certs.issue_cert(ca, "ops", kind="client", server=False)
        for name, data in {"ca.pem": ca.cert_pem(), "s.pem": server.cert_pem(), "s.key": server.key_pem()}.items():
            (pki / f"{name}.new").write_bytes(data)
            (pki / f"{name}.new").replace(pki / name)
        return client

    old_ca = certs.make_ca("old CA")
    old_client = install(old_ca)
    config = tmp_path / "pv.toml"
    config.write_text(f'[security]\ntls_cert_file = "{pki / "s.pem"}"\ntls_key_file = "{pki / "s.key"}"\n'
                      f'client_ca_file = "{pki / "ca.pem"}"\nprincipals = [{{ identity = '
                      f'"{certs.identity_uri("ops", "client")}", roles = ["monitor"] }}]\n')
    daemon = daemon_factory(config=config)
    assert outcome(lambda: health_pb2_grpc.HealthStub(channel(daemon, old_ca, old_client)).Check(
        health_pb2.HealthCheckRequest(), timeout=10)) == grpc.StatusCode.OK
    time.sleep(0.05)
    new_ca = certs.make_ca("new CA")
    new_client = install(new_ca)  # a renewal: new CA, new server and client certificates
    assert outcome(lambda: health_pb2_grpc.HealthStub(channel(daemon, new_ca, new_client)).Check(
        health_pb2.HealthCheckRequest(), timeout=10)) == grpc.StatusCode.OK
    assert outcome(lambda: health_pb2_grpc.HealthStub(channel(daemon, old_ca, old_client)).Check(
        health_pb2.HealthCheckRequest(), timeout=10)) == grpc.StatusCode.UNAVAILABLE
    assert daemon.alive


def test_an_expired_client_certificate_is_refused(tls_daemon) -> None:  # type: ignore[no-untyped-def]
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    daemon, ca, clients, _ = tls_daemon
    valid = clients[Role.READER]
    # The reader's own key and identity, in a certificate whose validity ended yesterday.
    now = datetime.datetime.now(datetime.UTC)
    expired_cert = (
        x509.CertificateBuilder().subject_name(valid.cert.subject).issuer_name(ca.cert.subject)
        .public_key(valid.key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30)).not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(valid.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
                       critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    expired = certs.Issued(expired_cert, valid.key)
    for method, call in calls(channel(daemon, ca, expired)).items():
        assert outcome(call) == grpc.StatusCode.UNAVAILABLE, method
    assert outcome(calls(channel(daemon, ca, valid))["/pacsvault.v1.ArchiveService/Find"]) == grpc.StatusCode.OK


def test_a_local_listener_beside_tls_serves_the_appliance_s_own_tools_in_plaintext(
        daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """server.local_listen: the CLI and health checks on the appliance itself need no certificate,
    while the network listener stays TLS with client certificates only."""
    import socket
    import subprocess
    import sys


    ca = certs.make_ca()
    pki = tmp_path / "pki"
    pki.mkdir()
    server = certs.issue_cert(ca, "site-a", ip_addresses=["127.0.0.1"])
    for name, data in {"ca.pem": ca.cert_pem(), "server.pem": server.cert_pem(),
                       "server.key": server.key_pem()}.items():
        (pki / name).write_bytes(data)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local_port = s.getsockname()[1]
    config = tmp_path / "tls.toml"
    config.write_text(f'[server]\nlocal_listen = "127.0.0.1:{local_port}"\n\n'
                      f'[security]\ntls_cert_file = "{pki / "server.pem"}"\ntls_key_file = "{pki / "server.key"}"\n'
                      f'client_ca_file = "{pki / "ca.pem"}"\nloopback_roles = ["monitor", "reader"]\n')
    daemon = daemon_factory(config=config)
    with grpc.insecure_channel(f"127.0.0.1:{local_port}") as local:
        reply = health_pb2_grpc.HealthStub(local).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        archive_pb2_grpc.ArchiveServiceStub(local).Find(
            archive_pb2.FindRequest(level=archive_pb2.QUERY_LEVEL_STUDY), timeout=10)
        with pytest.raises(grpc.RpcError) as refused:  # loopback_roles hold there: no ingest
            archive_pb2_grpc.ArchiveServiceStub(local).StoreInstance(
                iter([archive_pb2.StoreInstanceRequest(data=b"x")]), timeout=10)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with grpc.insecure_channel(daemon.target) as plain, pytest.raises(grpc.RpcError) as tls_only:
        health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert tls_only.value.code() is grpc.StatusCode.UNAVAILABLE
    # The CLI on the appliance, with no certificate at all.
    health = run_cli(f"127.0.0.1:{local_port}", "health", "--json")
    assert health.returncode in (0, 1) and '"state"' in health.stdout, health.stderr
    assert f"the appliance's own tools (plaintext, loopback) on 127.0.0.1:{local_port}" in daemon.log()
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlocal_listen = "0.0.0.0:50050"\n')
    checked = subprocess.run([sys.executable, "-m", "pacsvault.daemon", "--config", str(bad), "--data-dir",
                              str(tmp_path / "d"), "--check-config"], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 2 and "server.local_listen '0.0.0.0:50050' must be a loopback address" \
        in checked.stderr, checked.stderr
