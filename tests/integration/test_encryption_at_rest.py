"""Encryption at rest through real daemons: the canary scan, tampering, rotation and the keyring's guards."""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import pydicom
import pytest

from pacsvault.daemon.crypto.keyring import Keyring, write_file
from pacsvault.daemon.storage import blob_format
from tests.conftest import Daemon, dicom_bytes, identity, run_cli
from tests.integration.test_audit import audit_records
from tests.integration.test_replication_pair import Pair, pair, wait_drained  # noqa: F401

_SCAN_LIMIT = 512 * 1024 * 1024


def canary(n: int) -> tuple[bytes, list[bytes]]:
    """A real CT whose name, ID, accession and pixel data carry unique markers; and the markers."""
    tag = uuid.uuid4().hex[:12].upper()
    name, patient_id, accession = f"CANARY^N{tag}", f"CPID{tag}", f"CACC{tag}"
    pixels = f"PIXELMARK{tag}".encode()
    data = bytearray(dicom_bytes(PatientName=name, PatientID=patient_id, AccessionNumber=accession,
                                 StudyDescription=f"CDESC{tag}", **identity(n, "1.2.826.0.1.3680043.10.88")))
    # Overwrite the start of the pixel data with the marker: the bytes a scanner must never find.
    dataset = pydicom.dcmread(pydicom.filebase.DicomBytesIO(bytes(data)))
    at = bytes(data).rindex(dataset.PixelData[:64])
    data[at : at + len(pixels)] = pixels
    markers = [name.encode(), f"N{tag}".encode(), patient_id.encode(), accession.encode(), f"CDESC{tag}".encode(),
               pixels]
    return bytes(data), markers


def files_under(*roots: Path, since: float | None = None) -> list[Path]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            try:
                if path.is_file() and not path.is_symlink() and (since is None or path.stat().st_mtime >= since):
                    found.append(path)
            except OSError:
                continue
    return found


def hits(paths: list[Path], markers: list[bytes]) -> list[str]:
    out = []
    for path in paths:
        try:
            if path.stat().st_size > _SCAN_LIMIT:
                continue
            raw = path.read_bytes()
        except OSError:
            continue
        out.extend(f"{path}: {m.decode()}" for m in markers if m in raw or m.lower() in raw.lower())
    return out


def test_canary_no_marker_on_any_disk_of_either_appliance(pair: Pair, tmp_path: Path) -> None:  # noqa: F811
    started = time.time()
    data, markers = canary(1)
    with pair.a.client() as client:
        assert client.store(data).status == "stored"
        assert client.get_instance(identity(1, "1.2.826.0.1.3680043.10.88")["SOPInstanceUID"]) == data
        assert len(list(client.patient_studies(markers[2].decode()))) == 1
    wait_drained(pair.a)
    # The scanner itself finds what it looks for.
    probe = tmp_path / "probe.bin"
    probe.write_bytes(b"xx" + markers[-1] + b"yy")
    assert hits([probe], markers) == [f"{probe}: {markers[-1].decode()}"]
    probe.unlink()
    for daemon in (pair.a, pair.b):
        daemon.stop()  # flushed: LMDB, the trail, the logs
    scanned = files_under(pair.a.data_dir, pair.b.data_dir) + [pair.a.log_path, pair.b.log_path] + \
        files_under(Path(tempfile.gettempdir()), since=started - 1)
    assert len(scanned) > 20  # volumes, shards, LMDB, trail, logs
    assert any(p.parent.name == "index" for p in scanned) and any("replica" in p.parts for p in scanned)
    assert hits(scanned, markers) == []


def blob_file(daemon: Daemon) -> Path:
    [path] = [p for p in daemon.data_dir.glob("tiers/*/blobs/**/*") if p.is_file()]
    return path


def test_a_flipped_bit_is_data_loss_and_a_security_alert(daemon: Daemon) -> None:
    data, _ = canary(2)
    uid = identity(2, "1.2.826.0.1.3680043.10.88")
    with daemon.client() as client:
        assert client.store(data).ok
    path = blob_file(daemon)
    raw = bytearray(path.read_bytes())
    header, _ = blob_format.decode(bytes(raw), str(path))
    assert header.sealed
    raw[header.frame_offsets()[0] + 17] ^= 0x04
    path.write_bytes(bytes(raw))
    with daemon.client() as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.get_instance(uid["SOPInstanceUID"])
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert "fails authentication" in caught.value.details()
    time.sleep(0.2)
    alerts = [r for r in audit_records(daemon) if r.get("action") == "SecurityAlert"]
    assert alerts and alerts[0]["sop_instance_uid"] == uid["SOPInstanceUID"]
    assert "SECURITY ALERT" in daemon.log()


def test_a_flipped_bit_is_repaired_from_the_sealed_peer_copy(pair: Pair) -> None:  # noqa: F811
    data, _ = canary(3)
    uid = identity(3, "1.2.826.0.1.3680043.10.88")["SOPInstanceUID"]
    with pair.a.client() as client:
        assert client.store(data).ok
    wait_drained(pair.a)
    path = blob_file(pair.a)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pair.a.client() as client:
        assert client.get_instance(uid) == data
    assert [r for r in audit_records(pair.a) if r.get("action") == "SecurityAlert"]


