"""Every security event is an alert three ways (issue 16): a DICOM Security Alert (110113, valid against
the standard's schema), a WatchHealth event and a count in /metrics. Raised in the serving processes,
published by the back office: the audit trail carries them between the two. A real daemon with two
workers; the events are made the way a caller would make them."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from pacsvault.client import PacsvaultClient
from pacsvault.daemon.audit import atna
from pacsvault.daemon.audit.codec import SealedCodec
from pacsvault.daemon.audit.trail import read_records
from pacsvault.daemon.config import Config
from pacsvault.daemon.crypto.appliance_keys import open_keys
from pacsvault.v1 import appliance_pb2
from tests.atna_support import validate
from tests.conftest import Daemon, dicom_bytes, identity, run_cli

ROBOT = "spiffe://pacsvault/client/robot"
# The kind of each alert, and the EventTypeCode its 110113 message carries (PS3.16 CID 403, or ours).
EXPECTED = {
    "AuthenticationRefused": "110143",   # Authentication Decision
    "PermissionRefused": "110144",       # Authorization Decision
    "PinLockout": "110137",              # User Security Attributes Changed
    "BreakGlassStarted": "110127",       # Emergency Override Started
    "CredentialRevoked": "110137",
    "AuditChainBroken": "PV-AUDIT-CHAIN",
    "BlobAuthenticationFailed": "PV-AT-REST-AUTH",
}


def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def records(daemon: Daemon) -> list[dict]:
    keys = open_keys(Config(data_dir=str(daemon.data_dir)))
    assert keys is not None
    return list(read_records(daemon.data_dir / "audit" / "trail.jsonl", SealedCodec(keys.audit_store)))


def metrics(daemon: Daemon) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    prefix = 'pacsvault_security_alerts_total{kind="'
    return {line[len(prefix):].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(prefix)}


class Watcher:
    """A WatchHealth stream read in the background, as a monitoring system keeps one open."""

    def __init__(self, daemon: Daemon) -> None:
        self.client = daemon.client()
        self.stream = self.client.watch_health(timeout=120)
        self.events: list[appliance_pb2.HealthEvent] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for message in self.stream:
                if message.WhichOneof("payload") == "event":
                    self.events.append(message.event)
        except grpc.RpcError:
            pass

    def alerts(self) -> dict[str, str]:
        return {e.subject: e.message for e in self.events
                if appliance_pb2.HealthEventKind.Name(e.kind) == "HEALTH_EVENT_KIND_SECURITY_ALERT"}

    def close(self) -> None:
        self.stream.cancel()
        self.client.close()


@pytest.fixture
def appliance(daemon_factory, tmp_path: Path) -> Daemon:  # type: ignore[no-untyped-def]
    (tmp_path / "pv.toml").write_text(
        f'[security]\nbreak_glass_principals = ["local:loopback"]\n'
        f'principals = [{{ identity = "{ROBOT}", roles = ["reader"] }}]\n')
    daemon = daemon_factory(config=tmp_path / "pv.toml")
    with daemon.client() as client:
        for n in range(3):
            assert client.store(dicom_bytes(PatientID="ALERT-1", **identity(n))).ok
    # An intruder changes a record of the trail while the appliance is down.
    daemon.stop()
    path = daemon.data_dir / "audit" / "trail.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    line = json.loads(lines[1])
    middle = len(line["sealed"]) // 2
    line["sealed"] = line["sealed"][:middle] + ("A" if line["sealed"][middle] != "A" else "B") + \
        line["sealed"][middle + 1:]
    lines[1] = json.dumps(line, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    # ... and flips a bit of a stored blob.
    blob = sorted(p for p in daemon.data_dir.glob("tiers/*/blobs/**/*") if p.is_file())[0]
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 0x20
    blob.write_bytes(bytes(raw))
    return daemon.start()


def test_every_security_event_is_an_atna_alert_a_health_event_and_a_metric(appliance: Daemon) -> None:
    watcher = Watcher(appliance)
    time.sleep(0.5)  # the watch is open before anything happens
    study = identity(0)["StudyInstanceUID"]
    with appliance.client() as local:
        share = local.create_share(study_instance_uid=study, pin="2468").token
        token = local.create_token(ROBOT, ttl_seconds=600)
        with PacsvaultClient(appliance.target, token="pv_not-a-token") as stranger:
            assert code_of(lambda: list(stranger.find("study"))) == grpc.StatusCode.UNAUTHENTICATED
        with PacsvaultClient(appliance.target, token=share, pin="2468") as holder:
            assert holder.store(dicom_bytes(**identity(9))).code == "PERMISSION_DENIED"
        with PacsvaultClient(appliance.target, token=share, pin="0000") as guesser:
            for _ in range(5):
                assert code_of(lambda: list(guesser.find("study"))) == grpc.StatusCode.UNAUTHENTICATED
        local.break_glass("patient crashing in resus, records needed now", 5)
        local.revoke_token(token.info.token_id)
        local.revoke_certificate(identity="spiffe://pacsvault/client/lost-laptop", reason="laptop lost")
        assert run_cli(appliance.target, "audit", "verify").returncode == 1
        sops = [identity(n)["SOPInstanceUID"] for n in range(3)]
        assert [code_of(lambda uid=uid: local.get_instance(uid)) for uid in sops].count(
            grpc.StatusCode.DATA_LOSS) == 1

    deadline = time.monotonic() + 20
    while set(EXPECTED) - set(watcher.alerts()) and time.monotonic() < deadline:
        time.sleep(0.2)
    seen = watcher.alerts()
    watcher.close()
    assert set(EXPECTED) <= set(seen), seen
    assert "stranger" not in json.dumps(seen) and "resus" not in json.dumps(seen), "no typed reason in health events"
    counted = metrics(appliance)
    assert all(counted.get(kind, 0) >= 1 for kind in EXPECTED), counted

    messages: dict[str, list] = {}
    for record in records(appliance):
        for xml in atna.to_audit_messages(record, "site-a"):
            root = validate(xml)
            ident = root.find("EventIdentification")
            if ident.find("EventID").get("csd-code") == "110113" and ident.find("EventTypeCode") is not None:
                messages.setdefault(ident.find("EventTypeCode").get("csd-code"), []).append(root)
    assert set(EXPECTED.values()) <= set(messages), sorted(messages)


def test_a_find_record_keeps_its_query_keys_and_atna_carries_them(daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.store(dicom_bytes(PatientID="Q-1", PatientName="Doe^Jane", **identity(1))).ok
        assert list(client.find("study", patient_name="doe^j*", modality="CT", study_date="20000101-20301231"))
    time.sleep(0.3)  # the outcome record is written after the answer
    find = [r for r in records(daemon) if r.get("action") == "Find" and r.get("phase") == "end"][-1]
    assert find["query"] == {"patient_name": "doe^j*", "modality": "CT",
                             "study_date": {"start": "20000101", "end": "20301231"}}, find
    root = validate(atna.to_audit_messages(find, "site-a")[0])
    query = root.find("ParticipantObjectIdentification/ParticipantObjectQuery")
    assert json.loads(base64.b64decode(query.text))["query"]["patient_name"] == "doe^j*"
    assert "Doe" not in daemon.log() and "doe^j" not in daemon.log(), "query keys stay out of the log"
