"""pacsvault hold add|remove|list: legal holds no delete passes, here or at the peer."""

from __future__ import annotations

import argparse
import json

from pacsvault.client import PacsvaultClient
from pacsvault.client.cli import exit_codes
from pacsvault.client.cli.output import as_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("hold", help="legal holds (admin): add, remove, list")
    actions = parser.add_subparsers(dest="hold_action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="hold a study: no delete passes it, here or at the peer")
    add.add_argument("study_instance_uid", metavar="STUDY_UID")
    add.add_argument("--reason", required=True, help="why (a litigation, an investigation); kept in the audit trail")
    add.set_defaults(run=run_add)
    remove = actions.add_parser("remove", help="lift a study's hold")
    remove.add_argument("study_instance_uid", metavar="STUDY_UID")
    remove.add_argument("--reason", required=True, help="why it is lifted; kept in the audit trail")
    remove.set_defaults(run=run_remove)
    listing = actions.add_parser("list", help="every legal hold")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=run_list)


def run_add(args: argparse.Namespace, client: PacsvaultClient) -> int:
    hold = client.add_legal_hold(args.study_instance_uid, args.reason)
    print(f"study {hold.study_instance_uid} is under legal hold: {hold.reason}")
    return exit_codes.OK


def run_remove(args: argparse.Namespace, client: PacsvaultClient) -> int:
    client.remove_legal_hold(args.study_instance_uid, args.reason)
    print(f"study {args.study_instance_uid}: legal hold lifted")
    return exit_codes.OK


def run_list(args: argparse.Namespace, client: PacsvaultClient) -> int:
    holds = client.legal_holds()
    for hold in holds:
        if args.json:
            print(json.dumps(as_json(hold)))
        else:
            placed = hold.placed.ToDatetime().strftime("%Y-%m-%d %H:%M UTC")
            print(f"{hold.study_instance_uid}  held since {placed} by {hold.placed_by or '?'}: {hold.reason}")
    if not holds and not args.json:
        print("no legal holds")
    return exit_codes.OK
