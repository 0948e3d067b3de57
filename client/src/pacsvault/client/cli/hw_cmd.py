"""pacsvault hw assess FILE...: verdicts from captured smartctl / nvme / md output.

For field engineers with a support bundle: no appliance needed. The format
of each file is recognised from its content (``smartctl --json``,
``nvme smart-log -o json``, ``/proc/mdstat``, ``mdadm --detail``), and the
same rules as the daemon's give the verdict and reasons.

``--json`` prints one object per file (JSON lines): ``file``, ``format``,
``kind``, ``device``, ``model``, ``serial``, ``verdict`` (the worst of the
file), ``reasons``, ``metrics``, and ``assessments`` with one entry per
device or array when a file describes several (an mdstat with many arrays).

Exit status: 0 when every file is healthy (or has no health data by
nature, e.g. a virtual disk), 1 otherwise, so scripts can gate on it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pacsvault.client import PacsvaultClient
from pacsvault.hardware import Verdict, report_rows, worst

_FINE = (Verdict.HEALTHY, Verdict.UNSUPPORTED)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("hw", help="disk health tools for field engineers (no appliance needed)")
    actions = parser.add_subparsers(dest="hw_action", metavar="ACTION", required=True)
    assess = actions.add_parser(
        "assess", help="verdicts from captured smartctl --json, nvme smart-log JSON, /proc/mdstat, mdadm --detail")
    assess.add_argument("files", nargs="+", metavar="FILE")
    assess.add_argument("--json", action="store_true", help="one JSON object per file")
    assess.add_argument("--all", action="store_true", help="also print healthy notes")
    assess.set_defaults(run=run)


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    per_file = [file_report(path) for path in args.files]
    for report in per_file:
        if args.json:
            print(json.dumps(report), flush=True)
        else:
            print(_text(report, args.all), flush=True)
    return 0 if all(Verdict(r["verdict"]) in _FINE for r in per_file) else 1


def file_report(path: str) -> dict[str, Any]:
    """The ``--json`` object of one file (see the module docstring)."""
    rows = report_rows([path])
    fmt = rows[0]["format"] if rows else "proc_mdstat"
    kinds = sorted({r["kind"] for r in rows})
    verdict = worst((Verdict(r["verdict"]) for r in rows), default=Verdict.HEALTHY)
    single = rows[0] if len(rows) == 1 else None
    return {
        "file": path,
        "format": fmt,
        "kind": kinds[0] if len(kinds) == 1 else ("none" if not kinds else "mixed"),
        "device": single["device"] if single else ", ".join(r["device"] for r in rows),
        "model": single["model"] if single else "",
        "serial": single["serial"] if single else "",
        "verdict": verdict.value,
        "reasons": single["reasons"] if single else [
            {**reason, "device": r["device"]} for r in rows for reason in r["reasons"]],
        "metrics": single["metrics"] if single else {},
        "assessments": [{k: v for k, v in r.items() if k not in ("file", "format")} for r in rows],
    }


def _text(report: dict[str, Any], show_all: bool) -> str:
    lines = [f"{report['file']}: {report['verdict'].upper()}  ({report['format']})"]
    for row in report["assessments"]:
        identity = " ".join(x for x in (row["model"], f"serial {row['serial']}" if row["serial"] else "") if x)
        lines.append(f"  {row['verdict']:11} {row['kind']:9} {row['device']}" + (f"  {identity}" if identity else ""))
        for reason in row["reasons"]:
            if show_all or Verdict(reason["verdict"]) is not Verdict.HEALTHY:
                lines.append(f"      - {reason['verdict']}: {reason['attribute']} = {reason['value']} "
                             f"({reason['rule']}) [{reason['source']}, {reason['category']}]")
    if not report["assessments"]:
        lines.append("  no md arrays in this file")
    return "\n".join(lines)
