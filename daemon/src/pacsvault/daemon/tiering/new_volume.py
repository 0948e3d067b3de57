"""What an operator may hand the daemon as a new volume.

A volume is written into, and later emptied and released, by the daemon
alone, so it must be a directory nobody else uses: an empty one (a freshly
mounted filesystem; mkfs.ext4 leaves ``lost+found``) or one that already is
a pacsvault volume (it carries the marker). A home directory or a share
with files in it is refused before the daemon writes anything there.

The path must be written plainly, in the form the daemon keeps and shows
(absolute, no ``.`` or ``..``, no repeated or trailing slashes): volumes are
matched by path, so ``/srv/a/../b`` and ``/srv/b`` must never be two volumes.
"""

from __future__ import annotations

import os
from pathlib import Path

from pacsvault.daemon.errors import InvalidInput, shown
from pacsvault.daemon.storage.local import MARKER_NAME

# Left by the filesystem itself on a new disk, never by a user.
_FILESYSTEM_ENTRIES = frozenset({"lost+found"})


def checked_new_volume(path: str) -> Path:
    """``path`` as a Path when it may become a volume; InvalidInput saying why not."""
    if not os.path.isabs(path):
        raise InvalidInput(f"volume path {shown(path)} must be absolute")
    normal = "/" + os.path.normpath(path).lstrip("/")
    if normal != path:
        raise InvalidInput(f"volume path {shown(path)} is not in normal form (no '.', '..', repeated or trailing "
                           f"slashes); give {shown(normal, 96)}")
    root = Path(path)
    try:
        if not root.is_dir():
            raise InvalidInput(f"{shown(path)} is not a directory (mount the disk first)")
        names = {entry.name for entry in os.scandir(root)}
    except OSError as exc:  # too long, or not ours to look at
        raise InvalidInput(f"volume path {shown(path)}: {exc.strerror}") from exc
    foreign = names - _FILESYSTEM_ENTRIES
    if foreign and MARKER_NAME not in names:
        raise InvalidInput(f"{shown(path)} is not empty ({len(foreign)} entries) and is not a pacsvault volume "
                           f"(no {MARKER_NAME}); give an empty directory, such as a freshly mounted disk")
    return root
