"""Health reflects the failures it missed (issue 15, defect 7): a read that answered DATA_LOSS,
a volume out of inodes, and a volume that came back after a failure is taken into use again."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from tests.conftest import Daemon, dicom_bytes, identity, run_cli, unmount

pytestmark = pytest.mark.slow
ROOT = "1.2.826.0.1.3680043.10.155"
CRITICAL = 3


def one_tier(path: Path, volume: Path, capacity: Path | None = None) -> Path:
    tiers = f'[[tiers]]\nname = "hot"\nvolumes = ["{volume}"]\nreserve_bytes = 0\nhigh_watermark = 0.99\n'
    if capacity is not None:
        tiers += f'[[tiers]]\nname = "capacity"\nvolumes = ["{capacity}"]\nreserve_bytes = 0\n'
    path.write_text("[health]\ncapacity_interval_s = 0.5\n[tiering]\nmover_interval_s = 0.5\n" + tiers)
    return path


def test_a_read_that_answers_data_loss_makes_health_critical_naming_it(daemon: Daemon) -> None:
    data = dicom_bytes(PatientID="HEALTH-1", **identity(1, ROOT))
    with daemon.client() as client:
        assert client.store(data).ok
        assert client.health().state != CRITICAL
    blob = next(p for p in daemon.data_dir.glob("tiers/*/blobs/**/*") if p.is_file())
    raw = bytearray(blob.read_bytes())
    raw[-100] ^= 0x01
    blob.write_bytes(bytes(raw))
    with daemon.client() as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.get_instance(f"{ROOT}.1.1.1")
        assert caught.value.code() == grpc.StatusCode.DATA_LOSS
        health = client.health()
    assert health.state == CRITICAL, health.reasons
    assert any(f"{ROOT}.1.1.1" in r and f"{ROOT}.1" in r and "could not be repaired" in r for r in health.reasons)


def test_a_volume_out_of_inodes_is_a_full_volume_to_health(daemon_factory, tmpfs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    volume = tmpfs("few-inodes", "64m")
    subprocess.run(["mount", "-o", "remount,nr_inodes=96", str(volume)], check=True)
    daemon = daemon_factory(config=one_tier(tmp_path / "pv.toml", volume))
    refused = None
    with daemon.client(timeout=30) as client:
        for n in range(200):
            result = client.store(dicom_bytes(PatientID="INODES", **identity(100 + n, ROOT)))
            if not result.ok:
                refused = result
                break
        assert refused is not None, "96 inodes never ran out"
        assert refused.code == "RESOURCE_EXHAUSTED", refused
        deadline = time.monotonic() + 10
        while not any("inodes" in r for r in client.health().reasons):
            assert time.monotonic() < deadline, list(client.health().reasons)
            time.sleep(0.2)
        health = client.health()
    assert health.state == CRITICAL and any("no volume can take new data" in r for r in health.reasons)


def test_a_volume_that_returns_is_taken_into_use_again(daemon_factory, tmpfs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    backing = tmpfs("backing", "64m")
    (backing / "hot").mkdir()
    point = tmp_path / "hot"
    point.mkdir()
    subprocess.run(["mount", "--bind", str(backing / "hot"), str(point)], check=True)
    try:
        _return_after_failure(daemon_factory, tmp_path, backing, point)
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)


def _return_after_failure(daemon_factory, tmp_path: Path, backing: Path, point: Path) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory(config=one_tier(tmp_path / "pv.toml", point, tmp_path / "capacity"))
    first = dicom_bytes(PatientID="RETURN", **identity(200, ROOT))
    with daemon.client(timeout=30) as client:
        assert client.store(first).ok
        assert _volume(daemon, point)["state"] == "active"
        unmount(point)  # the disk goes away: its mount point is an empty directory again
        _wait(lambda: _volume(daemon, point)["state"] == "failed")
        second = dicom_bytes(PatientID="RETURN", **identity(201, ROOT))
        assert client.store(second).ok  # on the capacity tier meanwhile
        with pytest.raises(grpc.RpcError) as caught:
            client.get_instance(f"{ROOT}.200.1.1")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        subprocess.run(["mount", "--bind", str(backing / "hot"), str(point)], check=True)  # and comes back
        _wait(lambda: _volume(daemon, point)["state"] == "active")
        assert client.get_instance(f"{ROOT}.200.1.1") == first
        third = dicom_bytes(PatientID="RETURN", **identity(202, ROOT))
        assert client.store(third).ok
        tiers = {m.instance.sop_instance_uid: m.instance.tier for m in client.find("instance", patient_id="RETURN")}
    assert tiers[f"{ROOT}.202.1.1"] == "hot", "new data lands on the returned volume again"


def _volume(daemon: Daemon, path: Path) -> dict:
    result = run_cli(daemon.target, "tiers", "--json")
    assert result.returncode == 0, result.stderr
    return next(v for v in map(json.loads, result.stdout.splitlines()) if v["path"] == str(path))


def _wait(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
