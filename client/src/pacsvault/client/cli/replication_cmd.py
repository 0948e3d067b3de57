"""pacsvault replication status|reseed: the recovery point and the peer."""

from __future__ import annotations

import argparse
import json
import sys

from pacsvault.client import PacsvaultClient
from pacsvault.client.cli import exit_codes
from pacsvault.client.cli.output import add_wait_flags, as_json, follow, progress_bar, should_wait
from pacsvault.client.units import human_bytes

NOT_ENABLED = ("replication is not enabled on this appliance ([replication] enabled = false in its config), "
               "so it has no peer to {what}")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("replication", help="site replication: status, reseed")
    actions = parser.add_subparsers(dest="replication_action", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="peer state, backlog and recovery point (RPO)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=run_status)
    reseed = actions.add_parser("reseed", help="send every instance again (a new, empty peer)")
    add_wait_flags(reseed, "the backlog")
    reseed.set_defaults(run=run_reseed)


def run_status(args: argparse.Namespace, client: PacsvaultClient) -> int:
    s = client.replication_status()
    if args.json:
        body = as_json(s)
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
    return exit_codes.UNHEALTHY if late else exit_codes.OK


def run_reseed(args: argparse.Namespace, client: PacsvaultClient) -> int:
    if not client.replication_status().enabled:
        print(f"pacsvault: {NOT_ENABLED.format(what='send to')}", file=sys.stderr)
        return exit_codes.REJECTED
    queued = client.reseed_peer()
    print(f"{queued} instances queued for the peer")
    if not should_wait(args):
        return exit_codes.OK

    def left() -> tuple[int, bool, str]:
        s = client.replication_status()
        return s.pending_entries, s.pending_entries == 0, s.state

    bar = progress_bar(queued, "inst", desc="reseed")
    try:
        follow(bar, left)
    except KeyboardInterrupt:
        bar.close()
        print("stopped following; the peer keeps receiving (`pacsvault replication status` shows it)",
              file=sys.stderr)
        return exit_codes.INTERRUPTED
    bar.close()
    print("the peer holds everything again", file=sys.stderr)
    return exit_codes.OK
