"""Tool results handed over through a folder: RecordingRunner writes them, SpoolRunner reads them.

What each bad or missing result reads as: a missing one as a tool not
installed, a stale one as a timeout, another command's or a broken file as
an error; each with a message naming the collector. All of them give the
disk an UNKNOWN verdict, never a healthy one.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Sequence

from pacsvault.hardware import (
    BlockDevice,
    CommandResult,
    CommandStatus,
    HealthPoller,
    PollerConfig,
    RecordingRunner,
    SpoolRunner,
    Transport,
    Verdict,
)
from pacsvault.hardware.spool import spool_name

SMARTCTL = ("smartctl", "--json", "--nocheck=standby", "-x", "/dev/sda")
NOW = 1_700_000_000.0


class Canned:
    """Answers with the given result for any command; counts calls."""

    def __init__(self, result: CommandResult) -> None:
        self.result, self.calls = result, 0

    def __call__(self, argv: Sequence[str], timeout_s: float) -> CommandResult:
        self.calls += 1
        return CommandResult(tuple(argv), self.result.status, self.result.returncode, self.result.stdout,
                             self.result.stderr, self.result.error)


def _capture(fixtures: Path, name: str) -> str:
    return (fixtures / "smartctl" / name).read_text()


def test_a_recorded_result_reads_back_unchanged(tmp_path: Path, fixtures: Path) -> None:
    # A real capture whose exit code (64: errors in the device log) the assessment uses.
    stdout = _capture(fixtures, "smartctl_ata_hgst_HUS724020ALE640_exit64_crc12.json")
    inner = Canned(CommandResult(SMARTCTL, CommandStatus.OK, 64, stdout, "warning on stderr"))
    recorded = RecordingRunner(inner, tmp_path, clock=lambda: NOW)(SMARTCTL, 60.0)
    read = SpoolRunner(tmp_path, max_age_s=900, clock=lambda: NOW + 300)(SMARTCTL, 60.0)
    assert read == recorded and read.returncode == 64 and read.stdout == stdout
    [written] = tmp_path.iterdir()  # the temporary file was renamed, not left behind
    assert written.name == spool_name(SMARTCTL) and stat.S_IMODE(written.stat().st_mode) == 0o640


def test_a_result_in_a_setgid_folder_belongs_to_the_folders_group(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    group = os.getgid() if os.getuid() else 1  # root can hand the folder to another group ("daemon")
    os.chown(folder, -1, group)
    folder.chmod(0o2750)
    RecordingRunner(Canned(CommandResult(SMARTCTL, CommandStatus.OK, 0, "{}")), folder)(SMARTCTL, 60.0)
    assert (folder / spool_name(SMARTCTL)).stat().st_gid == group


def test_missing_stale_foreign_and_broken_results_are_not_used(tmp_path: Path) -> None:
    spool = SpoolRunner(tmp_path, max_age_s=900, clock=lambda: NOW)
    missing = spool(SMARTCTL, 60.0)
    assert missing.status is CommandStatus.NOT_FOUND and "pacsvault-hwcollect.timer" in missing.error

    RecordingRunner(Canned(CommandResult(SMARTCTL, CommandStatus.OK, 0, "{}")), tmp_path,
                    clock=lambda: NOW - 901)(SMARTCTL, 60.0)
    stale = spool(SMARTCTL, 60.0)
    assert stale.status is CommandStatus.TIMEOUT and "901 s old" in stale.error and not stale.stdout

    path = tmp_path / spool_name(SMARTCTL)
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "argv": ["smartctl", "-x", "/dev/sdb"], "recorded_at": NOW}))
    foreign = spool(SMARTCTL, 60.0)
    assert foreign.status is CommandStatus.ERROR and "another command" in foreign.error

    path.write_text('{"argv": ')
    broken = spool(SMARTCTL, 60.0)
    assert broken.status is CommandStatus.ERROR and str(path) in broken.error


def test_prune_removes_results_of_commands_not_run_this_pass(tmp_path: Path) -> None:
    first = RecordingRunner(Canned(CommandResult(SMARTCTL, CommandStatus.OK, 0, "{}")), tmp_path)
    gone_disk = ("smartctl", "--json", "--nocheck=standby", "-x", "/dev/sdz")
    first(SMARTCTL, 60.0)
    first(gone_disk, 60.0)
    second = RecordingRunner(Canned(CommandResult(SMARTCTL, CommandStatus.OK, 0, "{}")), tmp_path)
    second(SMARTCTL, 60.0)
    assert second.prune() == [tmp_path / spool_name(gone_disk)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [spool_name(SMARTCTL)]


class OneDisk:
    def physical_disks(self) -> list[BlockDevice]:
        return [BlockDevice(name="sda", node="/dev/sda", devtype="disk", major_minor="8:0", serial="SER-A",
                            size_bytes=4 * 10**12, transport=Transport.SATA)]


def test_a_poller_on_a_spool_with_nothing_delivered_says_unknown_and_why(tmp_path: Path) -> None:
    config = PollerConfig(mdstat_path=str(tmp_path / "no-mdstat"), sysfs_root=str(tmp_path / "no-sys"))
    (tmp_path / "spool").mkdir()
    poller = HealthPoller(SpoolRunner(tmp_path / "spool", 900), lambda: NOW, tmp_path / "state.json", OneDisk(),
                          config)
    assessment = poller.run_once().assessments["serial:SER-A"]
    assert assessment.verdict is Verdict.UNKNOWN
    assert "hardware collector" in assessment.reasons[0].value
