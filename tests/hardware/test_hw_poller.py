"""HealthPoller with a fake command runner, clock and disk source."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Sequence

import pytest

from pacsvault.hardware import (
    BlockDevice,
    CommandResult,
    CommandStatus,
    EventKind,
    HealthPoller,
    PollerConfig,
    Transport,
    Verdict,
)

HOUR = 3600.0


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class FakeRunner:
    """Serves canned results per program; records every call."""

    def __init__(self) -> None:
        self.smartctl: dict[str, CommandResult] = {}
        self.nvme: dict[str, CommandResult] = {}
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], timeout_s: float) -> CommandResult:
        args = tuple(argv)
        self.calls.append(args)
        table = self.smartctl if args[0] == "smartctl" else self.nvme
        if args[-1] not in table:
            return CommandResult(args, CommandStatus.NOT_FOUND, error=f"{args[0]}: not installed")
        return table[args[-1]]


class FakeDisks:
    def __init__(self, disks: list[BlockDevice]) -> None:
        self.disks = disks

    def physical_disks(self) -> list[BlockDevice]:
        return list(self.disks)


SDA = BlockDevice(name="sda", node="/dev/sda", devtype="disk", major_minor="8:0", serial="SER-A",
                  size_bytes=4 * 10**12, transport=Transport.SATA)


def _json_result(doc: dict, returncode: int = 0) -> CommandResult:
    return CommandResult(("smartctl",), CommandStatus.OK, returncode=returncode, stdout=json.dumps(doc))


def _with_realloc(base: dict, count: int) -> dict:
    doc = copy.deepcopy(base)
    for row in doc["ata_smart_attributes"]["table"]:
        if row["id"] == 5:
            row["raw"] = {"value": count, "string": str(count)}
    return doc


@pytest.fixture
def healthy_ata(fixtures: Path) -> dict:
    return json.loads((fixtures / "smartctl" / "smartctl_ata_wdc_ultrastar_HC550_healthy.json").read_text())


def _poller(runner: FakeRunner, clock: FakeClock, tmp_path: Path, disks: list[BlockDevice]) -> HealthPoller:
    config = PollerConfig(mdstat_path=str(tmp_path / "no-mdstat"), sysfs_root=str(tmp_path / "no-sys"))
    return HealthPoller(runner, clock, tmp_path / "state" / "hw.json", FakeDisks(disks), config)


def test_degrading_disk_one_event_per_change_and_restart(tmp_path: Path, healthy_ata: dict) -> None:
    runner, clock = FakeRunner(), FakeClock()
    series = [0, 8, 8, 16]
    verdicts, events = [], []
    for i, count in enumerate(series):
        runner.smartctl["/dev/sda"] = _json_result(_with_realloc(healthy_ata, count))
        # A new poller instance every pass: state must survive restarts.
        result = _poller(runner, clock, tmp_path, [SDA]).run_once()
        verdicts.append(result.assessments["serial:SER-A"].verdict)
        events.append(result.events)
        clock.now += HOUR
    # 0 healthy; 8 grew -> FAILING (growth held); 8 again still FAILING; 16 FAILING.
    assert verdicts == [Verdict.HEALTHY, Verdict.FAILING, Verdict.FAILING, Verdict.FAILING]
    assert [[e.kind for e in ev] for ev in events] == [
        [EventKind.DEVICE_ADDED], [EventKind.VERDICT_CHANGED], [], []]
    change = events[1][0]
    assert (change.old_verdict, change.new_verdict) == (Verdict.HEALTHY, Verdict.FAILING)
    assert any(r.attribute == "ata.5" and r.value == "0 -> 8" for r in change.reasons)
    state = json.loads((tmp_path / "state" / "hw.json").read_text())
    assert state["format"] == "pacsvault.hardware.poller-state" and state["version"] == 1
    assert state["devices"]["serial:SER-A"]["growth"]["ata.5"]["previous"] == 8  # latest growth 8 -> 16


def test_growth_hold_expires_back_to_absolute_verdict(tmp_path: Path, healthy_ata: dict) -> None:
    runner, clock = FakeRunner(), FakeClock()
    poller = _poller(runner, clock, tmp_path, [SDA])
    for count in (0, 8):
        runner.smartctl["/dev/sda"] = _json_result(_with_realloc(healthy_ata, count))
        poller.run_once()
        clock.now += HOUR
    clock.now += 8 * 24 * HOUR  # past the 7-day hold, count unchanged
    result = poller.run_once()
    assert result.assessments["serial:SER-A"].verdict is Verdict.WARNING  # 8 reallocated: 1-15 band
    [event] = result.events
    assert (event.old_verdict, event.new_verdict) == (Verdict.FAILING, Verdict.WARNING)


def test_missing_smartctl_is_unknown_not_crash(tmp_path: Path) -> None:
    runner, clock = FakeRunner(), FakeClock()  # serves nothing: every program "not installed"
    result = _poller(runner, clock, tmp_path, [SDA]).run_once()
    assessment = result.assessments["serial:SER-A"]
    assert assessment.verdict is Verdict.UNKNOWN
    assert assessment.reasons[0].attribute == "not_found"
    assert [e.kind for e in result.events] == [EventKind.DEVICE_ADDED]


def test_timeout_and_garbage_are_unknown(tmp_path: Path) -> None:
    sdb = BlockDevice(name="sdb", node="/dev/sdb", devtype="disk", major_minor="8:16", serial="SER-B",
                      size_bytes=10**12, transport=Transport.SAS)
    runner, clock = FakeRunner(), FakeClock()
    runner.smartctl["/dev/sda"] = CommandResult(("smartctl",), CommandStatus.TIMEOUT, error="no answer within 60 s")
    runner.smartctl["/dev/sdb"] = CommandResult(("smartctl",), CommandStatus.OK, returncode=0, stdout="Segmentation fault")
    result = _poller(runner, clock, tmp_path, [SDA, sdb]).run_once()
    a, b = result.assessments["serial:SER-A"], result.assessments["serial:SER-B"]
    assert a.verdict is Verdict.UNKNOWN and a.reasons[0].attribute == "timeout"
    assert b.verdict is Verdict.UNKNOWN and "not parseable" in b.reasons[0].rule


def test_removed_device_and_virtio_unsupported(tmp_path: Path, healthy_ata: dict) -> None:
    vda = BlockDevice(name="vda", node="/dev/vda", devtype="disk", major_minor="254:0", size_bytes=10**11,
                      transport=Transport.VIRTIO)
    runner, clock = FakeRunner(), FakeClock()
    runner.smartctl["/dev/sda"] = _json_result(healthy_ata)
    disks = FakeDisks([SDA, vda])
    config = PollerConfig(mdstat_path=str(tmp_path / "none"), sysfs_root=str(tmp_path / "none"))
    poller = HealthPoller(runner, clock, tmp_path / "hw.json", disks, config)
    first = poller.run_once()
    assert first.assessments["node:/dev/vda"].verdict is Verdict.UNSUPPORTED
    assert not any(call[-1] == "/dev/vda" for call in runner.calls)  # no SMART query for virtio
    disks.disks = [vda]
    second = poller.run_once()
    assert [(e.kind, e.key) for e in second.events] == [(EventKind.DEVICE_REMOVED, "serial:SER-A")]


def test_standby_keeps_last_known_health(tmp_path: Path, healthy_ata: dict) -> None:
    runner, clock = FakeRunner(), FakeClock()
    poller = _poller(runner, clock, tmp_path, [SDA])
    runner.smartctl["/dev/sda"] = _json_result(_with_realloc(healthy_ata, 3))
    poller.run_once()
    runner.smartctl["/dev/sda"] = _json_result(
        {"smartctl": {"exit_status": 2, "messages": [{"string": "Device is in STANDBY mode, exit(2)"}]}}, 2)
    result = poller.run_once()
    assert result.assessments["serial:SER-A"].verdict is Verdict.WARNING
    assert result.events == []


def test_nvme_uses_nvmecli_when_smartctl_cannot(tmp_path: Path) -> None:
    nvme0 = BlockDevice(name="nvme0n1", node="/dev/nvme0n1", devtype="disk", major_minor="259:0",
                        serial="NV-1", size_bytes=10**12, transport=Transport.NVME)
    runner, clock = FakeRunner(), FakeClock()
    runner.smartctl["/dev/nvme0n1"] = CommandResult(("smartctl",), CommandStatus.TIMEOUT, error="hung")
    log = {"critical_warning": 0, "temperature": 310, "avail_spare": 100, "spare_thresh": 10,
           "percent_used": 5, "media_errors": 2}
    runner.nvme["/dev/nvme0n1"] = CommandResult(("nvme",), CommandStatus.OK, returncode=0, stdout=json.dumps(log))
    result = _poller(runner, clock, tmp_path, [nvme0]).run_once()
    assessment = result.assessments["serial:NV-1"]
    assert assessment.verdict is Verdict.WARNING  # media_errors from nvme-cli, not "unknown"
    assert any(r.attribute == "timeout" and r.verdict is Verdict.HEALTHY for r in assessment.reasons)
    assert ("nvme", "smart-log", "-o", "json", "/dev/nvme0n1") in runner.calls


def test_md_arrays_from_sysfs_and_mdstat(tmp_path: Path, fixtures: Path) -> None:
    runner, clock = FakeRunner(), FakeClock()
    config = PollerConfig(mdstat_path=str(fixtures / "mdstat" / "mdstat_raid5_degraded_recovery_12pct.txt"),
                          sysfs_root=str(fixtures / "mdstat" / "sysfs_md_node_exporter"))
    result = HealthPoller(runner, clock, tmp_path / "hw.json", FakeDisks([]), config).run_once()
    verdicts = {k: a.verdict for k, a in result.assessments.items()}
    assert verdicts["md:md127"] is Verdict.WARNING  # only in mdstat
    assert verdicts["md:md5"] is Verdict.FAILING  # sysfs: raid5 degraded, nothing rebuilding
    assert verdicts["md:md6"] is Verdict.WARNING
    assert len(result.events) == len(result.assessments)  # all "added" on first pass


def test_corrupt_state_is_quarantined(tmp_path: Path, healthy_ata: dict) -> None:
    state = tmp_path / "state" / "hw.json"
    state.parent.mkdir()
    state.write_text("{not json")
    runner, clock = FakeRunner(), FakeClock()
    runner.smartctl["/dev/sda"] = _json_result(healthy_ata)
    result = _poller(runner, clock, tmp_path, [SDA]).run_once()
    assert [e.kind for e in result.events] == [EventKind.DEVICE_ADDED]
    assert (tmp_path / "state" / "hw.json.corrupt-JSONDecodeError").read_text() == "{not json"
    assert json.loads(state.read_text())["devices"]["serial:SER-A"]["assessment"]["verdict"] == "healthy"
