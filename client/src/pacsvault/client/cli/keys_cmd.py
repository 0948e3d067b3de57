"""pacsvault keys status|rotate: encryption at rest and its key-encryption keys."""

from __future__ import annotations

import argparse
import json

from pacsvault.client import PacsvaultClient
from pacsvault.client.cli import exit_codes
from pacsvault.client.cli.output import as_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("keys", help="encryption at rest: status, rotate the key-encryption key")
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="keyring, key versions and re-wrap progress (never key material)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=run_status)
    rotate = actions.add_parser("rotate", help="new key-encryption key; every data key is re-wrapped online")
    rotate.set_defaults(run=run_rotate)


def run_status(args: argparse.Namespace, client: PacsvaultClient) -> int:
    s = client.encryption_status()
    if args.json:
        print(json.dumps(as_json(s)))
        return 0
    if not s.enabled:
        print("encryption at rest: OFF ([encryption] enabled = false)")
        return 0
    print(f"encryption at rest: on; keyring {s.keyring_source}")
    print(f"  key-encryption key versions {list(s.versions)}, active {s.active_version}; every data key "
          f"wrapped under version {s.rewrapped_to_version} or later")
    print(f"  re-wrap: {s.rewrap_state} ({s.blobs_checked} checked, {s.blobs_rewrapped} re-wrapped, "
          f"{s.blobs_failed} failed)")
    if s.last_error:
        print(f"  last error: {s.last_error}")
    return exit_codes.UNHEALTHY if s.rewrap_state == "failed" else exit_codes.OK


def run_rotate(args: argparse.Namespace, client: PacsvaultClient) -> int:
    version = client.rotate_keys()
    print(f"key-encryption key version {version} is active; data keys are being re-wrapped "
          "(follow with: pacsvault keys status)")
    return 0
