"""pacsvault undelete UID [--level ...] | --list: bring back what a delete put in the trash."""

from __future__ import annotations

import argparse
import json
import sys

from pacsvault.client import PacsvaultClient
from pacsvault.client.cli import exit_codes
from pacsvault.client.cli.output import as_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("undelete", help="bring back a deleted study, series or instance from the trash "
                                             "(admin); --list shows the trash")
    parser.add_argument("uid", metavar="UID", nargs="?", help="what the delete named")
    parser.add_argument("--level", choices=("study", "series", "instance"), default="study")
    parser.add_argument("--list", action="store_true", help="what waits in the trash, and when each is purged")
    parser.add_argument("--json", action="store_true", help="with --list: one JSON object per item")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    if args.list:
        return _list(args, client)
    if not args.uid:
        print("pacsvault: undelete: give the UID the delete named, or --list", file=sys.stderr)
        return exit_codes.USAGE
    names = {"study": "study_instance_uid", "series": "series_instance_uid", "instance": "sop_instance_uid"}
    response = client.undelete(**{names[args.level]: args.uid})
    print(f"{args.level} {args.uid} is back: {response.instances_restored} instances restored"
          + (f", {response.instances_superseded} stored again meanwhile (the newer kept)"
             if response.instances_superseded else ""))
    return exit_codes.OK


def _list(args: argparse.Namespace, client: PacsvaultClient) -> int:
    items = client.deleted_items()
    for item in items:
        if args.json:
            print(json.dumps(as_json(item)))
            continue
        purge = item.purge_time.ToDatetime().strftime("%Y-%m-%d %H:%M UTC")
        print(f"{item.level:8} {item.uid}  {item.instances} instances, deleted by {item.deleted_by or '?'}: "
              f"{item.reason}; purged after {purge}" + ("  (HELD: kept while under legal hold)" if item.held else ""))
    if not items and not args.json:
        print("the trash is empty")
    return exit_codes.OK
