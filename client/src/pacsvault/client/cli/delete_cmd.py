"""pacsvault delete UID --reason TEXT [--level study|series|instance]: into the trash, then for good;
delete-requests and delete-approve ID where a second admin must approve a study's deletion."""

from __future__ import annotations

import argparse
import datetime
import json
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
    refused = _unconfirmed(args.yes, f"delete {args.level} {args.uid}?")
    if refused is not None:
        return refused
    if args.level == "study":
        study = client.delete_study(args.uid, args.reason)
        if study.approval_request_id:
            print(f"deletion of study {args.uid} requested ({study.approval_request_id}): nothing is "
                  f"deleted until another admin approves it within a day: pacsvault delete-approve "
                  f"{study.approval_request_id}")
            return exit_codes.OK
        response: object = study
    elif args.level == "series":
        response = client.delete_series(args.uid, args.reason)
    else:
        response = client.delete_instance(args.uid, args.reason)
    _print_deleted(f"{args.level} {args.uid}", args.level, args.uid, response)
    return exit_codes.OK


def _print_deleted(what: str, level: str, uid: str, response: object) -> None:
    instances, destroyed = response.instances_deleted, response.blobs_destroyed  # type: ignore[attr-defined]
    if response.HasField("purge_time"):  # type: ignore[attr-defined]
        when = response.purge_time.ToDatetime().strftime("%Y-%m-%d %H:%M UTC")  # type: ignore[attr-defined]
        print(f"{what} moved to the trash: {instances} instances; purged for good (data keys "
              f"destroyed, the peer told) after {when}; until then `pacsvault undelete {uid}"
              f"{'' if level == 'study' else ' --level ' + level}` brings it back")
    else:
        print(f"{what} deleted: {instances} instances, {destroyed} blobs destroyed "
              "(data keys zeroed first)")


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
    _print_deleted(f"study {response.study_instance_uid} (asked by {response.requested_by})", "study",
                   response.study_instance_uid, response)
    return 0
