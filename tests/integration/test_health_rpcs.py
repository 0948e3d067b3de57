"""Health against the real machine and real daemons: GetApplianceHealth, WatchHealth,
grpc.health.v1 through the standard client, the Prometheus endpoint, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from pacsvault.hardware import Discovery, Transport
from pacsvault.v1 import appliance_pb2
from tests.conftest import Daemon, dicom_bytes, identity, run_cli

ARCHIVE = "pacsvault.v1.ArchiveService"
APPLIANCE = "pacsvault.v1.ApplianceService"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hwdata"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts small tmpfs volumes (tests run as root, as CI does); unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        path = tmp_path / f"tmpfs-{len(mounted)}"
        path.mkdir()
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True,
                           capture_output=True)
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            pytest.fail(f"this test needs root to mount a small tmpfs: {exc}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def one_tier_config(tmp_path: Path, volume: Path, reserve: int, health: str) -> Path:
    config = tmp_path / "pacsvault.toml"
    config.write_text(f"[health]\n{health}\n\n[[tiers]]\nname = \"hot\"\nvolumes = [\"{volume}\"]\n"
                      f"high_watermark = 1.0\nlow_watermark = 0.9\nreserve_bytes = {reserve}\n")
    return config


def serving(target: str, service: str = "") -> str:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def polled_health(daemon: Daemon, timeout: float = 30.0) -> appliance_pb2.GetApplianceHealthResponse:
    """GetApplianceHealth once the first disk poll has finished."""
    deadline = time.monotonic() + timeout
    with daemon.client() as client:
        while True:
            report = client.health()
            if report.HasField("polled_at") or time.monotonic() > deadline:
                return report
            time.sleep(0.1)


def scrape(daemon: Daemon) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_health_reports_this_machine_and_standard_health_serves(daemon: Daemon) -> None:
    report = polled_health(daemon)
    assert report.HasField("polled_at"), "the first disk poll did not finish"
    disks = {d.node: d for d in Discovery().physical_disks()}
    assert {d.node for d in report.devices} == set(disks)
    for device in report.devices:
        found = disks[device.node]
        assert device.size_bytes == found.size_bytes and device.transport == found.transport.value
        assert device.verdict != appliance_pb2.VERDICT_UNSPECIFIED and device.reasons
        if found.transport is Transport.VIRTIO:
            # No SMART on virtio: a state, not a failure.
            assert device.verdict == appliance_pb2.VERDICT_UNSUPPORTED and not device.smart_supported
    assert {t.name for t in report.tiers} == {"hot", "capacity"}
    for volume in report.volumes:
        assert volume.verdict == appliance_pb2.VERDICT_HEALTHY and volume.accepts_writes
        assert volume.filesystem and volume.mountpoint and volume.volume_id
        assert set(volume.devices) <= {d.name for d in report.devices}
    assert report.state == appliance_pb2.HEALTH_STATE_HEALTHY, list(report.reasons)
    for service in ("", ARCHIVE, APPLIANCE):
        assert serving(daemon.target, service) == "SERVING", service


@pytest.mark.slow
def test_not_serving_while_no_volume_can_take_writes(daemon_factory, tmp_path: Path, tmpfs) -> None:  # type: ignore[no-untyped-def]
    volume = tmpfs("2m")
    # The reserve is larger than the whole filesystem: the only volume can never take data.
    config = one_tier_config(tmp_path, volume, 4 * 1024 * 1024, "capacity_interval_s = 0.2")
    daemon = daemon_factory(config=config)
    assert serving(daemon.target) == "NOT_SERVING"  # right from the start, not after a check
    assert serving(daemon.target, ARCHIVE) == "NOT_SERVING"
    assert serving(daemon.target, APPLIANCE) == "SERVING"  # health and reads keep answering
    with daemon.client() as client:
        report = client.health()
        assert report.state == appliance_pb2.HEALTH_STATE_CRITICAL
        assert not report.tiers[0].accepts_writes
        assert client.store(dicom_bytes(**identity(1))).code == "RESOURCE_EXHAUSTED"
    with grpc.insecure_channel(daemon.target) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        subprocess.run(["mount", "-o", "remount,size=16m", str(volume)], check=True)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
    assert serving(daemon.target, ARCHIVE) == "SERVING"
    with daemon.client() as client:
        assert client.store(dicom_bytes(**identity(2))).status == "stored"


@pytest.mark.slow
def test_watch_health_sends_current_state_then_events(daemon_factory, tmp_path: Path, tmpfs) -> None:  # type: ignore[no-untyped-def]
    volume = tmpfs("2m")
    config = one_tier_config(tmp_path, volume, 0, "capacity_interval_s = 0.2\ncapacity_warning_percent = 50.0")
    daemon = daemon_factory(config=config)
    with daemon.client() as client:
        stream = client.watch_health(timeout=60)
        first = next(stream)
        assert first.WhichOneof("payload") == "snapshot"
        [state] = [v for v in first.snapshot.volumes if v.path == str(volume)]
        assert state.filesystem == "tmpfs" and state.verdict == appliance_pb2.VERDICT_HEALTHY
        (volume / "filler").write_bytes(b"\0" * (1400 * 1024))  # past 50% of 2 MiB
        kinds = []
        for message in stream:
            event = message.event
            kinds.append(event.kind)
            if event.kind == appliance_pb2.HEALTH_EVENT_KIND_CAPACITY_THRESHOLD:
                break
        assert event.subject == str(volume) and event.new_verdict == appliance_pb2.VERDICT_WARNING
        assert event.sequence >= 1 and "50%" in event.message
        assert any(r.source == "capacity" for r in event.reasons)
        stream.cancel()
        assert client.health().state == appliance_pb2.HEALTH_STATE_WARNING
        # The deadline is honoured: a quiet stream ends when the caller's time is up.
        started = time.monotonic()
        quiet = client.watch_health(timeout=1.0)
        next(quiet)  # the snapshot
        with pytest.raises(grpc.RpcError) as ended:
            next(quiet)
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - started < 10
    # Cancelled and expired watchers are gone on the daemon side too.
    deadline = time.monotonic() + 10
    while next(iter(scrape(daemon)["pacsvault_health_watchers"].samples)).value != 0:
        assert time.monotonic() < deadline, "watchers were not released"
        time.sleep(0.1)


def test_metrics_endpoint_has_the_expected_families(daemon: Daemon) -> None:
    polled_health(daemon)
    with daemon.client() as client:
        client.health()
        with pytest.raises(grpc.RpcError):
            client.get_instance("1.2.3.4.5")  # NOT_FOUND, counted by code
    families = scrape(daemon)
    for name in ("pacsvault_device_health", "pacsvault_disk_smart_value", "pacsvault_disk_reallocated_sectors",
                 "pacsvault_disk_pending_sectors", "pacsvault_disk_media_errors", "pacsvault_md_array_health",
                 "pacsvault_volume_capacity_bytes", "pacsvault_volume_used_bytes", "pacsvault_volume_accepts_writes",
                 "pacsvault_appliance_accepts_writes", "pacsvault_health_events", "grpc_server_handled",
                 "grpc_server_handling_seconds", "process_resident_memory_bytes"):
        assert name in families, name
    requests = {(s.labels["grpc_service"], s.labels["grpc_method"], s.labels["grpc_code"]): s.value
                for s in families["grpc_server_handled"].samples if s.name.endswith("_total")}
    assert requests[("pacsvault.v1.ApplianceService", "GetApplianceHealth", "OK")] >= 2
    assert requests[("pacsvault.v1.ArchiveService", "ReadInstance", "NOT_FOUND")] == 1  # get_instance's call
    buckets = [s for s in families["grpc_server_handling_seconds"].samples if s.name.endswith("_bucket")]
    assert buckets
    used = {s.labels["tier"]: s.value for s in families["pacsvault_volume_used_bytes"].samples}
    assert set(used) == {"hot", "capacity"} and all(v > 0 for v in used.values())
    verdicts = [s for s in families["pacsvault_device_health"].samples if s.value == 1]
    assert len(verdicts) == len(Discovery().physical_disks())


def test_metrics_listener_refuses_non_loopback(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pacsvault.daemon", "--listen", "127.0.0.1:0", "--metrics-listen",
                             "0.0.0.0:0", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "metrics.listen" in result.stderr and "loopback" in result.stderr


def test_health_cli_table_and_json(daemon: Daemon) -> None:
    polled_health(daemon)
    body = json.loads(run_cli(daemon.target, "health", "--json", check=True).stdout)
    assert {"state", "serving", "volumes", "index", "devices", "tiers", "polled_at"} <= set(body)
    assert body["state"] == "healthy" and body["serving"] == "SERVING"
    assert all(d["verdict"] in ("healthy", "unsupported", "warning", "unknown") for d in body["devices"])
    assert {v["verdict"] for v in body["volumes"]} == {"healthy"}
    text = run_cli(daemon.target, "health").stdout
    lines = text.splitlines()
    assert lines[0].startswith("state: HEALTHY")
    assert "disks:" in lines and "volumes:" in lines and "tiers:" in lines


def test_health_watch_cli_prints_the_state_then_ends_on_ctrl_c(daemon: Daemon) -> None:
    env = dict(os.environ, PACSVAULT_SERVER=daemon.target)
    proc = subprocess.Popen([sys.executable, "-m", "pacsvault.client.cli.main", "health", "--watch", "--json"],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        first = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert first["snapshot"]["state"] in ("healthy", "warning") and first["dropped_events"] == 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_hw_assess_json_gives_the_verdicts_of_the_captures(tmp_path: Path) -> None:
    expected = {
        FIXTURES / "smartctl" / "smartctl_ata_wdc_ultrastar_HC550_healthy.json": ("ata", "healthy"),
        FIXTURES / "smartctl" / "smartctl_ata_seagate_ST3500418AS_realloc304_passed.json": ("ata", "failing"),
        FIXTURES / "smartctl" / "smartctl_ata_hitachi_HDS721050DLE630_FAILED_realloc1975_pending8_usbjmicron.json":
            ("ata", "failed"),
        FIXTURES / "smartctl" / "smartctl_nvme_samsung_970evo_media_errors7.json": ("nvme", "warning"),
        FIXTURES / "smartctl" / "smartctl_scsi_intel_raid1_volume_no_smart.json": ("scsi", "unsupported"),
        FIXTURES / "mdstat" / "mdstat_raid5_degraded_recovery_12pct.txt": ("md_array", "warning"),
        FIXTURES / "mdstat" / "mdstat_raid10_check_94pct_plus_raid1_telegraf.txt": ("md_array", "healthy"),
        FIXTURES / "mdadm" / "mdadm_detail_raid10_clean_6disk_ohai.txt": ("md_array", "healthy"),
    }
    nvme_log = tmp_path / "nvme0-smart-log.json"
    nvme_log.write_text(json.dumps({"critical_warning": 0, "temperature": 310, "avail_spare": 100,
                                    "spare_thresh": 10, "percent_used": 3, "media_errors": 0}))
    expected[nvme_log] = ("nvme", "healthy")
    garbage = tmp_path / "notes.txt"
    garbage.write_text("the disk in bay 3 clicks\n")
    expected[garbage] = ("unknown", "unknown")
    result = run_cli("127.0.0.1:1", "hw", "assess", "--json", *map(str, expected))
    assert result.returncode == 1, result.stderr  # not everything is healthy
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(p) for p in expected]
    for row in rows:
        assert {"file", "kind", "device", "verdict", "reasons"} <= set(row)
        assert (row["kind"], row["verdict"]) == expected[Path(row["file"])], row["file"]
    failing = rows[1]
    assert any(r["attribute"].startswith("5 ") and r["value"] == "304" for r in failing["reasons"])
    healthy = run_cli("127.0.0.1:1", "hw", "assess", str(FIXTURES / "smartctl" /
                                                          "smartctl_ata_wdc_ultrastar_HC550_healthy.json"))
    assert healthy.returncode == 0 and "HEALTHY" in healthy.stdout


def test_standard_health_list_names_every_service_and_logs_no_error(daemon: Daemon) -> None:
    """grpc.health.v1 List (a 2024 addition the library servicer leaves unimplemented) answers, quietly."""
    with grpc.insecure_channel(daemon.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        listed = stub.List(health_pb2.HealthListRequest(), timeout=10)
        checked = {name: stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
                   for name in listed.statuses}
    statuses = {name: reply.status for name, reply in listed.statuses.items()}
    assert {"", ARCHIVE, APPLIANCE} <= set(statuses), statuses
    assert statuses == checked, "List and Check disagree"
    assert statuses[""] == health_pb2.HealthCheckResponse.SERVING
    log = daemon.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
