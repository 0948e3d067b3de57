"""pacsvault health: the appliance's state, worst news first; --watch follows it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from pacsvault.client import PacsvaultClient
from pacsvault.client.cli import health_table
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
    try:
        serving = client.serving_status()
    except grpc.RpcError as exc:
        serving = f"unreachable ({exc.code().name})"
    report = client.health()
    if args.json:
        body = as_json(report)
        body["serving"] = serving
        print(json.dumps(body, indent=1))
    else:
        print(health_table.render(report, serving, show_all=args.all))
    return 0 if report.state == appliance_pb2.HEALTH_STATE_HEALTHY else 1


def as_json(message: Message) -> dict[str, Any]:
    """Proto to JSON with field names as in the .proto and enums as plain words."""
    body = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return _plain_enums(body)  # type: ignore[no-any-return]


def _plain_enums(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _plain_enums(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_enums(v, key) for v in value]
    if isinstance(value, str) and key in _ENUM_PREFIXES:
        return value.removeprefix(_ENUM_PREFIXES[key]).lower()
    return value


def _watch(args: argparse.Namespace, client: PacsvaultClient) -> int:
    stream = client.watch_health()
    try:
        for message in stream:
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
    except KeyboardInterrupt:
        stream.cancel()
        return 130
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.CANCELLED:
            return 0
        print(f"pacsvault: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    return 0
