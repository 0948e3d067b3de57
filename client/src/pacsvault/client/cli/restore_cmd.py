"""pacsvault restore --from-peer: rebuild this appliance from its peer.

Run it again after an interruption and it continues. On an appliance
without replication there is no peer: the command says so (whether the
daemon answers FAILED_PRECONDITION or, before it did, UNAVAILABLE) and
exits 6.
"""

from __future__ import annotations

import argparse
import json
import sys

from pacsvault.client import FailedPrecondition, PacsvaultClient, Unavailable
from pacsvault.client.cli import exit_codes
from pacsvault.client.cli.output import progress_bar
from pacsvault.client.cli.replication_cmd import NOT_ENABLED
from pacsvault.client.units import human_bytes


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("restore", help="rebuild this appliance (index and blobs) from its peer")
    parser.add_argument("--from-peer", action="store_true", required=True,
                        help="the peer appliance is the source (the only source there is)")
    parser.add_argument("--json", action="store_true", help="progress as JSON lines")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    if not client.replication_status().enabled:
        return _no_peer()
    bar = progress_bar(None, "inst", desc="restore")
    last = None
    failed: list[str] = []
    try:
        for progress in client.restore_from_peer():
            last = progress
            for failure in progress.failures:
                failed.append(failure.sop_instance_uid)
                if args.json:
                    bar.write(json.dumps({"failed_instance": failure.sop_instance_uid,
                                          "study_instance_uid": failure.study_instance_uid,
                                          "reason": failure.reason}), file=sys.stdout)
                else:
                    bar.write(f"not restored: instance {failure.sop_instance_uid} of study "
                              f"{failure.study_instance_uid}: {failure.reason}", file=sys.stderr)
            if args.json:
                bar.write(json.dumps({
                    "total": progress.instances_total, "restored": progress.instances_done,
                    "already_present": progress.instances_already_present, "failed": progress.instances_failed,
                    "bytes": progress.bytes_restored}), file=sys.stdout)
            bar.total = progress.instances_total
            bar.n = progress.instances_done + progress.instances_already_present + progress.instances_failed
            bar.refresh()
    except (FailedPrecondition, Unavailable) as error:
        bar.close()
        if "[replication]" in error.details():  # turned off since the check above
            return _no_peer(error.details())
        raise
    bar.close()
    if last is None:
        print("the peer holds nothing for this appliance", file=sys.stderr)
        return exit_codes.OK
    print(f"restored {last.instances_done} instances ({human_bytes(last.bytes_restored)}), "
          f"{last.instances_already_present} already here, {last.instances_failed} failed", file=sys.stderr)
    if last.instances_failed:
        shown = ", ".join(failed[:20]) + (f" and {len(failed) - 20} more" if len(failed) > 20 else "")
        print(f"pacsvault: {last.instances_failed} instances could not be restored intact ({shown}); "
              "run the command again to retry them", file=sys.stderr)
        return exit_codes.PARTIAL
    return exit_codes.OK


def _no_peer(details: str = "") -> int:
    print(f"pacsvault: {NOT_ENABLED.format(what='restore from')}" + (f" ({details})" if details else ""),
          file=sys.stderr)
    return exit_codes.REJECTED
