"""pacsvault get / get-study / get-series: retrieve instances to files, or to stdout.

``-o DIR`` writes one ``<SOPInstanceUID>.dcm`` per instance; the folder is
made when the first instance arrives (an unknown UID leaves nothing behind)
and files already there with the digest the appliance sends are kept, so
running the same command again after an interruption resumes it. Each file
takes its name only once its bytes are verified. ``-o -`` writes to stdout:
the instance itself for ``get``, a tar stream of ``<SOPInstanceUID>.dcm``
members for a study or series (``... -o - | tar -x -C DIR``), each member
verified before its first byte is written.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from pacsvault.client import PacsvaultClient, PacsvaultError, SavedInstance
from pacsvault.client._messages import safe_file_name
from pacsvault.client.cli import exit_codes
from pacsvault.client.cli.output import on_terminal, progress_bar
from pacsvault.client.units import human_bytes
from pacsvault.v1 import common_pb2

STDOUT = "-"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    one = sub.add_parser("get", help="retrieve one instance, byte-identical")
    one.add_argument("sop_instance_uid", metavar="SOP_INSTANCE_UID")
    one.add_argument("-o", "--output", required=True, metavar="FILE|DIR|-",
                     help="file to write (its folder must exist), a folder to write <SOPInstanceUID>.dcm into, "
                          "or - for stdout")
    one.add_argument("--force", action="store_true", help="replace a file that holds something else")
    one.set_defaults(run=run_instance)
    for name, level, what in (("get-study", "study", "STUDY_INSTANCE_UID"),
                              ("get-series", "series", "SERIES_INSTANCE_UID")):
        parser = sub.add_parser(name, help=f"retrieve a whole {level}, one file per instance; resumable")
        parser.add_argument("uid", metavar=what)
        parser.add_argument("-o", "--output", required=True, metavar="DIR|-",
                            help="folder for <SOPInstanceUID>.dcm files (made if missing; files already there "
                                 "and verified are kept), or - for a tar stream on stdout")
        parser.set_defaults(run=run_many, level=level)


def _binary_stdout() -> BinaryIO | None:
    """stdout for DICOM bytes; None (after saying why) when it is a terminal."""
    if sys.stdout.isatty():
        print("pacsvault: refusing to write DICOM to a terminal; redirect or pipe it (-o - > file)",
              file=sys.stderr)
        return None
    return sys.stdout.buffer


def run_instance(args: argparse.Namespace, client: PacsvaultClient) -> int:
    if args.output == STDOUT:
        out = _binary_stdout()
        if out is None:
            return exit_codes.USAGE
        out.write(client.get_instance(args.sop_instance_uid))
        out.flush()
        return exit_codes.OK
    target = Path(args.output)
    if target.is_dir():
        target = target / f"{args.sop_instance_uid}.dcm"
    try:
        saved = client.save_instance(args.sop_instance_uid, target, overwrite=args.force)
    except FileExistsError:
        print(f"pacsvault: {target}: exists with other content (--force replaces it)", file=sys.stderr)
        return exit_codes.REJECTED
    if saved.already_present:
        print(f"{saved.path} already holds this instance (verified); nothing written", file=sys.stderr)
    else:
        print(f"wrote {saved.path} ({human_bytes(saved.size_bytes)})", file=sys.stderr)
    return exit_codes.OK


def run_many(args: argparse.Namespace, client: PacsvaultClient) -> int:
    if args.output == STDOUT:
        out = _binary_stdout()
        if out is None:
            return exit_codes.USAGE
        instances = client.iter_study(args.uid) if args.level == "study" else client.iter_series(args.uid)
        count = write_tar(instances, out, _bar(client, args.level, args.uid))
        print(f"wrote {count} instances to stdout (tar)", file=sys.stderr)
        return exit_codes.OK
    return _save_to_folder(args, client, Path(args.output))


def _save_to_folder(args: argparse.Namespace, client: PacsvaultClient, folder: Path) -> int:
    bar = _bar(client, args.level, args.uid)
    saved: list[SavedInstance] = []

    def advance(item: SavedInstance) -> None:
        saved.append(item)
        bar.update()

    save: Callable[..., list[SavedInstance]] = client.save_study if args.level == "study" else client.save_series
    try:
        save(args.uid, folder, progress=advance)
    except PacsvaultError:
        bar.close()
        if saved:
            print(f"pacsvault: {len(saved)} instances are complete in {folder}; run the same command again "
                  "to fetch the rest (complete files are kept)", file=sys.stderr)
        raise
    bar.close()
    kept = sum(1 for s in saved if s.already_present)
    written = len(saved) - kept
    print(f"wrote {written} instances ({human_bytes(sum(s.size_bytes for s in saved if not s.already_present))}) "
          f"to {folder}" + (f"; {kept} were already there, verified" if kept else ""), file=sys.stderr)
    return exit_codes.OK


def _bar(client: PacsvaultClient, level: str, uid: str) -> tqdm:  # type: ignore[type-arg]
    """A bar of instances, its total from one find, only when someone watches the terminal."""
    total = None
    try:
        if on_terminal() and level == "study":
            study = next(iter(client.find("study", study_instance_uid=uid, limit=1)), None)
            total = study.study.number_of_study_related_instances if study else None
        elif on_terminal():
            series = next(iter(client.find("series", series_instance_uid=uid, limit=1)), None)
            total = series.series.number_of_series_related_instances if series else None
    except PacsvaultError:
        pass  # a bar without a total; the retrieval itself will say what is wrong
    return progress_bar(total, "inst", desc=f"get-{level}")


def write_tar(instances: Iterator[tuple[common_pb2.InstanceAttributes, bytes]], out: BinaryIO,
              bar: tqdm) -> int:  # type: ignore[type-arg]
    """Each verified instance as a ``<SOPInstanceUID>.dcm`` member of a tar stream.

    The end-of-archive blocks are written only after the last member: a
    stream that breaks leaves a tar that ``tar -x`` reports as cut short,
    never one that looks complete.
    """
    count = 0
    tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - closed on success only
    for attributes, data in instances:
        member = tarfile.TarInfo(safe_file_name(attributes.sop_instance_uid))
        member.size, member.mtime, member.mode = len(data), int(time.time()), 0o644
        tar.addfile(member, BytesIO(data))
        count += 1
        bar.update()
    tar.close()
    bar.close()
    out.flush()
    return count
