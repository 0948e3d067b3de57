"""pacsvault delete STUDY_UID --reason TEXT: delete a study for good, here and at the peer."""

from __future__ import annotations

import argparse
import sys

from pacsvault.client import PacsvaultClient
from pacsvault.client.cli import exit_codes


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("delete", help="delete a study for good (admin): index, blobs and the peer's copy")
    parser.add_argument("study_instance_uid", metavar="STUDY_INSTANCE_UID")
    parser.add_argument("--reason", required=True, help="why (kept in the audit trail), e.g. 'retention expired'")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            print("pacsvault: refusing to delete without --yes when not asked on a terminal", file=sys.stderr)
            return exit_codes.USAGE
        answer = input(f"delete study {args.study_instance_uid} and every copy of its data? type 'delete': ")
        if answer.strip() != "delete":
            print("nothing deleted")
            return exit_codes.OK  # the person said no: nothing failed
    response = client.delete_study(args.study_instance_uid, args.reason)
    print(f"study {args.study_instance_uid} deleted: {response.instances_deleted} instances, "
          f"{response.blobs_destroyed} blobs destroyed (data keys zeroed first)")
    return 0
