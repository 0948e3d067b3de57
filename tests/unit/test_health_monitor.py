"""The daemon's health monitor, driven directly: fake runner, clock, disks and volumes.

No gRPC here, and threads in one test only (start-up): each other test
calls ``poll_disks()`` / ``check_capacity()`` the way the monitor's threads do.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pytest

from pacsvault.daemon.config import Config
from pacsvault.daemon.health import EventKind, HealthMonitor, Settings
from pacsvault.daemon.health.capacity import Usage
from pacsvault.daemon.health.placement import Beneath
from pacsvault.daemon.health.volumes import ProgramTimeouts, RecordingDisks
from pacsvault.hardware import (
    BlockDevice,
    CommandResult,
    CommandStatus,
    HealthPoller,
    PollerConfig,
    Transport,
    Verdict,
)
from tests.conftest import dicom_bytes, identity

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hwdata"
HEALTHY_ATA = json.loads((FIXTURES / "smartctl" / "smartctl_ata_wdc_ultrastar_HC550_healthy.json").read_text())


def disk(name: str, serial: str) -> BlockDevice:
    return BlockDevice(name=name, node=f"/dev/{name}", devtype="disk", major_minor="8:0", serial=serial,
                       size_bytes=4 * 10**12, transport=Transport.SATA, model="WDC TEST", rotational=True)


def ata(**raw: int) -> dict:
    """The healthy HC550 capture with some raw values replaced, e.g. ata(**{"197": 8})."""
    doc = copy.deepcopy(HEALTHY_ATA)
    for row in doc["ata_smart_attributes"]["table"]:
        if str(row["id"]) in raw:
            value = raw[str(row["id"])]
            row["raw"] = {"value": value, "string": str(value)}
    return doc


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeRunner:
    """smartctl answers by device node; anything else is 'not installed'."""

    def __init__(self) -> None:
        self.docs: dict[str, dict] = {}
        self.timeouts: list[float] = []

    def __call__(self, argv: Sequence[str], timeout_s: float) -> CommandResult:
        self.timeouts.append(timeout_s)
        if argv[0] == "smartctl" and argv[-1] in self.docs:
            return CommandResult(tuple(argv), CommandStatus.OK, 0, json.dumps(self.docs[argv[-1]]))
        return CommandResult(tuple(argv), CommandStatus.NOT_FOUND, error=f"{argv[0]}: not installed")


class FakeDisks:
    def __init__(self, disks: list[BlockDevice]) -> None:
        self.disks = disks

    def physical_disks(self) -> list[BlockDevice]:
        return list(self.disks)


class FakeMapper:
    def __init__(self, mapping: dict[str, Beneath]) -> None:
        self.mapping = mapping

    def beneath(self, paths: Sequence[str]) -> dict[str, Beneath]:
        return {p: self.mapping.get(p, Beneath(note="tmpfs")) for p in paths}


@dataclass
class FakeVolume:
    tier: str
    path: str
    volume_id: str = "v"
    failed: str = ""
    full: bool = False

    def accepts(self, size: int) -> bool:
        return not self.failed and not self.full

    def fail(self, reason: str) -> None:
        self.failed = reason

    def recover(self, reason: str | None = None) -> None:
        if reason is None or self.failed == reason:
            self.failed = ""


@dataclass
class Rig:
    """A monitor with every outside piece faked, and handles on the fakes."""

    tmp: Path
    volumes: list
    mapping: dict[str, Beneath]
    disks: list[BlockDevice]
    usage: dict[str, Usage] = field(default_factory=dict)
    mdstat: str = ""
    settings: Settings = field(default_factory=Settings)
    runner: FakeRunner = field(default_factory=FakeRunner)
    clock: FakeClock = field(default_factory=FakeClock)
    writable: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        mdstat = self.tmp / "mdstat"
        mdstat.write_text(self.mdstat)
        self.source = FakeDisks(self.disks)
        recording = RecordingDisks(self.source)  # type: ignore[arg-type]
        poller = HealthPoller(self.runner, self.clock, self.tmp / "state" / "hw.json", recording,
                              PollerConfig(mdstat_path=str(mdstat), sysfs_root=str(self.tmp / "no-sys")))
        self.monitor = HealthMonitor(
            poller=poller, disks=recording, mapper=FakeMapper(self.mapping), volumes=lambda: self.volumes,
            settings=self.settings, clock=self.clock,
            usage=lambda path: self.usage.get(path, Usage(100, 10, 90)), on_writable=self.writable.append,
        )

    def poll(self) -> list:
        events = self.monitor.poll_disks()
        self.clock.now += 3600
        return events


def test_disk_degrading_over_three_polls_raises_one_event_per_change(tmp_path: Path) -> None:
    hot = FakeVolume("hot", "/srv/hot")
    rig = Rig(tmp_path, [hot], {"/srv/hot": Beneath("ext4", "/srv/hot", ("sda",))}, [disk("sda", "SER-A")])
    kinds_per_poll, verdicts = [], []
    with rig.monitor.watch() as (_subscription, updates):
        first = next(updates)
        assert first.snapshot is not None and first.snapshot.devices == ()  # nothing polled yet
        # healthy -> spin retries (warning) -> same -> pending sectors (failing) -> same
        for doc in (ata(), ata(**{"10": 2}), ata(**{"10": 2}), ata(**{"10": 2, "197": 8}), ata(**{"10": 2, "197": 8})):
            rig.runner.docs["/dev/sda"] = doc
            events = rig.poll()
            kinds_per_poll.append([e.kind for e in events])
            verdicts.append(rig.monitor.snapshot().devices[0].verdict)
        streamed = [next(updates).event for _ in range(sum(len(k) for k in kinds_per_poll))]
    assert verdicts == [Verdict.HEALTHY, Verdict.WARNING, Verdict.WARNING, Verdict.FAILING, Verdict.FAILING]
    assert kinds_per_poll == [
        [EventKind.DEVICE_ADDED],
        [EventKind.VERDICT_CHANGED],
        [],
        [EventKind.VERDICT_CHANGED, EventKind.WRITES_STOPPED],  # the only volume is on the failing disk
        [],
    ]
    assert [e.sequence for e in streamed] == [1, 2, 3, 4]  # the watcher got each exactly once, in order
    worse = streamed[2]
    assert (worse.old_verdict, worse.new_verdict) == (Verdict.WARNING, Verdict.FAILING)
    assert any(r.attribute.startswith("197") for r in worse.reasons)
    assert "/dev/sda" in streamed[3].message and hot.failed.startswith("no new data (disk health)")
    assert rig.writable == [True, False]


def test_placement_skips_the_volume_on_a_failing_disk(tmp_path: Path) -> None:
    """Through the real stores of the back office (where the monitor runs) and of a serving
    process (which places the blobs): new data lands on the healthy tier."""
    from pacsvault.daemon.processes import back_office, worker

    config = Config().with_overrides(data_dir=str(tmp_path / "data"))
    office = back_office.build(config, tmp_path / "run")
    serving = worker.build(config, tmp_path / "run", index=office.index)
    try:
        by_tier = {v.tier: v for v in office.store.volumes}
        mapping = {by_tier["hot"].path: Beneath("ext4", "/hot", ("sda",)),
                   by_tier["capacity"].path: Beneath("ext4", "/capacity", ("sdb",))}
        rig = Rig(tmp_path, [], mapping, [disk("sda", "SER-A"), disk("sdb", "SER-B")])
        rig.volumes = office.store.volumes
        rig.runner.docs = {"/dev/sda": ata(**{"5": 40, "197": 8}), "/dev/sdb": ata()}
        rig.poll()
        hot = next(v for v in rig.monitor.snapshot().volumes if v.tier == "hot")
        assert not hot.accepts_writes and "disk /dev/sda is failing" in hot.block_reason
        assert hot.verdict is Verdict.FAILING
        assert not any(r.source == "capacity" for r in hot.reasons)  # stopped by health, not full

        stored = serving.ingest.store(dicom_bytes(**identity(1)))
        _, blob = serving.retrieval.instance(stored.instance.sop_instance_uid)
        assert blob.location.tier == "capacity"

        # The failing disk is replaced by a new, healthy one: the hot tier takes data again.
        rig.source.disks = [disk("sda", "SER-NEW"), disk("sdb", "SER-B")]
        rig.runner.docs["/dev/sda"] = ata()
        kinds = [e.kind for e in rig.poll()]
        assert EventKind.WRITES_RESUMED in kinds and EventKind.DEVICE_REMOVED in kinds
        assert by_tier["hot"].failed == ""
        stored = serving.ingest.store(dicom_bytes(**identity(2)))
        _, blob = serving.retrieval.instance(stored.instance.sop_instance_uid)
        assert blob.location.tier == "hot"
    finally:
        serving.close()
        office.close()


MIRROR = "Personalities : [raid1]\nmd1 : active raid1 sdb1[1] sda1[0]\n      1000 blocks [2/2] [UU]\n\nunused devices: <none>\n"
MIRROR_DEGRADED = "Personalities : [raid1]\nmd1 : active raid1 sda1[0]\n      1000 blocks [2/1] [U_]\n\nunused devices: <none>\n"
STRIPE = "Personalities : [raid0]\nmd1 : active raid0 sdb1[1] sda1[0]\n      2000 blocks 512k chunks\n\nunused devices: <none>\n"


@pytest.mark.parametrize(
    ("mdstat", "failing", "blocked", "volume_verdict"),
    [
        (MIRROR, ["sda"], False, Verdict.WARNING),  # the mirror still protects the data
        (MIRROR, ["sda", "sdb"], True, Verdict.FAILING),  # both halves failing: beyond redundancy
        (MIRROR_DEGRADED, [], True, Verdict.FAILING),  # no redundancy left: the array itself is FAILING
        (STRIPE, ["sdb"], True, Verdict.FAILING),  # raid0 tolerates nothing
    ],
)
def test_md_volume_blocked_only_beyond_redundancy(
    tmp_path: Path, mdstat: str, failing: list[str], blocked: bool, volume_verdict: Verdict
) -> None:
    volume = FakeVolume("capacity", "/srv/raid")
    beneath = Beneath("xfs", "/srv/raid", ("sda", "sdb"), ("md1",), {"md1": ("sda", "sdb")})
    rig = Rig(tmp_path, [volume], {"/srv/raid": beneath}, [disk("sda", "A"), disk("sdb", "B")], mdstat=mdstat)
    for name in ("sda", "sdb"):
        rig.runner.docs[f"/dev/{name}"] = ata(**{"197": 8}) if name in failing else ata()
    rig.poll()
    [state] = rig.monitor.snapshot().volumes
    assert bool(state.block_reason) is blocked, state.block_reason
    assert state.accepts_writes is not blocked
    assert state.verdict is volume_verdict
    assert state.arrays == ("md1",)
    [array] = rig.monitor.snapshot().arrays
    assert array.volumes == ("/srv/raid",)


def test_capacity_threshold_events_with_hysteresis(tmp_path: Path) -> None:
    volume = FakeVolume("hot", "/srv/hot")
    rig = Rig(tmp_path, [volume], {}, [], settings=Settings(capacity_warning_percent=80.0))
    seen = []
    for used in (50, 85, 79.5, 90, 70):
        rig.usage["/srv/hot"] = Usage(1000, int(used * 10), 1000 - int(used * 10))
        seen.append([(e.kind, e.new_verdict) for e in rig.monitor.check_capacity()])
    up, down = (EventKind.CAPACITY_THRESHOLD, Verdict.WARNING), (EventKind.CAPACITY_THRESHOLD, Verdict.HEALTHY)
    # 79.5% is within the 1-point hysteresis: still "above", no event.
    assert seen == [[], [up], [], [], [down]]
    [state] = rig.monitor.snapshot().volumes
    assert state.verdict is Verdict.HEALTHY and state.used_percent == pytest.approx(70)


def test_no_volume_takes_writes_then_one_does(tmp_path: Path) -> None:
    a, b = FakeVolume("hot", "/a", full=True), FakeVolume("capacity", "/b", full=True)
    rig = Rig(tmp_path, [a, b], {}, [])
    events = rig.monitor.check_capacity()
    assert rig.writable == [False]
    assert [e.kind for e in events] == [EventKind.WRITES_STOPPED, EventKind.WRITES_STOPPED]
    assert rig.monitor.snapshot().tiers[0].accepts_writes is False
    b.full = False
    assert [e.kind for e in rig.monitor.check_capacity()] == [EventKind.WRITES_RESUMED]
    assert rig.writable == [False, True]


def test_storage_layer_failure_is_never_cleared_by_health(tmp_path: Path) -> None:
    volume = FakeVolume("hot", "/srv/hot", failed="I/O error writing blob")
    rig = Rig(tmp_path, [volume], {"/srv/hot": Beneath("ext4", "/", ("sda",))}, [disk("sda", "A")])
    rig.runner.docs["/dev/sda"] = ata(**{"197": 8})
    rig.poll()
    assert volume.failed == "I/O error writing blob"  # not overwritten by the health reason
    rig.runner.docs["/dev/sda"] = ata()
    rig.clock.now += 30 * 24 * 3600  # past the growth hold: the disk is judged healthy again
    rig.poll()
    assert volume.failed == "I/O error writing blob"  # and not cleared either
    [state] = rig.monitor.snapshot().volumes
    assert any(r.source == "storage" and r.verdict is Verdict.FAILED for r in state.reasons)


def test_slow_watcher_loses_oldest_events_and_gets_a_fresh_snapshot(tmp_path: Path) -> None:
    volume = FakeVolume("hot", "/srv/hot")
    rig = Rig(tmp_path, [volume], {}, [], settings=Settings(watch_queue_size=2))
    with rig.monitor.watch() as (_subscription, updates):
        assert next(updates).snapshot is not None
        for _ in range(5):  # five events, nobody reading: the poller must not block
            volume.full = not volume.full
            rig.monitor.check_capacity()
        resync = next(updates)
        assert resync.snapshot is not None and resync.dropped == 3
        assert resync.snapshot.sequence == 5
        # The two events still queued are older than the snapshot: skipped, not repeated.
        volume.full = not volume.full
        rig.monitor.check_capacity()
        assert next(updates).event.sequence == 6  # type: ignore[union-attr]
    assert rig.monitor.events_dropped_total == 3
    assert rig.monitor.watchers == 0


def test_poll_failure_is_reported_not_fatal(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [FakeVolume("hot", "/srv/hot")], {}, [])

    def broken() -> list:
        raise OSError(28, "No space left on device")

    rig.source.physical_disks = broken  # type: ignore[method-assign]
    assert rig.monitor.poll_disks() == []
    snapshot = rig.monitor.snapshot()
    assert "No space left" in snapshot.poll_error and rig.monitor.poll_failures_total == 1
    assert snapshot.volumes and snapshot.writable


def test_start_names_each_volumes_filesystem_before_the_first_disk_poll_ends(tmp_path: Path) -> None:
    """A WatchHealth opened at start-up must not show volumes on no filesystem while smartctl runs."""
    import threading

    rig = Rig(tmp_path, [FakeVolume("hot", "/srv/hot")], {"/srv/hot": Beneath("ext4", "/srv/hot", ("sda",))},
              [disk("sda", "SER-A")])
    smartctl_done = threading.Event()
    listed = rig.source.physical_disks

    def slow() -> list[BlockDevice]:
        smartctl_done.wait(10)
        return listed()

    rig.source.physical_disks = slow  # type: ignore[method-assign]
    rig.monitor.start()
    try:
        [volume] = rig.monitor.snapshot().volumes
        assert (volume.filesystem, volume.mountpoint, volume.devices) == ("ext4", "/srv/hot", ("sda",))
        assert volume.accepts_writes and rig.monitor.snapshot().devices == ()  # unpolled disks block nothing
    finally:
        smartctl_done.set()
        rig.monitor.stop()
        rig.monitor.join()


def test_a_volume_added_since_the_last_disk_poll_is_mapped_at_the_next_capacity_check(tmp_path: Path) -> None:
    hot = FakeVolume("hot", "/srv/hot")
    rig = Rig(tmp_path, [hot], {"/srv/hot": Beneath("ext4", "/srv/hot", ("sda",)),
                                "/srv/more": Beneath("xfs", "/srv/more", ("sdb",))}, [disk("sda", "SER-A")])
    rig.poll()
    rig.volumes.append(FakeVolume("hot", "/srv/more", volume_id="w"))  # SIGHUP or AddVolume
    rig.monitor.check_capacity()
    by_path = {v.path: v for v in rig.monitor.snapshot().volumes}
    assert (by_path["/srv/more"].filesystem, by_path["/srv/more"].devices) == ("xfs", ("sdb",))
    assert by_path["/srv/hot"].filesystem == "ext4"


def test_program_timeouts_pick_the_timeout_by_tool() -> None:
    inner = FakeRunner()
    runner = ProgramTimeouts(inner, {"smartctl": 7.0, "nvme": 3.0})
    runner(["/usr/sbin/smartctl", "-x", "/dev/sda"], 60.0)
    runner(["nvme", "smart-log", "/dev/nvme0"], 60.0)
    runner(["mdadm", "--detail", "/dev/md0"], 60.0)
    assert inner.timeouts == [7.0, 3.0, 60.0]
