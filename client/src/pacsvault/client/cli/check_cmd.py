"""pacsvault check [--json] [--repair]: every inconsistency of index, volumes and replication books."""

from __future__ import annotations

import argparse
import json
import sys

from pacsvault.client import PacsvaultClient
from pacsvault.client.cli import exit_codes
from pacsvault.client.cli.output import as_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("check", help="list every inconsistency by class; exit 1 when any (admin)")
    parser.add_argument("--json", action="store_true", help="one JSON object per finding, then the counts")
    parser.add_argument("--repair", action="store_true",
                        help="repair what is safe: orphans and temp files past integrity.orphan_grace_s, dangling "
                             "entries from the peer, refcounts, stale outbox entries; says what it did to each")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    stream = client.repair_integrity() if args.repair else client.check_integrity()
    found, left = 0, 0
    for message in stream:
        for finding in message.findings:
            found += 1
            left += finding.action.startswith(("left", "failed"))
            if args.json:
                print(json.dumps(as_json(finding)))
            else:
                print(f"{finding.kind:24} {finding.subject}  {finding.detail}"
                      + (f"  -> {finding.action}" if finding.action else ""))
        if message.done:
            summary = {"counts": dict(message.counts), "blobs_examined": message.blobs_examined,
                       "files_examined": message.files_examined, "findings": found}
            if args.json:
                print(json.dumps({"summary": summary}))
            else:
                counts = ", ".join(f"{n} {kind}" for kind, n in sorted(message.counts.items())) or "nothing wrong"
                print(f"{message.blobs_examined} blobs and {message.files_examined} files examined: {counts}",
                      file=sys.stderr)
    if args.repair:
        return exit_codes.UNHEALTHY if left else exit_codes.OK
    return exit_codes.UNHEALTHY if found else exit_codes.OK
