"""pacsvault delete UID --reason TEXT [--level study|series|instance]: into the trash, then for good."""

from __future__ import annotations

import argparse
import sys

from pacsvault.client import PacsvaultClient
from pacsvault.client.cli import exit_codes


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("delete", help="delete a study, series or instance (admin): into the trash for "
                                           "[retention] soft_delete_days, then for good, here and at the peer")
    parser.add_argument("uid", metavar="UID", help="the Study Instance UID (or, with --level, a series' or an "
                                                   "instance's UID)")
    parser.add_argument("--level", choices=("study", "series", "instance"), default="study",
                        help="what UID names (series and instance: DICOM IOCM rejection); default study")
    parser.add_argument("--reason", required=True, help="why (kept in the audit trail), e.g. 'retention expired'")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            print("pacsvault: refusing to delete without --yes when not asked on a terminal", file=sys.stderr)
            return exit_codes.USAGE
        answer = input(f"delete {args.level} {args.uid}? type 'delete': ")
        if answer.strip() != "delete":
            print("nothing deleted")
            return exit_codes.OK  # the person said no: nothing failed
    if args.level == "study":
        response: object = client.delete_study(args.uid, args.reason)
    elif args.level == "series":
        response = client.delete_series(args.uid, args.reason)
    else:
        response = client.delete_instance(args.uid, args.reason)
    instances, destroyed = response.instances_deleted, response.blobs_destroyed  # type: ignore[attr-defined]
    if response.HasField("purge_time"):  # type: ignore[attr-defined]
        when = response.purge_time.ToDatetime().strftime("%Y-%m-%d %H:%M UTC")  # type: ignore[attr-defined]
        print(f"{args.level} {args.uid} moved to the trash: {instances} instances; purged for good (data keys "
              f"destroyed, the peer told) after {when}; until then `pacsvault undelete {args.uid}"
              f"{'' if args.level == 'study' else ' --level ' + args.level}` brings it back")
    else:
        print(f"{args.level} {args.uid} deleted: {instances} instances, {destroyed} blobs destroyed "
              "(data keys zeroed first)")
    return exit_codes.OK
