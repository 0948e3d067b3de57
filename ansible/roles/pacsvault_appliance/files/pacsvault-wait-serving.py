"""Waits until a pacsvaultd answers SERVING on grpc.health.v1.

Run with the daemon's venv Python (it has grpcio-health-checking):
    /opt/pacsvault/venv/bin/python pacsvault-wait-serving --server 127.0.0.1:50051 --timeout 60
Exit 0 once SERVING, 1 if the timeout passes first. Installed by the
pacsvault_appliance Ansible role, which runs it after every (re)start.
"""

from __future__ import annotations

import argparse
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051", metavar="HOST:PORT")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    last = "no answer yet"
    with grpc.insecure_channel(args.server) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    print(f"{args.server}: SERVING")
                    return 0
            except grpc.RpcError as exc:
                last = exc.code().name
            if time.monotonic() >= deadline:
                print(f"{args.server}: not SERVING after {args.timeout:.0f}s (last: {last})", file=sys.stderr)
                return 1
            time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
