"""pacsvault pin STUDY_UID --until YYYYMMDD: keep a study on the fastest tier."""

from __future__ import annotations

import argparse

from pacsvault.client import PacsvaultClient


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("pin", help="keep a study on the fastest tier until a date")
    parser.add_argument("study_instance_uid", metavar="STUDY_INSTANCE_UID")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--until", metavar="YYYYMMDD", help="last day of the pin")
    group.add_argument("--remove", action="store_true", help="remove the pin")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    response = client.pin(args.study_instance_uid, "" if args.remove else args.until)
    if response.pinned_until:
        print(f"study {response.study_instance_uid} stays on the fastest tier until {response.pinned_until}")
    else:
        print(f"study {response.study_instance_uid} is no longer pinned")
    return 0
