"""What a real daemon writes to its log: pydicom's complaints summarised per instance,
without values or file paths."""

from __future__ import annotations

import re

from tests.conftest import Daemon, dicom_bytes, identity

INSTANCE_NUMBER = b"\x20\x00\x13\x00IS\x02\x00"  # (0020,0013) IS, 2 bytes, explicit VR little endian
SERIES_NUMBER = b"\x20\x00\x11\x00IS\x02\x00"


def with_bad_numbers(n: int) -> tuple[bytes, str]:
    """A real file whose InstanceNumber and SeriesNumber are 'X7', which no IS can be."""
    ids = identity(n, root="1.2.826.0.1.3680043.10.79")
    data = dicom_bytes(**ids, InstanceNumber="12", SeriesNumber="34")
    for tag in (INSTANCE_NUMBER, SERIES_NUMBER):
        at = data.index(tag) + len(tag)
        data = data[:at] + b"X7" + data[at + 2:]
    return data, ids["SOPInstanceUID"]


def test_pydicom_complaints_are_one_line_per_instance_without_values_or_paths(daemon: Daemon) -> None:
    stored = []
    with daemon.client() as client:
        for n in range(3):
            data, sop_uid = with_bad_numbers(n)
            assert client.store(data).status == "stored"
            stored.append(sop_uid)
    log = daemon.log()
    for sop_uid in stored:
        lines = [line for line in log.splitlines() if sop_uid in line and "DICOM warning" in line]
        assert len(lines) == 1, (sop_uid, lines)
        assert re.search(rf"instance {re.escape(sop_uid)}: 2 DICOM warnings from pydicom: "
                         r"Invalid value for VR IS: \.\.\. \(x2\)$", lines[0]), lines[0]
    assert "X7" not in log and "UserWarning" not in log and ".py:" not in log, log[-3000:]
    assert "] pydicom: " not in log, "pydicom's own log lines reach the log unsummarised"


ACCESS = re.compile(r"\[(?P<process>worker-\d+)\] pacsvault\.access: (?P<fields>.*)$")


def access_lines(log: str) -> list[dict[str, str]]:
    """Each access-log line's logfmt fields (no value here needs quoting)."""
    found = []
    for line in log.splitlines():
        match = ACCESS.search(line)
        if match:
            found.append(dict(pair.split("=", 1) for pair in match["fields"].split(" ")))
    return found


def test_one_access_line_per_call_structured_and_without_patient_data(daemon: Daemon) -> None:
    import urllib.request

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    ids = identity(1, root="1.2.826.0.1.3680043.10.80")
    data = dicom_bytes(**ids, PatientID="MRN-SECRET-4711", PatientName="Secretname^Patient")
    with daemon.client() as client:
        assert client.store(data).status == "stored"
        assert len(list(client.find("study", patient_id="MRN-SECRET-4711"))) == 1
        client.get_instance(ids["SOPInstanceUID"])
        try:
            client.get_instance("1.2.826.0.1.3680043.10.80.404")
        except Exception:  # noqa: BLE001 - NOT_FOUND, logged as such below
            pass
    with grpc.insecure_channel(daemon.target) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    study_url = f"{daemon.web_url}/dicom-web/studies/{ids['StudyInstanceUID']}/metadata"
    with urllib.request.urlopen(study_url, timeout=30) as answer:
        assert answer.status == 200
    log = daemon.log()
    lines = access_lines(log)
    grpc_calls = [(l["grpc_service"], l["grpc_method"], l["grpc_code"]) for l in lines if l["door"] == "grpc"]
    archive = "pacsvault.v1.ArchiveService"
    assert grpc_calls.count((archive, "PutInstance", "OK")) == 1
    assert grpc_calls.count((archive, "Find", "OK")) == 1
    assert grpc_calls.count((archive, "ReadInstance", "OK")) == 1
    assert grpc_calls.count((archive, "ReadInstance", "NOT_FOUND")) == 1
    assert grpc_calls.count(("grpc.health.v1.Health", "Check", "OK")) == 1
    for line in lines:
        assert line["principal"] == "local:loopback" and line["peer"].startswith("ipv4:127.0.0.1:"), line
        assert float(line["duration_ms"]) >= 0
    web = [l for l in lines if l["door"] == "dicomweb"]
    assert [(l["handler"], l["method"], l["code"]) for l in web] == [
        ("/dicom-web/studies/{study}/metadata", "GET", "200")], web
    # Nothing that names the patient or the study reaches the log; the per-call detail is DEBUG only.
    for secret in ("MRN-SECRET-4711", "Secretname", ids["StudyInstanceUID"], ids["SOPInstanceUID"]):
        assert secret not in log, secret
    assert " call /pacsvault" not in log and " call Find" not in log


def test_the_access_log_is_rate_bounded_and_says_how_many_calls_it_left_out(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    config = tmp_path / "pv.toml"
    config.write_text("[server]\naccess_log_per_s = 1.0\n")  # a burst of 10 lines, then 1 a second
    daemon = daemon_factory(config=config, extra=["--workers", "1"])
    calls = 60
    started = time.monotonic()
    with grpc.insecure_channel(daemon.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(calls):
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        elapsed = time.monotonic() - started
        logged = [l for l in access_lines(daemon.log()) if l.get("grpc_method") == "Check"]
        assert 10 <= len(logged) <= 10 + elapsed + 1, (len(logged), elapsed)
        time.sleep(1.5)  # a token comes back: the next line counts what was left out
        stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    last = [l for l in access_lines(daemon.log()) if l.get("grpc_method") == "Check"][-1]
    assert int(last["unlogged"]) == calls - len(logged), last


def test_rpc_detail_is_logged_at_debug_only(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory(extra=["--log-level", "DEBUG"])
    with daemon.client() as client:
        list(client.find("study", patient_id="nobody"))
    assert "call /pacsvault.v1.ArchiveService/Find by local:loopback (roles " in daemon.log()
