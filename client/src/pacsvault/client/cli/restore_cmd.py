"""pacsvault restore --from-peer: rebuild this appliance from its peer."""

from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

from pacsvault.client import PacsvaultClient


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("restore", help="rebuild this appliance (index and blobs) from its peer")
    parser.add_argument("--from-peer", action="store_true", required=True,
                        help="the peer appliance is the source (the only source there is)")
    parser.add_argument("--json", action="store_true", help="progress as JSON lines")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    bar = tqdm(unit="inst", disable=args.json or not sys.stderr.isatty(), file=sys.stderr)
    last = None
    for progress in client.restore_from_peer():
        last = progress
        if args.json:
            print(json.dumps({"total": progress.instances_total, "restored": progress.instances_done,
                              "already_present": progress.instances_already_present,
                              "failed": progress.instances_failed, "bytes": progress.bytes_restored}), flush=True)
        bar.total = progress.instances_total
        bar.n = progress.instances_done + progress.instances_already_present + progress.instances_failed
        bar.refresh()
    bar.close()
    if last is None:
        print("the peer holds nothing for this appliance", file=sys.stderr)
        return 0
    print(f"restored {last.instances_done} instances ({last.bytes_restored} bytes), "
          f"{last.instances_already_present} already here, {last.instances_failed} failed", file=sys.stderr)
    return 1 if last.instances_failed else 0
