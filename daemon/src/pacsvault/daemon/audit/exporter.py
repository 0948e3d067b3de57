"""The ATNA export: the audit trail, sent to each audit record repository, at least once, in order.

The trail file itself is the durable spool; each repository has a cursor
file beside the trail (``<trail>.atna-<name>.cursor``) holding the sequence
number of the last record it acknowledged and the byte offset just past it.
A pass (:meth:`AtnaExporter.run_once`) reads the complete records after the
cursor, sends the events among them, and moves the cursor only after the
repository's TCP stack acknowledged the bytes. A crash, an outage or a restart
in between means the same records are sent again: duplicates are possible,
gaps are not.

With encryption on the trail's lines are sealed; the exporter opens them with
the trail's codec, and what leaves is the audit message of each record, over
TLS only.

Records are exported only once they are durable in the trail (their
sequence number is at most the trail's committed one), so a write the trail
cut back after a failed fsync is never sent.

:class:`AtnaScheduler` runs the passes of every repository on one thread,
with a doubling back-off per repository while it is away.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from pacsvault.daemon.audit.atna import to_audit_messages
from pacsvault.daemon.audit.codec import PLAIN, RecordCodec
from pacsvault.daemon.audit.follow import Cursor, records_after
from pacsvault.daemon.audit.syslog_tls import SyslogTlsSender, format_message, tls_context
from pacsvault.daemon.audit.trail import AuditTrail
from pacsvault.daemon.config import Config
from pacsvault.daemon.errors import ConfigError
from pacsvault.daemon.storage.durable import replace_file

__all__ = ["AtnaExporter", "AtnaScheduler", "Cursor", "build_scheduler"]

log = logging.getLogger(__name__)
CURSOR_FORMAT = 1


class AtnaExporter:
    """One audit record repository's export: a resumable pass over the trail."""

    def __init__(self, name: str, trail_path: Path, sender: SyslogTlsSender, source_id: str, *,
                 committed: Callable[[], int] | None = None, hostname: str | None = None,
                 max_records: int = 512, codec: RecordCodec = PLAIN) -> None:
        self.name, self.trail_path, self._sender, self._source_id = name, trail_path, sender, source_id
        self._codec = codec
        self.cursor_path = trail_path.with_name(f"{trail_path.name}.atna-{name}.cursor")
        self._committed = committed
        self._hostname = hostname or socket.gethostname()
        self._procid = str(os.getpid())
        self._max_records = max_records

    def run_once(self) -> int:
        """Sends up to ``max_records`` records past the cursor; the number passed. OSError when not delivered."""
        cursor = self.load_cursor()
        limit = self._committed() if self._committed is not None else None
        batch: list[bytes] = []
        last = cursor
        for record, end in self._records_after(cursor):
            seq = int(record.get("seq", 0))  # type: ignore[call-overload]
            if limit is not None and seq > limit:
                break
            for message in to_audit_messages(record, self._source_id):
                batch.append(format_message(message, timestamp=float(record.get("time", 0.0)),  # type: ignore[arg-type]
                                            hostname=self._hostname, procid=self._procid))
            last = Cursor(seq, end)
            if seq - cursor.seq >= self._max_records:
                break
        if last == cursor:
            return 0
        self._sender.send(batch)  # returns once acknowledged; raises otherwise, the cursor unmoved
        self._save_cursor(last)
        return last.seq - cursor.seq

    def close(self) -> None:
        self._sender.close()

    def _records_after(self, cursor: Cursor) -> Iterator[tuple[dict[str, object], int]]:
        return records_after(self.trail_path, self._codec, cursor, f"audit export {self.name}")

    # -- the cursor --------------------------------------------------------------

    def load_cursor(self) -> Cursor:
        try:
            state = json.loads(self.cursor_path.read_text())
            if state.get("format") != CURSOR_FORMAT:
                raise ValueError(f"cursor format {state.get('format')!r}")
            return Cursor(int(state["seq"]), int(state["offset"]))
        except FileNotFoundError:
            return Cursor()
        except (ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
            # Losing the cursor costs sending the trail again (duplicates), never a gap.
            log.warning("audit export %s: unreadable cursor %s (%s); sending from the start",
                        self.name, self.cursor_path, exc)
            return Cursor()

    def _save_cursor(self, cursor: Cursor) -> None:
        state = {"format": CURSOR_FORMAT, "repository": self.name, "seq": cursor.seq, "offset": cursor.offset}
        # A crash leaves the old cursor or the new, never half of one; the old one only
        # means some records are sent twice.
        replace_file(self.cursor_path, json.dumps(state).encode())


class AtnaScheduler:
    """One thread running every repository's passes; a repository that is away is retried with back-off."""

    def __init__(self, exporters: Sequence[AtnaExporter], *, interval_s: float = 1.0,
                 max_backoff_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._exporters = list(exporters)
        self._interval, self._max_backoff, self._clock = interval_s, max_backoff_s, clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="atna-export", daemon=True)
        self._next = {e.name: 0.0 for e in self._exporters}
        self._backoff = {e.name: interval_s for e in self._exporters}

    def start(self) -> None:
        if self._exporters:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        for exporter in self._exporters:
            exporter.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            busy = False
            for exporter in self._exporters:
                if self._clock() >= self._next[exporter.name]:
                    busy = self._pass(exporter) or busy
            if not busy:
                self._stop.wait(self._interval)

    def _pass(self, exporter: AtnaExporter) -> bool:
        """One pass; True when it sent a full batch (more may be waiting)."""
        try:
            sent = exporter.run_once()
        except Exception as exc:  # noqa: BLE001 - a repository away is retried later, never fatal
            delay = self._backoff[exporter.name]
            log.warning("audit export to %s failed (%s); retrying in %.1fs", exporter.name, exc, delay)
            self._next[exporter.name] = self._clock() + delay
            self._backoff[exporter.name] = min(delay * 2, self._max_backoff)
            return False
        if self._backoff[exporter.name] != self._interval:
            log.info("audit export to %s resumed", exporter.name)
        self._backoff[exporter.name] = self._interval
        self._next[exporter.name] = 0.0
        return sent > 0


def build_scheduler(config: Config, trail: AuditTrail | None) -> AtnaScheduler:
    """The export of ``trail`` to every configured repository (none: a scheduler that does nothing)."""
    if trail is None:
        return AtnaScheduler([])
    audit = config.audit
    source_id = config.replication.appliance_name or socket.gethostname()
    exporters = []
    for repo in audit.repositories:
        try:
            context = tls_context(config.resolve(repo.ca_file),
                                  config.resolve(repo.cert_file) if repo.cert_file else None,
                                  config.resolve(repo.key_file) if repo.key_file else None)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(f"audit.repositories {repo.name!r}: unusable TLS files: {exc}") from exc
        exporters.append(AtnaExporter(repo.name, trail.path, SyslogTlsSender(repo.address, context), source_id,
                                      committed=lambda: trail.durable_tail()[0], codec=trail.codec))
    return AtnaScheduler(exporters, interval_s=audit.export_interval_s, max_backoff_s=audit.export_max_backoff_s)
