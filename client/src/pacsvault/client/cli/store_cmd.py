"""pacsvault store PATH... : store files and folders (recursively, in parallel)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from pacsvault.client import PacsvaultClient, StoreResult


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("store", help="store DICOM files and folders")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (walked recursively)")
    parser.add_argument("--json", action="store_true", help="one JSON object per instance on stdout")
    parser.add_argument("-j", "--parallel", type=int, default=min(8, (os.cpu_count() or 2) * 2),
                        help="files in flight at once (default: 2 per core, at most 8)")
    parser.set_defaults(run=run)


def walk(paths: list[str]) -> Iterator[Path]:
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name
        else:
            yield path


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    files = list(walk(args.paths))
    counts = {"stored": 0, "duplicate": 0, "rejected": 0}
    bar = tqdm(total=len(files), unit="file", disable=args.json or not sys.stderr.isatty(), file=sys.stderr)
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        for result in pool.map(client.store_file, files):
            counts[result.status] += 1
            bar.update()
            bar.set_postfix(counts, refresh=False)
            _report(result, args.json, bar)
    bar.close()
    if not args.json:
        print(f"{counts['stored']} stored, {counts['duplicate']} duplicate, {counts['rejected']} rejected",
              file=sys.stderr)
    return 1 if counts["rejected"] else 0


def _report(result: StoreResult, as_json: bool, bar: tqdm) -> None:  # type: ignore[type-arg]
    if as_json:
        print(json.dumps({
            "path": result.path, "sop_instance_uid": result.sop_instance_uid, "status": result.status,
            "digest": result.digest, "message": result.message, "code": result.code,
            "study_instance_uid": result.study_instance_uid,
        }), flush=True)
    elif result.status == "rejected":
        bar.write(f"{result.path}: rejected: {result.message} ({result.code})", file=sys.stderr)
