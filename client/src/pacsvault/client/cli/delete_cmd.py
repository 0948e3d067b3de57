"""pacsvault delete STUDY_UID --reason TEXT: delete a study for good, here and at the peer;
delete-requests and delete-approve ID where a second admin must approve."""

from __future__ import annotations

import argparse
import datetime
import json
import sys

from pacsvault.client import PacsvaultClient
from pacsvault.client.cli import exit_codes


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("delete", help="delete a study for good (admin): index, blobs and the peer's copy")
    parser.add_argument("study_instance_uid", metavar="STUDY_INSTANCE_UID")
    parser.add_argument("--reason", required=True, help="why (kept in the audit trail), e.g. 'retention expired'")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.set_defaults(run=run)
    requests = sub.add_parser("delete-requests", help="deletions waiting for a second admin's approval")
    requests.add_argument("--json", action="store_true", help="one JSON object per request")
    requests.set_defaults(run=run_requests)
    approve = sub.add_parser("delete-approve", help="approve another admin's deletion request: the study goes now")
    approve.add_argument("request_id", metavar="REQUEST_ID")
    approve.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    approve.set_defaults(run=run_approve)


def _unconfirmed(yes: bool, question: str) -> int | None:
    """None when the deletion may go ahead, else the exit code."""
    if yes:
        return None
    if not sys.stdin.isatty():
        print("pacsvault: refusing to delete without --yes when not asked on a terminal", file=sys.stderr)
        return exit_codes.USAGE
    if input(f"{question} type 'delete': ").strip() != "delete":
        print("nothing deleted")
        return exit_codes.OK  # the person said no: nothing failed
    return None


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    refused = _unconfirmed(args.yes, f"delete study {args.study_instance_uid} and every copy of its data?")
    if refused is not None:
        return refused
    response = client.delete_study(args.study_instance_uid, args.reason)
    if response.approval_request_id:
        print(f"deletion of study {args.study_instance_uid} requested ({response.approval_request_id}): nothing is "
              f"deleted until another admin approves it within a day: pacsvault delete-approve "
              f"{response.approval_request_id}")
        return 0
    print(f"study {args.study_instance_uid} deleted: {response.instances_deleted} instances, "
          f"{response.blobs_destroyed} blobs destroyed (data keys zeroed first)")
    return 0


def run_requests(args: argparse.Namespace, client: PacsvaultClient) -> int:
    for r in client.study_deletion_requests():
        if args.json:
            print(json.dumps({"request_id": r.request_id, "study_instance_uid": r.study_instance_uid,
                              "reason": r.reason, "requested_by": r.requested_by, "requested_at": r.requested_at,
                              "expires_at": r.expires_at}))
        else:
            until = datetime.datetime.fromtimestamp(r.expires_at, datetime.UTC)
            print(f"{r.request_id}  study {r.study_instance_uid}  by {r.requested_by}  until {until:%Y-%m-%d %H:%M}Z"
                  f"  reason: {r.reason}")
    return 0


def run_approve(args: argparse.Namespace, client: PacsvaultClient) -> int:
    refused = _unconfirmed(args.yes, f"approve deletion request {args.request_id}: the study and every copy go?")
    if refused is not None:
        return refused
    response = client.approve_study_deletion(args.request_id)
    print(f"study {response.study_instance_uid} deleted (asked by {response.requested_by}): "
          f"{response.instances_deleted} instances, {response.blobs_destroyed} blobs destroyed "
          "(data keys zeroed first)")
    return 0
