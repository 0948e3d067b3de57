"""What the serving processes count: calls, stores, reads, security alerts.

Each serving process updates these in prometheus_client's multiprocess files
(``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor), and the back office's
``/metrics`` sums them over every process (``metrics.DaemonMetrics``). Only
counters and histograms live here: they add up across processes, gauges
would not. Names and labels follow the conventions dashboards already know:
go-grpc-prometheus's ``grpc_server_*`` with ``grpc_type`` / ``grpc_service``
/ ``grpc_method`` / ``grpc_code``, and promhttp's ``handler`` / ``method`` /
``code`` for HTTP. No label ever carries a UID, a patient ID or a name.

``MeteredIngest`` and ``MeteredRetrieval`` are the use cases with counting
added, built by the worker's composition root in their place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from pacsvault.daemon import errors
from pacsvault.daemon.digest import Digest
from pacsvault.daemon.index.catalog import AddOutcome
from pacsvault.daemon.index.records import BlobRecord, InstanceRecord
from pacsvault.daemon.ingest import Ingest, StoreResult
from pacsvault.daemon.retrieval import Retrieval

# From a health check (sub-millisecond) to a study streamed over a slow link.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# One instance stored: parse, digest, seal, write and the group commit.
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Instruments:
    grpc_started: Counter
    grpc_handled: Counter
    grpc_handling_seconds: Histogram
    http_requests: Counter
    http_request_seconds: Histogram
    ingest_instances: Counter
    ingest_bytes: Counter
    ingest_seconds: Histogram
    retrieval_instances: Counter
    retrieval_bytes: Counter


def instruments() -> Instruments:
    """One serving process's instruments, in a registry of their own (never the library's global one)."""
    registry = CollectorRegistry()
    grpc_labels = ["grpc_type", "grpc_service", "grpc_method"]
    return Instruments(
        grpc_started=Counter("grpc_server_started", "gRPC calls started on the server", grpc_labels,
                             registry=registry),
        grpc_handled=Counter("grpc_server_handled", "gRPC calls completed on the server, by status code",
                             [*grpc_labels, "grpc_code"], registry=registry),
        grpc_handling_seconds=Histogram(
            "grpc_server_handling_seconds", "Time from a gRPC call's start to its end (streams: the whole stream)",
            grpc_labels, buckets=LATENCY_BUCKETS, registry=registry),
        http_requests=Counter("pacsvault_http_requests", "DICOMweb and share-page requests, by route and status",
                              ["handler", "method", "code"], registry=registry),
        http_request_seconds=Histogram(
            "pacsvault_http_request_duration_seconds", "DICOMweb and share-page requests (streamed answers whole)",
            ["handler", "method"], buckets=LATENCY_BUCKETS, registry=registry),
        ingest_instances=Counter("pacsvault_ingest_instances", "Instances offered for storage, by outcome",
                                 ["outcome", "source"], registry=registry),
        ingest_bytes=Counter("pacsvault_ingest_bytes", "Bytes of newly stored instances (as received)",
                             ["source"], registry=registry),
        ingest_seconds=Histogram("pacsvault_ingest_duration_seconds", "Time to store one instance, durably",
                                 ["source"], buckets=STORE_BUCKETS, registry=registry),
        retrieval_instances=Counter("pacsvault_retrieval_instances",
                                    "Instances read for a caller, checked against their digest, by outcome",
                                    ["outcome"], registry=registry),
        retrieval_bytes=Counter("pacsvault_retrieval_bytes", "Bytes of instances read and verified",
                                registry=registry),
    )


def outcome_of(exc: BaseException) -> str:
    """A refusal's label: the exception's kind in snake case (not_found, data_loss, ...), never its text."""
    if not isinstance(exc, errors.PacsvaultError):
        return "error"
    name = type(exc).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


class MeteredIngest(Ingest):
    """Ingest, counting each instance offered by outcome (stored, duplicate, or why refused)."""

    def __init__(self, meters: Instruments, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._meters = meters

    def store(self, data: bytes | bytearray, expected: Digest | None = None,
              still_wanted: Callable[[], bool] = lambda: True, from_peer: bool = False,
              replica: Digest | None = None, claimed: tuple[str, str] | None = None) -> StoreResult:
        # Only the DIMSE door claims a SOP class and instance before the bytes are parsed.
        source = "peer" if from_peer else "dimse" if claimed is not None else "client"
        started = time.perf_counter()
        try:
            result = super().store(data, expected, still_wanted, from_peer, replica, claimed)
        except Exception as exc:
            self._meters.ingest_instances.labels(outcome_of(exc), source).inc()
            raise
        self._meters.ingest_instances.labels(result.outcome.value, source).inc()
        self._meters.ingest_seconds.labels(source).observe(time.perf_counter() - started)
        if result.outcome is AddOutcome.STORED:
            self._meters.ingest_bytes.labels(source).inc(len(data))
        return result


class MeteredRetrieval(Retrieval):
    """Retrieval, counting each instance read (and verified) by outcome."""

    def __init__(self, meters: Instruments, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._meters = meters

    def read(self, instance: InstanceRecord, blob: BlobRecord) -> bytes:
        try:
            data = super().read(instance, blob)
        except Exception as exc:
            self._meters.retrieval_instances.labels(outcome_of(exc)).inc()
            raise
        self._meters.retrieval_instances.labels("ok").inc()
        self._meters.retrieval_bytes.inc(len(data))
        return data