def test_rotation_rewraps_online_and_survives_a_restart(daemon: Daemon) -> None:
    stored = {}
    with daemon.client() as client:
        for n in range(10, 16):
            data, _ = canary(n)
            assert client.store(data).ok
            stored[identity(n, "1.2.826.0.1.3680043.10.88")["SOPInstanceUID"]] = data
    rotated = run_cli(daemon.target, "keys", "rotate")
    assert rotated.returncode == 0 and "version 2 is active" in rotated.stdout, rotated.stderr
    deadline = time.monotonic() + 30
    while (status := json.loads(run_cli(daemon.target, "keys", "status", "--json").stdout))["rewrap_state"] \
            != "complete":
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert (status["versions"], status["active_version"], status["rewrapped_to_version"]) == ([1, 2], 2, 2)
    assert status["blobs_rewrapped"] == len(stored) and status["blobs_failed"] == 0
    keyring = daemon.data_dir.parent / f"{daemon.data_dir.name}-keys" / "keyring.json"
    assert set(json.loads(keyring.read_text())["keks"]) == {"1", "2"}
    daemon.stop()
    daemon.start()
    with daemon.client() as client:
        for uid, data in stored.items():
            assert client.get_instance(uid) == data
    recorded = [r for r in audit_records(daemon) if r.get("action") == "RotateKeys"]
    assert recorded, "a key change is an audited security event"


def test_the_keyring_is_guarded(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = daemon_factory("guarded")
    with first.client() as client:
        assert client.store(canary(20)[0]).ok
    first.stop()
    keyring = tmp_path / "guarded-keys" / "keyring.json"
    assert keyring.stat().st_mode & 0o777 == 0o600
    assert not list(first.data_dir.rglob("keyring*")), "no key material on the data disks"

    os.chmod(keyring, 0o644)
    with pytest.raises(RuntimeError, match="readable by others"):
        first.start()
    os.chmod(keyring, 0o600)

    original = keyring.read_bytes()
    write_file(keyring, Keyring.generate())  # someone else's keyring
    with pytest.raises(RuntimeError, match="not the one this data dir was sealed with"):
        first.start()
    keyring.write_bytes(original)

    config = tmp_path / "off.toml"
    config.write_text("[encryption]\nenabled = false\n[security]\ninsecure_no_encryption = true\n")
    changed = daemon_factory("guarded", config=config, start=False)
    with pytest.raises(RuntimeError, match="this data dir was created with it on"):
        changed.start()
    first.start()
    assert run_cli(first.target, "keys", "status").returncode == 0


def test_encryption_off_is_said_plainly(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "off.toml"
    config.write_text("[encryption]\nenabled = false\n[security]\ninsecure_no_encryption = true\n")
    plain = daemon_factory("plain", config=config)
    assert "OFF" in run_cli(plain.target, "keys", "status").stdout
    refused = run_cli(plain.target, "keys", "rotate")
    assert refused.returncode != 0 and "FAILED_PRECONDITION" in refused.stderr
    assert not (tmp_path / "plain-keys").exists()


def test_a_keyring_from_the_kms_hook_never_touches_a_disk_of_ours(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kms = tmp_path / "kms"
    kms.mkdir()
    write_file(kms / "appliance.json", Keyring.generate())  # stands in for the hospital KMS
    config = tmp_path / "kms.toml"
    config.write_text(f'[encryption]\nkey_command = "cat {kms / "appliance.json"}"\n')
    appliance = daemon_factory("kms-backed", config=config)
    data, markers = canary(30)
    uid = identity(30, "1.2.826.0.1.3680043.10.88")["SOPInstanceUID"]
    with appliance.client() as client:
        assert client.store(data).ok
    appliance.stop()
    appliance.start()
    with appliance.client() as client:
        assert client.get_instance(uid) == data
    assert not (tmp_path / "kms-backed-keys").exists()
    status = json.loads(run_cli(appliance.target, "keys", "status", "--json").stdout)
    assert status["keyring_source"] == "encryption.key_command"
    refused = run_cli(appliance.target, "keys", "rotate")
    assert refused.returncode != 0 and "rotate it in the KMS" in refused.stderr
    assert hits(files_under(appliance.data_dir), markers) == []


def test_with_encryption_off_retrieved_bytes_still_carry_their_digest(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "off.toml"
    config.write_text("[encryption]\nenabled = false\n[security]\ninsecure_no_encryption = true\n")
    plain = daemon_factory("plain-digest", config=config)
    data, _ = canary(40)
    with plain.client() as client:
        assert client.store(data).ok
        # The client checks the digest sent with the bytes; a wrong or missing one raises.
        assert client.get_instance(identity(40, "1.2.826.0.1.3680043.10.88")["SOPInstanceUID"]) == data
