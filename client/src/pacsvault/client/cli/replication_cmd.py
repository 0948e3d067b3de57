"""pacsvault replication status|reseed: the recovery point and the peer."""

from __future__ import annotations

import argparse
import json

from google.protobuf.json_format import MessageToDict

from pacsvault.client import PacsvaultClient
from pacsvault.client.units import human_bytes


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("replication", help="site replication: status, reseed")
    actions = parser.add_subparsers(dest="replication_action", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="peer state, backlog and recovery point (RPO)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=run_status)
    reseed = actions.add_parser("reseed", help="send every instance again (a new, empty peer)")
    reseed.set_defaults(run=run_reseed)


def run_status(args: argparse.Namespace, client: PacsvaultClient) -> int:
    s = client.replication_status()
    if args.json:
        body = MessageToDict(s, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        for key in ("pending_entries", "pending_bytes", "blobs_replicated", "bytes_replicated", "repairs"):
            body[key] = int(body[key])
        body["oldest_pending_age_s"] = body.pop("oldest_pending_age_seconds")
        print(json.dumps(body))
        return 0
    if not s.enabled:
        print("replication: disabled on this appliance")
        return 0
    late = s.oldest_pending_age_seconds > s.rpo_warning_seconds
    print(f"replication {s.appliance} -> {s.peer} ({s.peer_address}): {s.state}")
    print(f"  pending: {s.pending_entries} entries, {human_bytes(s.pending_bytes)}; oldest "
          f"{s.oldest_pending_age_seconds:.1f}s{'  ! past the RPO warning' if late else ''} "
          f"(warning at {s.rpo_warning_seconds:.0f}s)")
    print(f"  sent: {s.blobs_replicated} blobs, {human_bytes(s.bytes_replicated)}, "
          f"last pass {human_bytes(int(s.bytes_per_second))}/s; repairs from the peer: {s.repairs}")
    if s.last_error:
        print(f"  last error: {s.last_error}")
    return 1 if late else 0


def run_reseed(args: argparse.Namespace, client: PacsvaultClient) -> int:
    print(f"{client.reseed_peer()} instances queued for the peer")
    return 0
