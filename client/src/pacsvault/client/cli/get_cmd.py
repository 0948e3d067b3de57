"""pacsvault get / get-study / get-series: retrieve instances to files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pacsvault.client import PacsvaultClient


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    one = sub.add_parser("get", help="retrieve one instance, byte-identical")
    one.add_argument("sop_instance_uid", metavar="SOP_INSTANCE_UID")
    one.add_argument("-o", "--output", required=True, help="file to write")
    one.set_defaults(run=run_instance)
    study = sub.add_parser("get-study", help="retrieve a whole study (streamed), one file per instance")
    study.add_argument("study_instance_uid", metavar="STUDY_INSTANCE_UID")
    study.add_argument("-o", "--output", required=True, help="directory to write <SOPInstanceUID>.dcm into")
    study.set_defaults(run=run_study)
    series = sub.add_parser("get-series", help="retrieve a whole series, one file per instance")
    series.add_argument("series_instance_uid", metavar="SERIES_INSTANCE_UID")
    series.add_argument("-o", "--output", required=True, help="directory")
    series.set_defaults(run=run_series)


def run_instance(args: argparse.Namespace, client: PacsvaultClient) -> int:
    path = client.save_instance(args.sop_instance_uid, args.output)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def run_study(args: argparse.Namespace, client: PacsvaultClient) -> int:
    written = client.save_study(args.study_instance_uid, args.output)
    print(f"wrote {len(written)} instances to {args.output}", file=sys.stderr)
    return 0


def run_series(args: argparse.Namespace, client: PacsvaultClient) -> int:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for attributes, data in client.iter_series(args.series_instance_uid):
        (out / f"{attributes.sop_instance_uid}.dcm").write_bytes(data)
        count += 1
    print(f"wrote {count} instances to {out}", file=sys.stderr)
    return 0
