"""pacsvaultd: the daemon's entry point, its signals and its shutdown order."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from pacsvault.daemon import __version__, config as config_module
from pacsvault.daemon.archive import Archive
from pacsvault.daemon.audit.exporter import build_scheduler
from pacsvault.daemon.errors import ConfigError, PacsvaultError
from pacsvault.daemon.health import build_monitor
from pacsvault.daemon.health.collector import collect
from pacsvault.daemon.metrics import DaemonMetrics
from pacsvault.daemon.server import create_server
from pacsvault.daemon.tiering.scheduler import TieringScheduler

log = logging.getLogger("pacsvaultd")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pacsvaultd", description="pacsvault archive daemon")
    parser.add_argument("--config", type=Path, help="TOML config file (default: the embedded default config)")
    parser.add_argument("--listen", metavar="HOST:PORT", help="override server.listen (port 0 picks a free port)")
    parser.add_argument("--data-dir", metavar="DIR", help="override data_dir (index and default tiers)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    parser.add_argument("--metrics-listen", metavar="HOST:PORT",
                        help="override metrics.listen (port 0 picks a free port)")
    parser.add_argument("--metrics-port-file", type=Path,
                        help="write the bound metrics port here (before --port-file is written)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--collect-hardware", type=Path, metavar="DIR",
                        help="run smartctl / nvme-cli on every disk once, leave the results in DIR for a daemon "
                             "with health.collector_dir = DIR, and exit (needs root)")
    parser.add_argument("--version", action="version", version=f"pacsvaultd {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_module.load(args.config).with_overrides(
            listen=args.listen, data_dir=args.data_dir, metrics_listen=args.metrics_listen)
    except ConfigError as exc:
        print(f"pacsvaultd: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print("configuration is valid")
        return 0
    if args.collect_hardware is not None:
        return collect_hardware(config, args.collect_hardware)
    try:
        return serve(config, args.port_file, reload=lambda: config_module.load(args.config).with_overrides(
            listen=args.listen, data_dir=args.data_dir, metrics_listen=args.metrics_listen),
            metrics_port_file=args.metrics_port_file)
    except ConfigError as exc:
        print(f"pacsvaultd: configuration error: {exc}", file=sys.stderr)
        return 2
    except PacsvaultError as exc:
        print(f"pacsvaultd: cannot start: {exc}", file=sys.stderr)
        return 1


def collect_hardware(config: config_module.Config, folder: Path) -> int:
    try:
        done = collect(config, folder)
    except ConfigError as exc:
        print(f"pacsvaultd: {exc}", file=sys.stderr)
        return 2
    print(f"{done.disks} disks, {len(done.results)} tool results in {folder}"
          + (f", {len(done.removed)} results of disks gone removed" if done.removed else ""))
    return 0


def serve(config: config_module.Config, port_file: Path | None,
          reload: Callable[[], config_module.Config] | None = None, metrics_port_file: Path | None = None) -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    archive = Archive(config)
    background = TieringScheduler(archive.tiering)
    atna = build_scheduler(config, archive.audit)  # IHE ATNA export of the audit trail
    monitor = build_monitor(config, lambda: archive.blobs.volumes)
    metrics = DaemonMetrics(monitor) if config.metrics.enabled else None
    metrics_server = None
    if reload is not None:
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(
            target=_reload_volumes, args=(archive, reload), name="sighup").start())
    try:
        served = create_server(config, archive, monitor, [metrics.interceptor] if metrics else [])
        metrics_server = metrics.serve(config.metrics) if metrics else None
        monitor.on_writable = served.set_writable
        served.server.start()
        monitor.start()  # measures the volumes before the first SERVING
        served.set_serving(True)
        host = config.server.listen.rpartition(":")[0]
        log.info("pacsvaultd %s serving on %s:%d, data in %s", __version__, host, served.port, config.resolve("."))
        if metrics_server is not None:
            log.info("metrics on http://%s:%d/metrics", config.metrics.listen.rpartition(":")[0], metrics_server.port)
            if metrics_port_file is not None:
                _write_port_file(metrics_port_file, metrics_server.port)
        background.start()
        atna.start()
        if archive.replication is not None:
            archive.replication.start()
        if port_file is not None:
            _write_port_file(port_file, served.port)
        stop.wait()
        log.info("shutting down: no new calls, %.0fs for in-flight ones", config.server.shutdown_grace_s)
        monitor.stop()  # ends WatchHealth streams, so the drain does not wait for them
        served.shutdown(config.server.shutdown_grace_s)
        background.stop()
    finally:
        atna.stop()  # before the trail closes; what it had not sent goes at the next start
        monitor.stop()
        monitor.join()
        if metrics_server is not None:
            metrics_server.close()
        archive.close()
    log.info("stopped")
    return 0


def _reload_volumes(archive: Archive, reload: Callable[[], config_module.Config]) -> None:
    """SIGHUP: takes volumes newly listed in the config file into use; other changes need a restart."""
    try:
        fresh = reload()
    except ConfigError as exc:
        log.error("SIGHUP: config not reloaded: %s", exc)
        return
    known = {v.path for v in archive.blobs.volumes}
    for tier in fresh.tiers:
        for path in tier.volumes:
            resolved = str(fresh.resolve(path))
            if resolved not in known:
                try:
                    archive.tiering.add_volume(tier.name, resolved)
                except PacsvaultError as exc:
                    log.error("SIGHUP: volume %s not added: %s", resolved, exc)
    log.info("SIGHUP: volumes reloaded; changes to other settings take effect at the next restart")


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
