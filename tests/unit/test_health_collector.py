"""The privileged collector and the daemon reading its results: same commands, same verdicts.

The collector pass runs here with a runner that answers with real captured
smartctl output (tests/fixtures/hwdata) instead of real disks; the daemon's
side is the real factory's choice of runner. The collector command itself
runs as a real process at the end.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest

from pacsvault.daemon.config import Config, HealthConfig
from pacsvault.daemon.health.collector import collect
from pacsvault.hardware import (
    BlockDevice,
    CommandResult,
    CommandStatus,
    HealthPoller,
    PollerConfig,
    SpoolRunner,
    Transport,
    Verdict,
)

HWDATA = Path(__file__).resolve().parent.parent / "fixtures" / "hwdata" / "smartctl"
# One disk per real capture, each with another verdict: name, serial, transport, capture, verdict.
DISKS_AND_CAPTURES = [
    ("sda", "SER-A", Transport.SATA, "smartctl_ata_wdc_ultrastar_HC550_healthy.json", Verdict.HEALTHY),
    ("sdb", "SER-B", Transport.SATA,
     "smartctl_ata_hitachi_HDS721050DLE630_FAILED_realloc1975_pending8_usbjmicron.json", Verdict.FAILED),
    ("nvme0n1", "SER-N", Transport.NVME, "smartctl_nvme_samsung_970evo_media_errors7.json", Verdict.WARNING),
]
CAPTURES = {f"/dev/{name}": capture for name, _, _, capture, _ in DISKS_AND_CAPTURES}
EXPECTED = {f"serial:{serial}": verdict for _, serial, _, _, verdict in DISKS_AND_CAPTURES}
DISKS = [BlockDevice(name=name, node=f"/dev/{name}", devtype="disk", major_minor="8:0", serial=serial,
                     size_bytes=10**12, transport=transport) for name, serial, transport, _, _ in DISKS_AND_CAPTURES]


class Disks:
    def physical_disks(self) -> list[BlockDevice]:
        return list(DISKS)


class Tools:
    """smartctl answers from the captures; nvme-cli is not installed. Records every command."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], timeout_s: float) -> CommandResult:
        args = tuple(argv)
        self.commands.append(args)
        if args[0] == "smartctl" and args[-1] in CAPTURES:
            doc = json.loads((HWDATA / CAPTURES[args[-1]]).read_text())
            return CommandResult(args, CommandStatus.OK, doc.get("smartctl", {}).get("exit_status", 0),
                                 json.dumps(doc))
        return CommandResult(args, CommandStatus.NOT_FOUND, error=f"{args[0]}: not installed")


def _settings(tmp: Path) -> PollerConfig:
    return PollerConfig(mdstat_path=str(tmp / "no-mdstat"), sysfs_root=str(tmp / "no-sys"))


def _verdicts(runner, tmp: Path, state: str) -> dict[str, tuple[Verdict, list[str]]]:  # type: ignore[no-untyped-def]
    result = HealthPoller(runner, lambda: 1_700_000_000.0, tmp / state, Disks(), _settings(tmp)).run_once()
    return {key: (a.verdict, [f"{r.source}:{r.attribute}={r.value}" for r in a.reasons])
            for key, a in result.assessments.items()}


def test_the_daemon_reading_a_collectors_results_judges_like_running_the_tools(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    direct_tools, collector_tools = Tools(), Tools()
    direct = _verdicts(direct_tools, tmp_path, "direct-state.json")
    done = collect(Config(), spool, runner=collector_tools, disks=Disks(), settings=_settings(tmp_path))
    assert done.disks == 3 and len(done.results) == len(collector_tools.commands) and not done.removed
    assert collector_tools.commands == direct_tools.commands  # the collector ran what the daemon would

    read = _verdicts(SpoolRunner(spool, max_age_s=900), tmp_path, "daemon-state.json")
    assert read == direct
    assert {key: verdict for key, (verdict, _) in read.items()} == EXPECTED


def test_the_factory_reads_the_collector_folder_when_configured(tmp_path: Path) -> None:
    from pacsvault.daemon.health import factory

    config = Config().with_overrides(data_dir=str(tmp_path / "data"))
    config = dataclasses.replace(config, health=HealthConfig(collector_dir="hw", poll_interval_s=60.0 * 5))
    monitor = factory.build_monitor(config, lambda: [], watch_udev=False)
    runner = monitor._poller._runner  # noqa: SLF001 - which runner the wiring chose is the point
    assert isinstance(runner, SpoolRunner)
    assert runner._folder == tmp_path / "data" / "hw" and runner._max_age_s == 900.0  # noqa: SLF001
    assert monitor.settings.poll_interval_s == 60.0  # the files are read every minute at most


def test_collect_hardware_runs_as_a_command_and_refuses_a_missing_folder(tmp_path: Path) -> None:
    daemon = [sys.executable, "-m", "pacsvault.daemon"]
    ran = subprocess.run([*daemon, "--collect-hardware", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    # This machine's disks are virtual: counted, no SMART command to run for them.
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().endswith(f"tool results in {tmp_path}")
    missing = subprocess.run([*daemon, "--collect-hardware", str(tmp_path / "nope")], capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 2 and "not a folder" in missing.stderr


@pytest.mark.parametrize("value", ["", "hw", "/var/lib/pacsvault-hw"])
def test_collector_dir_is_a_plain_setting(tmp_path: Path, value: str) -> None:
    text = f'data_dir = "{tmp_path}"\n[health]\ncollector_dir = "{value}"\n'
    (tmp_path / "c.toml").write_text(text)
    from pacsvault.daemon import config as config_module

    assert config_module.load(tmp_path / "c.toml").health.collector_dir == value
