"""The Prometheus endpoint: disk verdicts, SMART counters, volumes, RPCs, processes.

Built on the official ``prometheus-client``, served by the back office for
every process of the daemon: serving processes count their RPCs
(:class:`~pacsvault.daemon.service.rpc_metrics.RpcMetricsInterceptor`) in the
library's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, which the
supervisor sets for its children), and a scrape sums them. Health figures are
read from the monitor's current snapshot at scrape time (a custom collector),
so a scrape never runs smartctl. Everything lives in the daemon's own
registry, never the library's global one.

Families (``pacsvault_`` prefix):

* ``device_health{device,serial,model,transport,verdict}``: 1 for the
  disk's current verdict, 0 for the others (one series per verdict).
* ``md_array_health{array,level,verdict}``: the same for md arrays.
* ``disk_smart_value{device,serial,metric}``: every decoded counter
  (``ata.5``, ``nvme.media_errors``, ``temperature_c``, ...), plus named
  families for the counters that predict failure:
  ``disk_reallocated_sectors``, ``disk_pending_sectors``,
  ``disk_offline_uncorrectable``, ``disk_reported_uncorrectable``,
  ``disk_command_timeouts``, ``disk_udma_crc_errors``,
  ``disk_media_errors``, ``disk_percentage_used``,
  ``disk_available_spare_percent``, ``disk_grown_defects``,
  ``disk_temperature_celsius``.
* ``volume_capacity_bytes``, ``volume_used_bytes``, ``volume_free_bytes``,
  ``volume_accepts_writes``, ``volume_health{...,verdict}`` by
  ``tier``/``path``; ``appliance_accepts_writes``.
* ``health_polls_total``, ``health_poll_failures_total``,
  ``health_last_poll_timestamp_seconds``, ``health_poll_duration_seconds``,
  ``health_events_total{kind}``, ``health_events_dropped_total``,
  ``health_watchers``.
* ``security_alerts_total{kind}``: security alerts recorded in the audit trail
  (``audit.alert_follower``), since the back office started.
* ``rpc_requests_total{method,code}``, ``rpc_duration_seconds{method}``: summed
  over the serving processes.
* ``process_cpu_seconds_total{role,pid}``, ``process_resident_memory_bytes{role,pid}``:
  each process of the daemon (supervisor, back office, workers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from pathlib import Path

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from pacsvault.daemon.config import MetricsConfig, listen_is_loopback
from pacsvault.daemon.errors import ConfigError
from pacsvault.daemon.health import EventKind, HealthMonitor, HealthSnapshot
from pacsvault.daemon.service.rpc_metrics import RpcMetricsInterceptor
from pacsvault.hardware import Verdict

log = logging.getLogger(__name__)

NAMED_COUNTERS = {
    "ata.5": ("disk_reallocated_sectors", "ATA 5 Reallocated_Sector_Ct raw value"),
    "ata.197": ("disk_pending_sectors", "ATA 197 Current_Pending_Sector raw value"),
    "ata.198": ("disk_offline_uncorrectable", "ATA 198 Offline_Uncorrectable raw value"),
    "ata.187": ("disk_reported_uncorrectable", "ATA 187 Reported_Uncorrect raw value"),
    "ata.188": ("disk_command_timeouts", "ATA 188 Command_Timeout (Seagate packing decoded)"),
    "ata.199": ("disk_udma_crc_errors", "ATA 199 UDMA_CRC_Error_Count: cable / backplane errors"),
    "nvme.media_errors": ("disk_media_errors", "NVMe media and data integrity errors"),
    "nvme.percentage_used": ("disk_percentage_used", "NVMe percentage of rated life used"),
    "nvme.available_spare": ("disk_available_spare_percent", "NVMe available spare, percent"),
    "scsi.grown_defects": ("disk_grown_defects", "SAS grown defect list length"),
    "temperature_c": ("disk_temperature_celsius", "Current drive temperature"),
}
# Latency buckets for RPCs from a health check (sub-millisecond) to a study upload.
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class HealthCollector(Collector):
    """Reads the monitor's snapshot at scrape time."""

    def __init__(self, monitor: HealthMonitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        snapshot = self._monitor.snapshot()
        device_health = GaugeMetricFamily("pacsvault_device_health", "1 for the disk's current verdict",
                                          labels=["device", "serial", "model", "transport", "verdict"])
        smart = GaugeMetricFamily("pacsvault_disk_smart_value", "Decoded SMART / NVMe / SCSI counters",
                                  labels=["device", "serial", "metric"])
        named = {metric: GaugeMetricFamily(f"pacsvault_{name}", text, labels=["device", "serial"])
                 for metric, (name, text) in NAMED_COUNTERS.items()}
        for device in snapshot.devices:
            for verdict in Verdict:
                device_health.add_metric([device.node, device.serial, device.model, device.transport, verdict.value],
                                         1.0 if device.verdict is verdict else 0.0)
            for metric, value in sorted(device.metrics.items()):
                smart.add_metric([device.node, device.serial, metric], value)
                if metric in named:
                    named[metric].add_metric([device.node, device.serial], value)
        yield device_health
        yield smart
        yield from named.values()
        arrays = GaugeMetricFamily("pacsvault_md_array_health", "1 for the md array's current verdict",
                                   labels=["array", "level", "verdict"])
        for array in snapshot.arrays:
            for verdict in Verdict:
                arrays.add_metric([array.name, array.level, verdict.value], 1.0 if array.verdict is verdict else 0.0)
        yield arrays
        yield from self._volumes(snapshot)
        yield from self._monitoring()

    def _volumes(self, snapshot: HealthSnapshot) -> Iterator[Metric]:
        labels = ["tier", "path"]
        families = {name: GaugeMetricFamily(f"pacsvault_volume_{name}", text, labels=labels) for name, text in (
            ("capacity_bytes", "Size of the volume's filesystem"),
            ("used_bytes", "Used bytes of the volume's filesystem"),
            ("free_bytes", "Bytes available to the daemon on the volume's filesystem"),
            ("accepts_writes", "1 while new data may be placed on the volume"),
        )}
        health = GaugeMetricFamily("pacsvault_volume_health", "1 for the volume's current verdict",
                                   labels=[*labels, "verdict"])
        for v in snapshot.volumes:
            key = [v.tier, v.path]
            families["capacity_bytes"].add_metric(key, v.capacity_bytes)
            families["used_bytes"].add_metric(key, v.used_bytes)
            families["free_bytes"].add_metric(key, v.free_bytes)
            families["accepts_writes"].add_metric(key, 1.0 if v.accepts_writes else 0.0)
            for verdict in Verdict:
                health.add_metric([*key, verdict.value], 1.0 if v.verdict is verdict else 0.0)
        yield from families.values()
        yield health
        yield GaugeMetricFamily("pacsvault_appliance_accepts_writes", "1 while at least one volume takes new data",
                                value=1.0 if snapshot.writable else 0.0)
        polled = GaugeMetricFamily("pacsvault_health_last_poll_timestamp_seconds",
                                   "Unix time of the last finished disk health poll (absent before the first)")
        if snapshot.polled_at is not None:
            polled.add_metric([], snapshot.polled_at)
        yield polled

    def _monitoring(self) -> Iterator[Metric]:
        monitor = self._monitor
        yield CounterMetricFamily("pacsvault_health_polls", "Disk health polls run", value=monitor.polls_total)
        yield CounterMetricFamily("pacsvault_health_poll_failures", "Disk health polls that did not finish",
                                  value=monitor.poll_failures_total)
        yield GaugeMetricFamily("pacsvault_health_poll_duration_seconds", "Duration of the last disk health poll",
                                value=monitor.last_poll_duration_s)
        events = CounterMetricFamily("pacsvault_health_events", "Health events published", labels=["kind"])
        for kind in EventKind:
            events.add_metric([kind.value], monitor.events_total[kind])
        yield events
        yield CounterMetricFamily("pacsvault_health_events_dropped", "Events dropped for slow WatchHealth streams",
                                  value=monitor.events_dropped_total)
        yield GaugeMetricFamily("pacsvault_health_watchers", "Open WatchHealth streams", value=monitor.watchers)


@dataclass
class MetricsServer:
    """A running ``/metrics`` listener; ``port`` is the bound one (port 0 resolved)."""

    httpd: WSGIServer
    host: str
    port: int

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def rpc_metrics_interceptor() -> RpcMetricsInterceptor:
    """A serving process's RPC counters (written to the multiprocess files the back office sums)."""
    registry = CollectorRegistry()
    requests = Counter("pacsvault_rpc_requests", "gRPC calls by method and status code",
                       ["method", "code"], registry=registry)
    duration = Histogram("pacsvault_rpc_duration_seconds", "gRPC call duration by method (streams: whole stream)",
                         ["method"], buckets=RPC_BUCKETS, registry=registry)
    return RpcMetricsInterceptor(requests, duration)


class ProcessesCollector(Collector):
    """CPU and memory of every process of the daemon, read at scrape time.

    Args:
        processes: The daemon's processes now, as (role, pid).
    """

    def __init__(self, processes: Callable[[], list[tuple[str, int]]]) -> None:
        self._processes = processes

    def collect(self) -> Iterator[Metric]:
        cpu = CounterMetricFamily("pacsvault_process_cpu_seconds", "CPU time of each process of the daemon",
                                  labels=["role", "pid"])
        memory = GaugeMetricFamily("pacsvault_process_resident_memory_bytes", "Resident memory of each process",
                                   labels=["role", "pid"])
        for role, pid in self._processes():
            try:
                process = psutil.Process(pid)
                times, rss = process.cpu_times(), process.memory_info().rss
            except psutil.Error:
                continue  # exited since it was listed
            cpu.add_metric([role, str(pid)], times.user + times.system)
            memory.add_metric([role, str(pid)], rss)
        yield cpu
        yield memory


class DaemonMetrics:
    """The daemon's registry, served by the back office: every process's RPC metrics, health, processes.

    Args:
        monitor: Source of the health figures.
        multiprocess_dir: Where the serving processes keep their counters.
        processes: The daemon's processes now, as (role, pid).
    """

    def __init__(self, monitor: HealthMonitor, multiprocess_dir: Path,
                 processes: Callable[[], list[tuple[str, int]]], extra: Sequence[Collector] = ()) -> None:
        """``extra``: more of the back office's own collectors (the security alert counts)."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(HealthCollector(monitor))
        for collector in extra:
            self.registry.register(collector)
        MultiProcessCollector(self.registry, str(multiprocess_dir))
        self.registry.register(ProcessesCollector(processes))
        ProcessCollector(registry=self.registry)  # the back office's own, as process_* (the exporter convention)
        PlatformCollector(registry=self.registry)

    def serve(self, config: MetricsConfig) -> MetricsServer:
        """Start the HTTP listener in a daemon thread.

        Raises:
            ConfigError: The address is not loopback, or cannot be bound.
        """
        if not listen_is_loopback(config.listen):
            # The same rule as server.listen: no plaintext listener off the machine.
            raise ConfigError(
                f"metrics.listen {config.listen!r} is not a loopback address; this version serves "
                "plaintext only (scrape through a local agent or a TLS-terminating proxy)")
        host, _, port = config.listen.rpartition(":")
        host = host.strip("[]")
        try:
            httpd, _thread = start_http_server(int(port), addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"metrics.listen: cannot bind {config.listen}: {exc.strerror or exc}") from exc
        return MetricsServer(httpd, host, int(httpd.server_port))
