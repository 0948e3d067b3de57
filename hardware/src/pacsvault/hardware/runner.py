"""Injectable command runner for smartctl, nvme-cli and mdadm.

A missing binary, a timeout or a non-zero exit are *reported states* on the
returned :class:`CommandResult`, never exceptions: a health poller that dies
because one disk hangs would hide every other disk. The raw return code is
always kept, because smartctl's exit status is a bitmask where non-zero is
normal (bit 6 just means "the error log has entries").
"""

from __future__ import annotations

import enum
import os
import subprocess
from dataclasses import dataclass
from typing import Protocol, Sequence


class CommandStatus(enum.StrEnum):
    """How a command ended, independent of its exit code."""

    OK = "ok"
    NOT_FOUND = "not_found"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True)
class CommandResult:
    """Outcome of running one command.

    Attributes:
        argv: The command that was run.
        status: ``OK`` when the process ran to completion (whatever its
            exit code), otherwise why it did not.
        returncode: The raw exit code, or ``None`` when the process did not
            finish.
        stdout: Captured standard output (decoded, errors replaced).
        stderr: Captured standard error.
        error: Human-readable explanation when ``status`` is not ``OK``.
    """

    argv: tuple[str, ...]
    status: CommandStatus
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: str = ""

    @property
    def ran(self) -> bool:
        """True when the program ran to completion (any exit code)."""
        return self.status is CommandStatus.OK


class CommandRunner(Protocol):
    """Runs one command and reports how it went; never raises."""

    def __call__(self, argv: Sequence[str], timeout_s: float) -> CommandResult:
        """Run ``argv`` with a timeout in seconds."""
        ...


class SubprocessRunner:
    """Real runner using :mod:`subprocess` with a hard timeout.

    Args:
        env: Environment for the child. Defaults to a ``C`` locale so that
            tools print parseable English text (mdadm, smartctl messages).
    """

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._env = env if env is not None else {**os.environ, "LC_ALL": "C"}

    def __call__(self, argv: Sequence[str], timeout_s: float) -> CommandResult:
        """Run ``argv``; see :class:`CommandResult` for the reported states."""
        args = tuple(argv)
        try:
            proc = subprocess.run(
                args,
                capture_output=True,
                timeout=timeout_s,
                env=self._env,
                check=False,
            )
        except FileNotFoundError as exc:
            return CommandResult(args, CommandStatus.NOT_FOUND, error=f"{args[0]}: not installed ({exc})")
        except subprocess.TimeoutExpired as exc:
            # subprocess.run has already killed the child; keep partial output
            # because smartctl often prints the identity before it hangs.
            return CommandResult(
                args,
                CommandStatus.TIMEOUT,
                stdout=_decode(exc.stdout),
                stderr=_decode(exc.stderr),
                error=f"{args[0]}: no answer within {timeout_s:g} s",
            )
        except OSError as exc:
            # Permission denied, exec format error: the tool exists but
            # cannot run here, which is a state the caller must see.
            return CommandResult(args, CommandStatus.ERROR, error=f"{args[0]}: {exc}")
        return CommandResult(
            args,
            CommandStatus.OK,
            returncode=proc.returncode,
            stdout=_decode(proc.stdout),
            stderr=_decode(proc.stderr),
        )


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return data.decode("utf-8", errors="replace")
