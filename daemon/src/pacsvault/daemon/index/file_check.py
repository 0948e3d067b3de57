"""A look at the LMDB file before it is mapped: cut short, or meta pages unreadable.

LMDB maps ``data.mdb`` into memory and trusts it. A file cut shorter than
its own meta pages say (a disk full during a copy, a truncation) makes the
first read past its end kill the process with SIGBUS, before any error can
be reported; two damaged meta pages make it refuse with a cryptic message.
Both are found here, from the two meta pages alone (LMDB's documented
layout), and refused with words that name what to do.

Meta page (64-bit LMDB 0.9): a 16-byte page header (pgno, pad, flags 0x08),
then magic 0xBEEFC0DE, version, address, map size, two database records
(the first one's first field holds the page size), last page number and
the transaction id. The meta with the higher transaction id is current.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import lmdb

from pacsvault.daemon.errors import PacsvaultError

_MAGIC = 0xBEEFC0DE
_P_META = 0x08
_FLAGS = struct.Struct("<H")  # at 10
_MAGIC_VERSION = struct.Struct("<II")  # at 16
_PAGE_SIZE = struct.Struct("<I")  # at 40: mm_dbs[FREE_DBI].md_pad
_LAST_TXN = struct.Struct("<QQ")  # at 136: mm_last_pg, mm_txnid
_META_BYTES = 152
REBUILD_HINT = ("stop pacsvaultd and run `pacsvaultd --rebuild-index` (with the same --config / --data-dir) to "
                "rebuild the index from the blobs on the volumes, or restore it from a backup")


class IndexDamaged(PacsvaultError):
    """The index cannot be used safely; the message names the command that rebuilds it."""


def check_file(directory: Path) -> None:
    """Raises IndexDamaged when ``directory``'s data.mdb is shorter than its meta pages say or has
    no readable meta page. A missing or empty file is a new index: nothing to check."""
    path = directory / "data.mdb"
    try:
        with open(path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            if size == 0:
                return
            first = source.read(_META_BYTES)
            metas = [_meta(first)]
            page_size = metas[0][0] if metas[0] else 4096
            source.seek(page_size)
            metas.append(_meta(source.read(_META_BYTES)))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise IndexDamaged(f"the index file {path} cannot be read ({exc.strerror}); {REBUILD_HINT}") from exc
    readable = [m for m in metas if m is not None]
    if not readable:
        raise IndexDamaged(f"the index file {path} has no readable meta page: it is damaged; {REBUILD_HINT}")
    page_size, last_page, _ = max(readable, key=lambda m: m[2])
    needed = (last_page + 1) * page_size
    if size < needed:
        raise IndexDamaged(f"the index file {path} is cut short ({size} bytes; its meta page says {needed}): "
                           f"it is damaged; {REBUILD_HINT}")


def _meta(raw: bytes) -> tuple[int, int, int] | None:
    """(page size, last page, transaction id) of one meta page, None when it is not one."""
    if len(raw) < _META_BYTES or not _FLAGS.unpack_from(raw, 10)[0] & _P_META:
        return None
    magic, _version = _MAGIC_VERSION.unpack_from(raw, 16)
    page_size = _PAGE_SIZE.unpack_from(raw, 40)[0]
    if magic != _MAGIC or page_size < 512 or page_size & (page_size - 1):
        return None
    last_page, txnid = _LAST_TXN.unpack_from(raw, 136)
    return page_size, last_page, txnid


def walk(env: lmdb.Environment, dbs: dict[str, object]) -> int:
    """Reads every page of every database once (keys only: every branch and leaf page); raises
    IndexDamaged naming the database when LMDB finds a page that is not what it should be, or a
    database holds another number of entries than its header says. Returns the entries seen."""
    seen = 0
    with env.begin() as txn:
        for name, db in dbs.items():
            try:
                expected = int(txn.stat(db)["entries"])
                count = sum(1 for _ in txn.cursor(db=db).iternext(keys=True, values=False))
            except lmdb.Error as exc:
                raise IndexDamaged(f"the index's {name} table is damaged ({exc}); {REBUILD_HINT}") from exc
            if count != expected:
                raise IndexDamaged(f"the index's {name} table is damaged ({count} entries read, its header says "
                                   f"{expected}); {REBUILD_HINT}")
            seen += count
    return seen
