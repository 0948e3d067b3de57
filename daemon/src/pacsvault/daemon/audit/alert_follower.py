"""The back office's follower of security alerts: the trail's alert records as health events and counts.

Alerts are raised in whichever process sees them, as records of the one
trail (``alerts``). The back office, which serves WatchHealth and
``/metrics``, follows the trail from where it ended when the back office
started: each alert becomes a WatchHealth event (kind SECURITY_ALERT) and
counts in ``pacsvault_security_alerts_total{kind}``. Counts start at zero
with each back office, as Prometheus counters do; the trail (and the ATNA
export) keeps every alert for good.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from pacsvault.daemon.audit.alerts import AlertKind, alert_of
from pacsvault.daemon.audit.follow import end_of, records_after
from pacsvault.daemon.audit.trail import AuditTrail

__all__ = ["AlertFollower"]

log = logging.getLogger(__name__)
OnAlert = Callable[[AlertKind, Mapping[str, object]], None]


class AlertFollower(Collector):
    """A resumable pass (``run_once``) over the records written since the last; also the metrics collector."""

    def __init__(self, trail: AuditTrail, on_alert: OnAlert) -> None:
        self._path, self._codec, self._on_alert = trail.path, trail.codec, on_alert
        self._cursor = end_of(trail.path)
        self._lock = threading.Lock()
        self.counts: collections.Counter[AlertKind] = collections.Counter()

    def run_once(self, limit: int = 10_000) -> int:
        """Publishes the alerts among up to ``limit`` new records; returns how many alerts there were."""
        raised = 0
        with self._lock:
            for number, (record, end) in enumerate(records_after(self._path, self._codec, self._cursor,
                                                                 "security alert follower")):
                self._cursor = type(self._cursor)(int(record["seq"]), end)  # type: ignore[call-overload]
                kind = alert_of(record)
                if kind is not None:
                    raised += 1
                    self.counts[kind] += 1
                    try:
                        self._on_alert(kind, record)
                    except Exception:  # noqa: BLE001 - a bug in one listener must not stop the count
                        log.exception("security alert %s not published", kind.value)
                if number + 1 >= limit:
                    break
        return raised

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("pacsvault_security_alerts", "Security alerts recorded in the audit trail since "
                                     "the back office started, by kind", labels=["kind"])
        for kind in AlertKind:
            family.add_metric([kind.value], self.counts[kind])
        yield family
