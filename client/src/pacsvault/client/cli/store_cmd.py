"""pacsvault store PATH... : store files and folders (recursively, in parallel).

One line per file on stdout, in the order of the walk:

    PATH: stored SOP_UID
    PATH: duplicate SOP_UID (identical instance already stored)
    PATH: duplicate SOP_UID: already stored in <syntax>; this copy is <syntax> and was not stored
    PATH: skipped: not a DICOM file (no DICM prefix at byte 128)
    PATH: rejected: <the appliance's reason> (<STATUS>)

then a count on stderr. Exit 0 when nothing that could be stored was refused
(skipped files and copies in another transfer syntax are not refusals), 7
when some were stored and some refused, else the code of the refusal. It
stops early, exit 4 or 5, when the appliance cannot be reached or refuses
the caller: no later file could fare better.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from pacsvault.client import PacsvaultClient, StoreResult
from pacsvault.client.cli import exit_codes
from pacsvault.client.cli.local_dicom import StoredSyntaxes, other_encoding, skip_reason
from pacsvault.client.cli.output import progress_bar, say

# Refusals that are about the caller or the connection, not the file: the same for every file.
_STOP = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "UNAUTHENTICATED", "PERMISSION_DENIED"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("store", help="store DICOM files and folders (a patient CD too)")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (walked recursively)")
    parser.add_argument("--json", action="store_true", help="one JSON object per file on stdout")
    parser.add_argument("-j", "--parallel", type=int, default=min(8, (os.cpu_count() or 2) * 2),
                        help="files in flight at once (default: 2 per core, at most 8)")
    parser.set_defaults(run=run)


def walk(paths: list[str]) -> Iterator[Path]:
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise FileNotFoundError(2, "no such file or folder", given)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name
        else:
            yield path


@dataclass(frozen=True)
class Outcome:
    result: StoreResult
    skipped: str = ""

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else self.result.status


def store_one(client: PacsvaultClient, stored: StoredSyntaxes, path: Path) -> Outcome:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Outcome(StoreResult(str(path), "rejected", message=f"cannot read: {exc.strerror}", code="LOCAL"))
    reason = skip_reason(path, data)
    if reason:
        return Outcome(StoreResult(str(path), "skipped", code=""), skipped=reason)
    result = client.store(data, path=str(path))
    if result.code == "ALREADY_EXISTS":
        found = other_encoding(data, stored)
        if found is not None:
            sop_uid, note = found
            result = replace(result, status="duplicate", message=note, sop_instance_uid=sop_uid)
    return Outcome(result)


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    files = list(walk(args.paths))
    counts = {"stored": 0, "duplicate": 0, "skipped": 0, "rejected": 0}
    refusals: set[int] = set()
    stop: StoreResult | None = None
    stored = StoredSyntaxes(client)
    bar = progress_bar(len(files), "file")
    width = max(1, args.parallel)
    with ThreadPoolExecutor(max_workers=width) as pool:
        queue = iter(files)
        in_flight: deque[Future[Outcome]] = deque()

        def submit() -> None:
            path = next(queue, None)
            if path is not None:
                in_flight.append(pool.submit(store_one, client, stored, path))

        for _ in range(2 * width):
            submit()
        while in_flight:
            outcome = in_flight.popleft().result()
            counts[outcome.status] += 1
            bar.update()
            bar.set_postfix(counts, refresh=False)
            _report(outcome, args.json, bar)
            if outcome.status == "rejected":
                refusals.add(_exit_code(outcome.result))
                if outcome.result.code in _STOP and stop is None:
                    stop = outcome.result
            if stop is None:
                submit()
    bar.close()
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    unsent = len(files) - sum(counts.values())
    say(bar, summary + (f"; {unsent} files not sent" if unsent else ""), err=True)
    if stop is not None:
        error = stop.error()
        assert error is not None
        say(bar, f"pacsvault: stopped: {exit_codes.describe(error, client.target)}", err=True)
        return exit_codes.for_error(error)
    if not refusals:
        return exit_codes.OK
    if counts["stored"] or counts["duplicate"]:
        return exit_codes.PARTIAL
    return refusals.pop() if len(refusals) == 1 else exit_codes.REJECTED


def _exit_code(result: StoreResult) -> int:
    error = result.error()
    if result.code == "LOCAL" or error is None:
        return exit_codes.REJECTED
    return exit_codes.for_error(error)


def _report(outcome: Outcome, as_json: bool, bar: tqdm) -> None:  # type: ignore[type-arg]
    r = outcome.result
    if as_json:
        say(bar, json.dumps({
            "path": r.path, "sop_instance_uid": r.sop_instance_uid, "status": outcome.status,
            "digest": r.digest, "message": outcome.skipped or r.message, "code": r.code,
            "study_instance_uid": r.study_instance_uid,
        }, ensure_ascii=False))
        return
    if outcome.skipped:
        line = f"{r.path}: skipped: {outcome.skipped}"
    elif r.status == "rejected":
        line = f"{r.path}: rejected: {r.message} ({r.code})"
    elif r.code == "ALREADY_EXISTS":
        line = f"{r.path}: duplicate {r.sop_instance_uid}: {r.message}"
    elif r.status == "duplicate":
        line = f"{r.path}: duplicate {r.sop_instance_uid}" + (f" ({r.message})" if r.message else "")
    else:
        line = f"{r.path}: stored {r.sop_instance_uid}"
    say(bar, line)

