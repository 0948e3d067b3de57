"""How full the index really is, and the headroom kept for deletes and repairs.

LMDB's map only grows: ``last_pgno`` is a high-water mark, and pages freed
by deletes are reused from its free list. What the data takes is the pages
of every database (branch, leaf, overflow), counted here from their stats
(a few microseconds, once per commit batch).

A part of the map (``index.reserve_percent``) is kept for the writes that
free space or keep data safe -- deletes, purges, repairs, volume state,
replication acknowledgements -- so that a full index is never a dead end:
stores are refused with RESOURCE_EXHAUSTED once the rest is used, and the
operator can still delete their way out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lmdb

# The two meta pages LMDB keeps at the start of the file.
_META_PAGES = 2
# What a few deletes need at least, whatever the map's size: about 256 pages.
MIN_RESERVE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Usage:
    map_size: int
    live_bytes: int
    reserve_bytes: int

    @property
    def limit(self) -> int:
        """What ordinary writes (stores) may fill; the rest is the reserve."""
        return self.map_size - self.reserve_bytes

    @property
    def exhausted(self) -> bool:
        return self.live_bytes >= self.limit

    @property
    def percent(self) -> float:
        return 100.0 * self.live_bytes / self.map_size if self.map_size else 100.0


def live_bytes(env: lmdb.Environment, dbs: dict[str, Any]) -> int:
    """Bytes of the pages every database holds now (free pages not counted)."""
    main = env.stat()
    pages = _META_PAGES + _pages(main)
    with env.begin() as txn:
        for db in dbs.values():
            pages += _pages(txn.stat(db))
    return pages * int(main["psize"])


def usage(env: lmdb.Environment, dbs: dict[str, Any], reserve_percent: float) -> Usage:
    map_size = int(env.info()["map_size"])
    return Usage(map_size, live_bytes(env, dbs), reserve_bytes(map_size, reserve_percent))


def reserve_bytes(map_size: int, reserve_percent: float) -> int:
    """The reserve: the configured share of the map, but never less than MIN_RESERVE_BYTES (or
    half a smaller map). A commit writes fresh copies of every page it changes, and the pages
    the last commits freed are not reusable yet, so a small map needs more than its share."""
    if reserve_percent <= 0:
        return 0
    return max(int(map_size * reserve_percent / 100.0), min(MIN_RESERVE_BYTES, map_size // 2))


def _pages(stat: dict[str, int]) -> int:
    return int(stat["branch_pages"]) + int(stat["leaf_pages"]) + int(stat["overflow_pages"])
