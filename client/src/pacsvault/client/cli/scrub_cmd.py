"""pacsvault scrub status|start: the appliance's own scrub of every blob on every tier."""

from __future__ import annotations

import argparse
import json

from pacsvault.client import PacsvaultClient
from pacsvault.client.cli import exit_codes
from pacsvault.client.cli.output import as_json
from pacsvault.client.units import human_bytes
from pacsvault.v1 import integrity_pb2


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("scrub", help="the local scrub: every blob read back and verified (status, start)")
    actions = parser.add_subparsers(dest="scrub_action", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="progress, last full pass, found / repaired / unrepairable")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=run_status)
    start = actions.add_parser("start", help="start a pass now (one under way goes on)")
    start.set_defaults(run=run_start)


def run_status(args: argparse.Namespace, client: PacsvaultClient) -> int:
    s = client.scrub_status()
    if args.json:
        print(json.dumps(as_json(s)))
    else:
        _print_status(s)
    return exit_codes.UNHEALTHY if s.problems else exit_codes.OK


def _print_status(s: integrity_pb2.GetScrubStatusResponse) -> None:
    if s.state == "scrubbing":
        share = 100.0 * s.pass_blobs_checked / s.blobs_indexed if s.blobs_indexed else 100.0
        print(f"scrub: scrubbing, {share:.0f}% of this pass ({s.pass_blobs_checked} of {s.blobs_indexed} blobs, "
              f"{human_bytes(s.pass_bytes_checked)}), started {_when(s.pass_started)}")
    else:
        print(f"scrub: {s.state}" + (f", next pass {_when(s.next_pass)}" if s.HasField("next_pass") else ""))
    last = _when(s.last_full_pass) if s.HasField("last_full_pass") else "never"
    print(f"  last full pass: {last}; {s.passes_completed} passes; at most "
          f"{human_bytes(s.max_bytes_per_second)}/s, a pass every {s.interval_seconds / 86400:g} days")
    print(f"  found {s.found}, repaired {s.repaired}, unrepairable {s.unrepairable}")
    for p in s.problems:
        print(f"  NOT REPAIRED: {p.kind} blob of instance {', '.join(p.sop_instance_uids) or '(none live)'} of "
              f"study {p.study_instance_uid or '(unknown)'} (tier {p.tier}), found {_when(p.found)}: {p.reason}")


def _when(stamp: object) -> str:
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")  # type: ignore[attr-defined, no-any-return]


def run_start(args: argparse.Namespace, client: PacsvaultClient) -> int:
    started = client.start_scrub()
    print("scrub pass started; follow it with `pacsvault scrub status`" if started
          else "a scrub pass is under way already; it goes on (`pacsvault scrub status`)")
    return exit_codes.OK
