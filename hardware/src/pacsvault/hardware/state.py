"""The poller's persisted state: last assessment and growth marks per device.

The file is self-describing (``format`` and ``version`` keys) so a future
layout can keep reading old files. It is written with the durable sequence
(temp file in the same directory, fsync, rename, fsync the directory), so a
crash leaves either the old or the new state, never half of one. A corrupt
file is moved aside with a reason in its name rather than deleted, and the
poller starts from empty: losing trend history is better than not polling.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacsvault.hardware.trend import Growth
from pacsvault.hardware.verdict import Assessment

FORMAT = "pacsvault.hardware.poller-state"
VERSION = 1


@dataclass
class DeviceRecord:
    """What the poller remembers about one device or array."""

    assessment: Assessment
    growth: dict[str, Growth] = field(default_factory=dict)


@dataclass
class PollerState:
    """All remembered devices, keyed by stable identity."""

    devices: dict[str, DeviceRecord] = field(default_factory=dict)
    saved_at: float = 0.0


class StateStore:
    """Loads and atomically saves :class:`PollerState` as JSON.

    Args:
        path: State file path; its directory is created on first save.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> PollerState:
        """Read the state; a missing file gives an empty state."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return PollerState()
        try:
            return _decode(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            self._quarantine(type(exc).__name__)
            return PollerState()

    def save(self, state: PollerState) -> None:
        """Write ``state`` durably; see the module docstring for the sequence."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(_encode(state), indent=1, sort_keys=True).encode("utf-8")
        # Same directory as the target so os.replace is an atomic rename.
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                # Data must be on disk before the rename makes it visible.
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # Persist the rename itself (the directory entry).
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _quarantine(self, why: str) -> None:
        target = self.path.with_name(f"{self.path.name}.corrupt-{why}")
        try:
            os.replace(self.path, target)
        except OSError:
            pass  # unreadable and unmovable: the next save overwrites it


def _encode(state: PollerState) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "saved_at": state.saved_at,
        "devices": {
            key: {
                "assessment": record.assessment.to_json_dict(),
                "growth": {m: g.to_json_dict() for m, g in record.growth.items()},
            }
            for key, record in state.devices.items()
        },
    }


def _decode(data: Any) -> PollerState:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not a poller state file")
    if data.get("version") != VERSION:
        raise ValueError(f"unsupported state version {data.get('version')!r}")
    devices = {
        str(key): DeviceRecord(
            assessment=Assessment.from_json_dict(entry["assessment"]),
            growth={m: Growth.from_json_dict(g) for m, g in entry.get("growth", {}).items()},
        )
        for key, entry in data["devices"].items()
    }
    return PollerState(devices=devices, saved_at=float(data.get("saved_at", 0.0)))
