"""pacsvault share create|list|revoke: read-only grants for consulting physicians and patients."""

from __future__ import annotations

import argparse
import datetime
import json

from pacsvault.client import PacsvaultClient
from pacsvault.client.cli.output import as_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("share", help="share a study or a patient's studies, read-only, expiring")
    actions = parser.add_subparsers(dest="share_action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a grant; its token is shown once")
    what = create.add_mutually_exclusive_group(required=True)
    what.add_argument("--study-uid")
    what.add_argument("--patient-id")
    create.add_argument("--issuer", default="", help="IssuerOfPatientID, with --patient-id")
    create.add_argument("--days", type=float, default=7.0, help="valid for this many days (default 7)")
    create.add_argument("--max-uses", type=int, default=0, help="at most this many calls (default: no limit)")
    create.add_argument("--pin", default="", help="a PIN the holder must give too (for patients)")
    create.add_argument("--json", action="store_true")
    create.set_defaults(run=run_create)
    listing = actions.add_parser("list", help="your grants")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=run_list)
    revoke = actions.add_parser("revoke", help="end a grant now")
    revoke.add_argument("share_id")
    revoke.set_defaults(run=run_revoke)


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def run_create(args: argparse.Namespace, client: PacsvaultClient) -> int:
    response = client.create_share(study_instance_uid=args.study_uid or "", patient_id=args.patient_id or "",
                                   issuer_of_patient_id=args.issuer, ttl_seconds=args.days * 86400,
                                   max_uses=args.max_uses, pin=args.pin)
    if args.json:
        print(json.dumps({"token": response.token, "link": response.link, **as_json(response.share)}))
        return 0
    print(f"share {response.share.share_id}, valid until {_when(response.share.expires_at)}")
    print(f"token (shown once, give it to the recipient): {response.token}")
    if response.link:
        print(f"link for a browser (holds the token; the PIN is asked there): {response.link}")
    return 0


def run_list(args: argparse.Namespace, client: PacsvaultClient) -> int:
    for share in client.list_shares():
        if args.json:
            print(json.dumps(as_json(share)))
            continue
        what = f"study {share.study_instance_uid}" if share.study_instance_uid else f"patient {share.patient_id}"
        state = "revoked" if share.revoked else f"until {_when(share.expires_at)}"
        limit = f", {share.uses}/{share.max_uses} uses" if share.max_uses else f", {share.uses} uses"
        print(f"{share.share_id}  {what}  {state}{limit}{', PIN' if share.pin_required else ''}")
    return 0


def run_revoke(args: argparse.Namespace, client: PacsvaultClient) -> int:
    client.revoke_share(args.share_id)
    print(f"share {args.share_id} revoked")
    return 0
