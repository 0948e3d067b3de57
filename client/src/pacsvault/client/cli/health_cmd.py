"""pacsvault health: the appliance's state, worst news first."""

from __future__ import annotations

import argparse
import json

import grpc
from google.protobuf.json_format import MessageToDict

from pacsvault.client import PacsvaultClient
from pacsvault.v1 import appliance_pb2


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("health", help="appliance health: overall state, then what is not healthy")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def _state(value: int) -> str:
    return appliance_pb2.HealthState.Name(value).removeprefix("HEALTH_STATE_").lower()


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    try:
        serving = client.serving_status()
    except grpc.RpcError as exc:
        serving = f"unreachable ({exc.code().name})"
    report = client.health()
    if args.json:
        body = MessageToDict(report, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        body["state"] = _state(report.state)
        for volume in body["volumes"]:
            volume["state"] = volume["state"].removeprefix("HEALTH_STATE_").lower()
        body["serving"] = serving
        print(json.dumps(body, indent=1))
        return 0 if report.state == appliance_pb2.HEALTH_STATE_HEALTHY else 1
    print(f"state: {_state(report.state).upper()}   (grpc.health.v1: {serving}, version {report.version})")
    for reason in report.reasons:
        print(f"  ! {reason}")
    i = report.index
    print(f"index: {i.patients} patients, {i.studies} studies, {i.series} series, {i.instances} instances, "
          f"{_size(i.stored_bytes)} stored; map {_size(i.map_used_bytes)} of {_size(i.map_size_bytes)}")
    print("volumes:")
    for v in sorted(report.volumes, key=lambda v: -v.state):
        print(f"  {_state(v.state):8} {v.tier:10} {v.path}  {_size(v.free_bytes)} free of {_size(v.capacity_bytes)}"
              + (f"  ({v.reason})" if v.reason else ""))
    return 0 if report.state == appliance_pb2.HEALTH_STATE_HEALTHY else 1


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{n} B"
