"""pacsvault health: the appliance's state, worst news first; --watch follows it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from google.protobuf.message import Message

from pacsvault.client import Cancelled, PacsvaultClient, PacsvaultError
from pacsvault.client.cli import ctrl_c, exit_codes, health_table
from pacsvault.client.cli.output import as_json as message_json
from pacsvault.v1 import appliance_pb2

# Enum fields printed as plain lower-case words in --json.
_ENUM_PREFIXES = {"state": "HEALTH_STATE_", "verdict": "VERDICT_", "old_verdict": "VERDICT_",
                  "new_verdict": "VERDICT_", "kind": "HEALTH_EVENT_KIND_"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("health", help="appliance health: overall state, then what is not healthy")
    parser.add_argument("--json", action="store_true", help="the whole report as one JSON object (--watch: one a line)")
    parser.add_argument("--watch", action="store_true",
                        help="the current state, then every health event as it happens (Ctrl-C ends)")
    parser.add_argument("--all", action="store_true", help="also list every reason of healthy disks")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    if args.watch:
        return _watch(args, client)
    report = client.health()  # first: an unreachable appliance fails here, once
    try:
        serving = client.serving_status()
    except PacsvaultError as exc:
        serving = f"unknown ({exc.code().name})"
    if args.json:
        body = as_json(report)
        body["serving"] = serving
        print(json.dumps(body, indent=1))
    else:
        print(health_table.render(report, serving, show_all=args.all))
    return exit_codes.OK if report.state == appliance_pb2.HEALTH_STATE_HEALTHY else exit_codes.UNHEALTHY


def as_json(message: Message) -> dict[str, Any]:
    """Proto to JSON: field names as in the .proto, counts as numbers, enums as plain words."""
    return message_json(message, _ENUM_PREFIXES)


def _watch(args: argparse.Namespace, client: PacsvaultClient) -> int:
    stream = client.watch_health()
    with ctrl_c.cancels(stream) as interrupted:
        try:
            for message in stream:
                _show(args, message)
        except Cancelled:
            pass
    return exit_codes.INTERRUPTED if interrupted.is_set() else exit_codes.OK


def _show(args: argparse.Namespace, message: appliance_pb2.WatchHealthResponse) -> None:
    if message.HasField("snapshot"):
        if args.json:
            print(json.dumps({"snapshot": as_json(message.snapshot),
                              "dropped_events": message.dropped_events}), flush=True)
        else:
            if message.dropped_events:
                print(f"({message.dropped_events} events missed; current state follows)")
            print(health_table.render(message.snapshot, "", show_all=args.all), flush=True)
    elif args.json:
        print(json.dumps({"event": as_json(message.event)}), flush=True)
    else:
        print(health_table.event_line(message.event), flush=True)
