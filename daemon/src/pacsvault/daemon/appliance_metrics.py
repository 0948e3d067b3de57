"""What the back office knows about the appliance as a whole, read at scrape time.

Families (gauges unless ``_total``):

* ``pacsvault_index_entries{table}``, ``pacsvault_index_stored_bytes``,
  ``pacsvault_index_map_size_bytes``, ``pacsvault_index_map_used_bytes``: the
  LMDB index (instances, studies, patients, blobs, ... by table; the map is
  the most the index can hold).
* ``pacsvault_replication_backlog_entries``, ``pacsvault_replication_backlog_bytes``,
  ``pacsvault_replication_oldest_pending_age_seconds`` (the recovery point:
  alert when it passes ``pacsvault_replication_rpo_warning_seconds``),
  ``pacsvault_replication_peer_state{peer,state}`` (1 for the current state),
  ``pacsvault_replication_throughput_bytes_per_second``,
  ``pacsvault_replication_sent_blobs_total``, ``pacsvault_replication_sent_bytes_total``
  (since the back office started), ``pacsvault_replication_repairs_total``
  (instances repaired from the peer, ever).
* ``pacsvault_mover_passes_total``, ``pacsvault_mover_moved_blobs_total``,
  ``pacsvault_mover_moved_bytes_total``, ``pacsvault_mover_failures_total`` (since
  the back office started), ``pacsvault_mover_last_pass_duration_seconds``,
  ``pacsvault_mover_last_pass_bytes``, ``pacsvault_mover_pending_promotions``.
* ``pacsvault_audit_records_total`` (records in the trail, ever),
  ``pacsvault_audit_export_sent_records_total{repository}`` and
  ``pacsvault_audit_export_backlog_records{repository}`` (IHE ATNA export).

A figure that cannot be read at this moment is left out of the scrape (and
the failure logged at DEBUG) rather than failing the whole scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pacsvault.daemon.audit.exporter import AtnaExporter
from pacsvault.daemon.audit.trail import AuditTrail
from pacsvault.daemon.index import placement
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.replication.manager import ReplicationStatus
from pacsvault.daemon.tiering.mover import TierMover

log = logging.getLogger(__name__)
PEER_STATES = ("idle", "connected", "unreachable", "backing-off", "error")


class ApplianceCollector(Collector):
    """Index, replication, mover and audit figures of the back office's own objects.

    Args:
        index: The index environment.
        mover: The tier mover (its counters since the back office started).
        replication: The replication status, None without replication.
        trail: The audit trail, None with auditing off.
        exporters: The ATNA exporters, one per repository.
    """

    def __init__(self, index: IndexEnvironment, mover: TierMover,
                 replication: Callable[[], ReplicationStatus] | None, trail: AuditTrail | None,
                 exporters: list[AtnaExporter]) -> None:
        self._index, self._mover, self._replication = index, mover, replication
        self._trail, self._exporters = trail, exporters

    def collect(self) -> Iterator[Metric]:
        for part in (self._index_figures, self._replication_figures, self._mover_figures, self._audit_figures):
            try:
                yield from part()
            except Exception:  # noqa: BLE001 - one unreadable part must not cost the whole scrape
                log.debug("metrics: %s not available now", part.__name__, exc_info=True)

    def _index_figures(self) -> Iterator[Metric]:
        stats = self._index.stats()
        entries = GaugeMetricFamily("pacsvault_index_entries", "Entries of each table of the index",
                                    labels=["table"])
        for table, count in sorted(stats.items()):
            if table not in ("stored_bytes", "map_size", "map_used"):
                entries.add_metric([table], count)
        yield entries
        yield GaugeMetricFamily("pacsvault_index_stored_bytes", "Bytes of blobs the index accounts for (stored form)",
                                value=stats["stored_bytes"])
        yield GaugeMetricFamily("pacsvault_index_map_size_bytes", "The most the index can hold (index.map_size_bytes)",
                                value=stats["map_size"])
        yield GaugeMetricFamily("pacsvault_index_map_used_bytes", "Bytes of the index map in use",
                                value=stats["map_used"])

    def _replication_figures(self) -> Iterator[Metric]:
        if self._replication is None:
            return
        status = self._replication()
        yield GaugeMetricFamily("pacsvault_replication_backlog_entries", "Changes not yet replicated to the peer",
                                value=status.pending_entries)
        yield GaugeMetricFamily("pacsvault_replication_backlog_bytes", "Bytes not yet replicated to the peer",
                                value=status.pending_bytes)
        yield GaugeMetricFamily("pacsvault_replication_oldest_pending_age_seconds",
                                "Age of the oldest change not yet at the peer: the recovery point (RPO)",
                                value=status.oldest_pending_age_s)
        yield GaugeMetricFamily("pacsvault_replication_rpo_warning_seconds",
                                "replication.rpo_warning_s: health warns past it", value=status.rpo_warning_s)
        state = GaugeMetricFamily("pacsvault_replication_peer_state", "1 for the sender's current state",
                                  labels=["peer", "state"])
        for name in (*PEER_STATES, *([status.state] if status.state not in PEER_STATES else [])):
            state.add_metric([status.peer, name], 1.0 if status.state == name else 0.0)
        yield state
        yield GaugeMetricFamily("pacsvault_replication_throughput_bytes_per_second", "Recent sending rate",
                                value=status.bytes_per_second)
        yield CounterMetricFamily("pacsvault_replication_sent_blobs", "Blobs the peer acknowledged (since start)",
                                  value=status.blobs_replicated)
        yield CounterMetricFamily("pacsvault_replication_sent_bytes", "Bytes the peer acknowledged (since start)",
                                  value=status.bytes_replicated)
        yield CounterMetricFamily("pacsvault_replication_repairs", "Instances repaired from the peer's copy",
                                  value=status.repairs)

    def _mover_figures(self) -> Iterator[Metric]:
        stats = self._mover.stats
        yield CounterMetricFamily("pacsvault_mover_passes", "Tier mover passes (since start)", value=stats.passes)
        yield CounterMetricFamily("pacsvault_mover_moved_blobs", "Blobs moved between tiers (since start)",
                                  value=stats.blobs_moved)
        yield CounterMetricFamily("pacsvault_mover_moved_bytes", "Bytes moved between tiers (since start)",
                                  value=stats.bytes_moved)
        yield CounterMetricFamily("pacsvault_mover_failures", "Blob moves that failed and will be retried",
                                  value=stats.failures)
        yield GaugeMetricFamily("pacsvault_mover_last_pass_duration_seconds", "Duration of the last mover pass",
                                value=stats.last_pass_seconds)
        yield GaugeMetricFamily("pacsvault_mover_last_pass_bytes", "Bytes the last mover pass moved",
                                value=stats.last_pass_bytes)
        yield GaugeMetricFamily("pacsvault_mover_pending_promotions", "Studies waiting to come back to the first tier",
                                value=placement.promotions_pending(self._index))

    def _audit_figures(self) -> Iterator[Metric]:
        if self._trail is None:
            return
        written = self._trail.durable_tail()[0]
        yield CounterMetricFamily("pacsvault_audit_records", "Records in the audit trail", value=written)
        sent = CounterMetricFamily("pacsvault_audit_export_sent_records",
                                   "Audit records an ATNA repository acknowledged", labels=["repository"])
        backlog = GaugeMetricFamily("pacsvault_audit_export_backlog_records",
                                    "Audit records not yet acknowledged by an ATNA repository", labels=["repository"])
        for exporter in self._exporters:
            cursor = exporter.load_cursor()
            sent.add_metric([exporter.name], cursor.seq)
            backlog.add_metric([exporter.name], max(0, written - cursor.seq))
        yield sent
        yield backlog
