"""pacsvault: the command line of integrators, field engineers and operators."""

from __future__ import annotations

import argparse
import sys

import grpc

from pacsvault.client import PacsvaultClient, default_server
from pacsvault.client.cli import (
    audit_cmd,
    delete_cmd,
    find_cmd,
    get_cmd,
    health_cmd,
    hw_cmd,
    keys_cmd,
    metadata_cmd,
    pin_cmd,
    prefetch_cmd,
    replication_cmd,
    restore_cmd,
    share_cmd,
    store_cmd,
    tiers_cmd,
)

COMMANDS = (store_cmd, find_cmd, get_cmd, metadata_cmd, prefetch_cmd, pin_cmd, delete_cmd, tiers_cmd,
            replication_cmd, restore_cmd, share_cmd, audit_cmd, keys_cmd, health_cmd, hw_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacsvault", description="Client of a pacsvault appliance")
    parser.add_argument(
        "--server", default=None, metavar="HOST:PORT",
        help=f"appliance address (default: $PACSVAULT_SERVER, then {default_server()})",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per call (default 300)")
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
    args = build_parser().parse_args(argv)
    with PacsvaultClient(args.server, timeout=args.timeout, ca_file=args.ca_file, cert_file=args.cert_file,
                         key_file=args.key_file, token=args.token, pin=args.pin) as client:
        try:
            return int(args.run(args, client))
        except grpc.RpcError as exc:
            print(f"pacsvault: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:
            # Output piped into head and the like: not an error of ours.
            sys.stderr.close()
            return 0


if __name__ == "__main__":
    sys.exit(main())
