"""A storescu profile that sends DICOM files exactly as they are.

dcmtk's ``storescu`` proposes uncompressed transfer syntaxes by default and
converts (or, for compressed files, fails) when a file is encoded otherwise.
This writes a ``--config-file`` profile that proposes, for every distinct
(SOP Class, Transfer Syntax) among the files, a presentation context with
exactly that transfer syntax, so each file travels as encoded and one
association carries them all (at most 128 distinct kinds)::

    python -m pacsvault.client.dcmtk_profile DIR... > /tmp/storescu.cfg
    storescu --config-file /tmp/storescu.cfg AsStored +sd +r -aec PACSVAULT 127.0.0.1 11112 DIR
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import pydicom

PROFILE = "AsStored"
MAX_CONTEXTS = 128


def kinds(files: Iterable[Path]) -> list[tuple[str, str]]:
    """The distinct (SOP Class UID, Transfer Syntax UID) of the DICOM files, sorted."""
    found: set[tuple[str, str]] = set()
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = pydicom.filereader.read_file_meta_info(path)
        found.add((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    return sorted(found)


def profile(pairs: list[tuple[str, str]]) -> str:
    """The config file text: one transfer syntax list and one presentation context per kind."""
    if len(pairs) > MAX_CONTEXTS:
        raise ValueError(f"{len(pairs)} kinds of file need more than the {MAX_CONTEXTS} contexts of one association")
    syntaxes = sorted({ts for _, ts in pairs})
    names = {ts: f"TS{i}" for i, ts in enumerate(syntaxes, 1)}
    lines = ["[[TransferSyntaxes]]"]
    for ts in syntaxes:
        lines += [f"[{names[ts]}]", f"TransferSyntax1 = {ts}"]
    lines += ["", "[[PresentationContexts]]", f"[{PROFILE}Contexts]"]
    lines += [f"PresentationContext{i} = {sop}\\{names[ts]}" for i, (sop, ts) in enumerate(pairs, 1)]
    lines += ["", "[[Profiles]]", f"[{PROFILE}]", f"PresentationContexts = {PROFILE}Contexts", ""]
    return "\n".join(lines)


def dicom_files(roots: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        out += sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="DICOM files or folders (recursively)")
    args = parser.parse_args(argv)
    sys.stdout.write(profile(kinds(dicom_files(args.paths))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
