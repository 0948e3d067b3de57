"""pacsvault metadata STUDY_UID: the study as DICOM JSON (PS3.18 F)."""

from __future__ import annotations

import argparse
import json

from pacsvault.client import PacsvaultClient


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("metadata", help="print a study's metadata as DICOM JSON")
    parser.add_argument("study_instance_uid", metavar="STUDY_INSTANCE_UID")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    print(json.dumps(client.study_metadata(args.study_instance_uid), ensure_ascii=False, indent=1))
    return 0
