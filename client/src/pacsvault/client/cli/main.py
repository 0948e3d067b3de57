"""pacsvault: the command line of integrators, field engineers and operators.

Every failure ends in one line on stderr and a documented exit code
(``exit_codes``), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import PackageNotFoundError, version

from pacsvault.client import PacsvaultClient, PacsvaultError, default_server
from pacsvault.client.cli import (
    audit_cmd,
    check_cmd,
    delete_cmd,
    exit_codes,
    find_cmd,
    get_cmd,
    health_cmd,
    hold_cmd,
    hw_cmd,
    keys_cmd,
    metadata_cmd,
    pin_cmd,
    prefetch_cmd,
    replication_cmd,
    restore_cmd,
    scrub_cmd,
    share_cmd,
    store_cmd,
    tiers_cmd,
    undelete_cmd,
)

COMMANDS = (store_cmd, find_cmd, get_cmd, metadata_cmd, prefetch_cmd, pin_cmd, delete_cmd, undelete_cmd, hold_cmd,
            tiers_cmd, replication_cmd, restore_cmd, scrub_cmd, check_cmd, share_cmd, audit_cmd, keys_cmd, health_cmd,
            hw_cmd)


def client_version() -> str:
    try:
        return version("pacsvault")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pacsvault", description="Client of a pacsvault appliance",
        epilog="exit codes: 0 done, 1 unhealthy, 2 usage, 3 not found, 4 permission denied, 5 unavailable, "
               "6 rejected input, 7 partial success, 8 data loss, 9 other failure, 130 interrupted")
    parser.add_argument("--version", action="version", version=f"pacsvault {client_version()}")
    parser.add_argument(
        "--server", default=None, metavar="HOST:PORT",
        help=f"appliance address (default: $PACSVAULT_SERVER, then {default_server()})",
    )
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="the longest wait for an answer: for a call, its whole duration; for streamed "
                             "answers (get, get-study, get-series, metadata, audit query), the wait for each "
                             "next piece, so a long transfer that keeps moving never times out (default 300)")
    parser.add_argument("--ca-file", help="CA of the appliance's TLS certificate (default $PACSVAULT_CA_FILE); "
                        "without it the connection is plaintext, which only a loopback appliance accepts")
    parser.add_argument("--cert-file", help="your client certificate (default $PACSVAULT_CERT_FILE)")
    parser.add_argument("--key-file", help="its key (default $PACSVAULT_KEY_FILE)")
    parser.add_argument("--token", help="a bearer or share token (default $PACSVAULT_TOKEN)")
    parser.add_argument("--pin", help="the PIN a share token asks for")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # usage errors: argparse prints them and exits 2
    target = args.server or default_server()
    try:
        with PacsvaultClient(target, timeout=args.timeout, ca_file=args.ca_file, cert_file=args.cert_file,
                             key_file=args.key_file, token=args.token, pin=args.pin) as client:
            return int(args.run(args, client))
    except PacsvaultError as error:
        return _fail(exit_codes.describe(error, target), exit_codes.for_error(error))
    except OSError as error:
        if isinstance(error, BrokenPipeError):
            # Output piped into head and the like: not an error of ours.
            _quiet_stdout()
            return exit_codes.OK
        return _fail(_local(error), exit_codes.REJECTED)
    except KeyboardInterrupt:
        return _fail("interrupted", exit_codes.INTERRUPTED)
    except Exception as error:  # noqa: BLE001 - the last resort: a bug of ours still ends in one line
        return _fail(f"unexpected {type(error).__name__}: {error} (a bug in pacsvault; please report it)",
                     exit_codes.FAILURE)


def _local(error: OSError) -> str:
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}"


def _fail(message: str, code: int) -> int:
    print(f"pacsvault: {message}", file=sys.stderr)
    return code


def _quiet_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
