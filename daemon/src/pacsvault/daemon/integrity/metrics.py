"""``/metrics`` families of the appliance's own integrity, read from the index at scrape time
(the books every process writes to), so counters survive restarts and cover every worker.

Families (``pacsvault_`` prefix): ``scrub_blobs_checked_total``, ``scrub_bytes_checked_total``,
``scrub_found_total``, ``scrub_repaired_total``, ``scrub_unrepairable_total``,
``scrub_passes_total``, ``scrub_last_full_pass_timestamp_seconds``, ``scrub_pass_progress_ratio``,
``integrity_problems`` (blobs bad and not repaired), ``read_integrity_failures_total`` and
``read_integrity_repaired_total`` (reads that failed their check), ``index_live_bytes`` and
``index_map_bytes``, ``index_reserve_bytes``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pacsvault.daemon.index import integrity_books
from pacsvault.daemon.index.lmdb_env import IndexEnvironment


class IntegrityCollector(Collector):
    def __init__(self, env: IndexEnvironment) -> None:
        self._env = env

    def collect(self) -> Iterator[Metric]:
        s = integrity_books.scrub_state(self._env)
        for name, text, value in (
            ("scrub_blobs_checked", "Blobs the local scrub verified", s.blobs_checked),
            ("scrub_bytes_checked", "Stored bytes the local scrub read and verified", s.bytes_checked),
            ("scrub_found", "Blobs the local scrub found missing or damaged", s.found),
            ("scrub_repaired", "Of those, repaired (another local copy or the peer)", s.repaired),
            ("scrub_unrepairable", "Of those, not repairable", s.unrepairable),
            ("scrub_passes", "Full passes of the local scrub", s.passes_completed),
        ):
            yield CounterMetricFamily(f"pacsvault_{name}", text, value=value)
        last = GaugeMetricFamily("pacsvault_scrub_last_full_pass_timestamp_seconds",
                                 "Unix time the last full scrub pass ended (absent before the first)")
        if s.last_pass_completed_at:
            last.add_metric([], s.last_pass_completed_at)
        yield last
        with self._env.read() as txn:
            indexed = txn.stat(self._env.dbs["blobs"])["entries"]
        progress = 1.0 if s.idle else (s.pass_blobs_checked / indexed if indexed else 1.0)
        yield GaugeMetricFamily("pacsvault_scrub_pass_progress_ratio", "Share of the blobs the pass under way "
                                "has verified (1 between passes)", value=min(1.0, progress))
        yield GaugeMetricFamily("pacsvault_integrity_problems", "Blobs found bad and not repaired",
                                value=integrity_books.problem_count(self._env))
        reads = integrity_books.read_failures(self._env)
        yield CounterMetricFamily("pacsvault_read_integrity_failures", "Reads whose copy was missing or failed "
                                  "its check", value=reads.count)
        yield CounterMetricFamily("pacsvault_read_integrity_repaired", "Of those, repaired from the peer",
                                  value=reads.repaired)
        usage = self._env.usage()
        yield GaugeMetricFamily("pacsvault_index_live_bytes", "Bytes the index's data takes in its map",
                                value=usage.live_bytes)
        yield GaugeMetricFamily("pacsvault_index_map_bytes", "index.map_size_bytes", value=usage.map_size)
        yield GaugeMetricFamily("pacsvault_index_reserve_bytes", "Part of the map kept for deletes and repairs",
                                value=usage.reserve_bytes)
