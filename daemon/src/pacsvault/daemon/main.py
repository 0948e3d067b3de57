"""pacsvaultd: the daemon's entry point; the process model is in ``processes``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pacsvault.daemon import __version__, config as config_module
from pacsvault.daemon.errors import ConfigError, PacsvaultError
from pacsvault.daemon.health.collector import collect
from pacsvault.daemon.processes.supervisor import StartFailed, Supervisor

log = logging.getLogger("pacsvaultd")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pacsvaultd", description="pacsvault archive daemon")
    parser.add_argument("--config", type=Path, help="TOML config file (default: the embedded default config)")
    parser.add_argument("--listen", metavar="HOST:PORT", help="override server.listen (port 0 picks a free port)")
    parser.add_argument("--data-dir", metavar="DIR", help="override data_dir (index and default tiers)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="override server.workers: serving processes (0: one per core)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    parser.add_argument("--metrics-listen", metavar="HOST:PORT",
                        help="override metrics.listen (port 0 picks a free port)")
    parser.add_argument("--metrics-port-file", type=Path,
                        help="write the bound metrics port here (before --port-file is written)")
    parser.add_argument("--web-listen", metavar="HOST:PORT",
                        help="override web.listen: DICOMweb and the share page (port 0 picks a free port)")
    parser.add_argument("--web-port-file", type=Path,
                        help="write the bound DICOMweb port here (before --port-file is written)")
    parser.add_argument("--dicom-listen", metavar="HOST:PORT",
                        help="override dicom.listen, the DIMSE door (port 0 picks a free port)")
    parser.add_argument("--dicom-port-file", type=Path,
                        help="write the bound DICOM port here (before --port-file is written)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--collect-hardware", type=Path, metavar="DIR",
                        help="run smartctl / nvme-cli on every disk once, leave the results in DIR for a daemon "
                             "with health.collector_dir = DIR, and exit (needs root)")
    parser.add_argument("--rebuild-index", action="store_true",
                        help="rebuild the index from the blobs on every volume (the daemon must be stopped; the "
                             "old index is kept aside), report what could not be rebuilt, and exit")
    parser.add_argument("--version", action="version", version=f"pacsvaultd {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s [supervisor] %(name)s: %(message)s",
    )

    def load() -> config_module.Config:
        return config_module.load(args.config).with_overrides(
            listen=args.listen, data_dir=args.data_dir, metrics_listen=args.metrics_listen, workers=args.workers,
            web_listen=args.web_listen, dicom_listen=args.dicom_listen)

    try:
        config = load()
    except ConfigError as exc:
        # One line per problem: a person fixes them all in one go, a script greps one.
        for problem in exc.problems:
            print(f"pacsvaultd: configuration error: {problem}", file=sys.stderr)
        return 2
    if args.check_config:
        print("configuration is valid")
        return 0
    if args.collect_hardware is not None:
        return collect_hardware(config, args.collect_hardware)
    if args.rebuild_index:
        return rebuild(config)
    try:
        return Supervisor(config, args.port_file, args.metrics_port_file, args.log_level, load,
                          web_port_file=args.web_port_file, dicom_port_file=args.dicom_port_file).run()
    except StartFailed as exc:
        print(f"pacsvaultd: {exc}", file=sys.stderr)
        return exc.exit_code
    except ConfigError as exc:
        print(f"pacsvaultd: configuration error: {exc}", file=sys.stderr)
        return 2
    except PacsvaultError as exc:
        print(f"pacsvaultd: cannot start: {exc}", file=sys.stderr)
        return 1


def rebuild(config: config_module.Config) -> int:
    from pacsvault.daemon.integrity.rebuild import rebuild_index

    try:
        report = rebuild_index(config)
    except ConfigError as exc:
        print(f"pacsvaultd: --rebuild-index refused: {exc}", file=sys.stderr)
        return 2
    except PacsvaultError as exc:
        print(f"pacsvaultd: --rebuild-index failed: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 1 if report.not_rebuilt else 0


def collect_hardware(config: config_module.Config, folder: Path) -> int:
    try:
        done = collect(config, folder)
    except ConfigError as exc:
        print(f"pacsvaultd: {exc}", file=sys.stderr)
        return 2
    print(f"{done.disks} disks, {len(done.results)} tool results in {folder}"
          + (f", {len(done.removed)} results of disks gone removed" if done.removed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
