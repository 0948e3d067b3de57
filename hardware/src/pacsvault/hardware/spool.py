"""Tool output handed over through a folder: a privileged collector runs the tools, the daemon reads.

The daemon runs without privileges (the appliance's unit keeps no capability
and sets NoNewPrivileges, so no tool it starts can gain any), but smartctl
needs the disk's device node and CAP_SYS_RAWIO for ATA pass-through, and
nvme-cli's admin commands need CAP_SYS_ADMIN. So a short-lived collector with
those rights runs exactly the commands the daemon's poller would run
(:class:`RecordingRunner` around a :class:`HealthPoller` pass) and leaves each
result in a file named after its command line; the daemon's poller reads them
(:class:`SpoolRunner`) instead of running anything. Parsing, rules, trends and
events stay in the daemon, on the same code as when it runs the tools itself.

A result older than the spool runner's ``max_age_s`` reads as a command that
timed out, and a missing one as a tool not installed: both give the disk an
UNKNOWN verdict whose reason says that the collector is not delivering.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pacsvault.hardware.runner import CommandResult, CommandRunner, CommandStatus

SUFFIX = ".result.json"


def spool_name(argv: Sequence[str]) -> str:
    """The file a command's result is kept in: a digest of its exact argument list."""
    digest = hashlib.sha256(json.dumps(list(argv)).encode()).hexdigest()[:32]
    return digest + SUFFIX


class RecordingRunner:
    """Runs each command with ``inner`` and leaves its result in ``folder`` (the collector's side).

    Each file is written to a temporary name and renamed, so a reader sees a
    whole result or the previous one. Files are mode 0640; give ``folder``
    the daemon's group with the setgid bit and they inherit it.

    Args:
        inner: The runner that really runs the tools.
        folder: The spool folder.
        clock: Returns the current time in seconds (stored with each result).
    """

    def __init__(self, inner: CommandRunner, folder: Path, clock: Callable[[], float] = time.time) -> None:
        self._inner, self._folder, self._clock = inner, folder, clock
        self.written: list[Path] = []

    def __call__(self, argv: Sequence[str], timeout_s: float) -> CommandResult:
        result = self._inner(argv, timeout_s)
        record = {"argv": list(argv), "status": result.status.value, "returncode": result.returncode,
                  "stdout": result.stdout, "stderr": result.stderr, "error": result.error,
                  "recorded_at": self._clock()}
        final = self._folder / spool_name(argv)
        fd, tmp = tempfile.mkstemp(dir=self._folder, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(record, out)
            os.chmod(tmp, 0o640)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.written.append(final)
        return result

    def prune(self) -> list[Path]:
        """Removes results of commands this runner did not run (disks gone since); returns them."""
        kept = set(self.written)
        gone = [p for p in self._folder.glob("*" + SUFFIX) if p not in kept]
        for path in gone:
            path.unlink(missing_ok=True)
        return gone


class SpoolRunner:
    """Answers each command from the result a collector left in ``folder`` (the daemon's side).

    Never raises, like every runner: a missing, stale, unreadable or
    mismatched result becomes a command that did not run, with a reason an
    operator can act on.

    Args:
        folder: The spool folder.
        max_age_s: Results older than this are not used.
        clock: Returns the current time in seconds.
    """

    def __init__(self, folder: Path, max_age_s: float, clock: Callable[[], float] = time.time) -> None:
        self._folder, self._max_age_s, self._clock = folder, max_age_s, clock

    def __call__(self, argv: Sequence[str], timeout_s: float) -> CommandResult:
        args = tuple(argv)
        path = self._folder / spool_name(args)
        command = " ".join(args)
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                raise ValueError("it is not a result record")
            if record.get("argv") != list(args):
                raise ValueError(f"it holds the result of another command: {record.get('argv')!r}")
            age = self._clock() - float(record["recorded_at"])
            status = CommandStatus(record["status"])
        except FileNotFoundError:
            return CommandResult(args, CommandStatus.NOT_FOUND, error=(
                f"no result of '{command}' from the hardware collector in {self._folder} "
                "(is pacsvault-hwcollect.timer running?)"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return CommandResult(args, CommandStatus.ERROR, error=f"unreadable collector result {path}: {exc}")
        if age > self._max_age_s:
            return CommandResult(args, CommandStatus.TIMEOUT, error=(
                f"the hardware collector's result of '{command}' is {age:.0f} s old (over {self._max_age_s:.0f} s):"
                " is pacsvault-hwcollect.timer running?"))
        return CommandResult(args, status, record.get("returncode"), str(record.get("stdout", "")),
                             str(record.get("stderr", "")), str(record.get("error", "")))
