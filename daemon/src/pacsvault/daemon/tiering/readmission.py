"""A volume that failed and came back is taken into use again, once it checks out.

A disk unmounted (or erroring) while the daemon runs is marked failed in the
index (``VolumeRecord.failed``), so every process stops writing there. When
it returns -- remounted, the cable reseated -- the back office notices: its
``.pacsvault-volume`` marker names the volume the index expects, and a small
file written, flushed, read back and removed in its ``tmp/`` works. Then the
failure is cleared in the index (every process follows, taking the mount's
new device number) and the volume takes data and serves reads again.

Only failures of the storage layer are undone here; a volume stopped by the
disk-health rules (``health.monitor``) is for the monitor to release.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from pacsvault.daemon.errors import Unavailable
from pacsvault.daemon.health.monitor import BLOCK_PREFIX
from pacsvault.daemon.storage.local import read_marker
from pacsvault.daemon.storage.tiered import TieredBlobStore, Volume

log = logging.getLogger(__name__)
_PROBE = b"pacsvault volume check\n"


def readmit_returned(store: TieredBlobStore) -> list[Volume]:
    """Clears the failure of every volume that came back; returns them."""
    store.refresh()
    back = [v for v in store.volumes if v.failed and not v.failed.startswith(BLOCK_PREFIX) and checks_out(v)]
    for volume in back:
        was = volume.failed
        volume.device = os.stat(volume.path).st_dev  # a remount is a new filesystem instance
        volume.recover(was)
        log.warning("volume %s is back (its marker checks out and it takes a write): in use again; it had "
                    "failed: %s", volume.path, was)
    return back


def checks_out(volume: Volume) -> bool:
    """The volume's own marker is there and a durable write-read-remove round trip works."""
    root = Path(volume.path)
    try:
        if read_marker(root) != volume.volume_id:
            return False
    except Unavailable:
        return False
    probe = root / "tmp" / f"readmit-{uuid.uuid4().hex}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, _PROBE)
            os.fsync(fd)
        finally:
            os.close(fd)
        ok = probe.read_bytes() == _PROBE
        probe.unlink()
        return ok
    except OSError:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass  # the volume is not usable; nothing was left that matters
        return False
