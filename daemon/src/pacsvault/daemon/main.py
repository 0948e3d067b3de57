"""pacsvaultd: the daemon's entry point, its signals and its shutdown order."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from pacsvault.daemon import __version__, config as config_module
from pacsvault.daemon.archive import Archive
from pacsvault.daemon.errors import ConfigError, PacsvaultError
from pacsvault.daemon.server import create_server

log = logging.getLogger("pacsvaultd")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pacsvaultd", description="pacsvault archive daemon")
    parser.add_argument("--config", type=Path, help="TOML config file (default: the embedded default config)")
    parser.add_argument("--listen", metavar="HOST:PORT", help="override server.listen (port 0 picks a free port)")
    parser.add_argument("--data-dir", metavar="DIR", help="override data_dir (index and default tiers)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--version", action="version", version=f"pacsvaultd {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_module.load(args.config).with_overrides(listen=args.listen, data_dir=args.data_dir)
    except ConfigError as exc:
        print(f"pacsvaultd: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print("configuration is valid")
        return 0
    try:
        return serve(config, args.port_file)
    except ConfigError as exc:
        print(f"pacsvaultd: configuration error: {exc}", file=sys.stderr)
        return 2
    except PacsvaultError as exc:
        print(f"pacsvaultd: cannot start: {exc}", file=sys.stderr)
        return 1


def serve(config: config_module.Config, port_file: Path | None) -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    archive = Archive(config)
    try:
        served = create_server(config, archive)
        served.server.start()
        served.set_serving(True)
        host = config.server.listen.rpartition(":")[0]
        log.info("pacsvaultd %s serving on %s:%d, data in %s", __version__, host, served.port, config.resolve("."))
        if port_file is not None:
            _write_port_file(port_file, served.port)
        stop.wait()
        log.info("shutting down: no new calls, %.0fs for in-flight ones", config.server.shutdown_grace_s)
        served.shutdown(config.server.shutdown_grace_s)
    finally:
        archive.close()
    log.info("stopped")
    return 0


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
