"""pacsvault audit verify|query: the tamper-evident audit trail (auditor role)."""

from __future__ import annotations

import argparse
import datetime
import json

from pacsvault.client import PacsvaultClient
from pacsvault.client.cli import exit_codes
from pacsvault.client.cli.output import as_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("audit", help="verify or search the audit trail (auditor role)")
    actions = parser.add_subparsers(dest="audit_action", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check every record and checkpoint, the peer's too")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(run=run_verify)
    query = actions.add_parser("query", help="records by patient, principal, study, time")
    query.add_argument("--patient-id", default="")
    query.add_argument("--principal", default="")
    query.add_argument("--study-uid", default="")
    query.add_argument("--since", type=_epoch, default=0.0, help="YYYY-MM-DD[THH:MM] (UTC)")
    query.add_argument("--until", type=_epoch, default=0.0, help="YYYY-MM-DD[THH:MM] (UTC)")
    query.add_argument("--json", action="store_true", help="one JSON record per line")
    query.set_defaults(run=run_query)


def run_verify(args: argparse.Namespace, client: PacsvaultClient) -> int:
    """Exit 0 intact, 1 tampered, 5 not verified (the witness could not be asked; nothing found here)."""
    r = client.audit_verify()
    unverified = not r.intact and r.witness_error and not r.first_bad_record
    if args.json:
        print(json.dumps(as_json(r)))
    elif r.intact:
        print(f"intact: {r.records} records, {r.local_checkpoints} local and {r.witness_checkpoints} witness "
              "checkpoints agree" + ("" if r.peer_consulted else " (this appliance has no witness)"))
    elif unverified:
        print(f"NOT VERIFIED: {r.problem}")
    else:
        print(f"TAMPERED: record {r.first_bad_record}: {r.problem}")
    if r.intact:
        return exit_codes.OK
    return exit_codes.UNAVAILABLE if unverified else exit_codes.UNHEALTHY


def _epoch(text: str) -> float:
    try:
        return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)") from None


def run_query(args: argparse.Namespace, client: PacsvaultClient) -> int:
    for record in client.audit_query(patient_id=args.patient_id, principal=args.principal,
                                     study_instance_uid=args.study_uid, since=args.since, until=args.until):
        if args.json:
            print(json.dumps(record, sort_keys=True, ensure_ascii=False))
            continue
        when = datetime.datetime.fromtimestamp(float(record.get("time", 0)), tz=datetime.UTC)  # type: ignore[arg-type]
        what = " ".join(f"{k}={record[k]}" for k in ("patient_id", "study_instance_uid", "sop_instance_uid")
                        if k in record)
        flag = f" BREAK-GLASS({record['break_glass']})" if "break_glass" in record else ""
        print(f"{when:%Y-%m-%d %H:%M:%S} #{record.get('seq')} {record.get('principal', '?')} "
              f"{record.get('action')} {record.get('phase')} {record.get('outcome', '')} {what}{flag}")
    return 0
