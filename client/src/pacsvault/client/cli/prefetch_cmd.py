"""pacsvault prefetch PATIENT_ID: bring a patient's priors to the fastest tier."""

from __future__ import annotations

import argparse

from pacsvault.client import PacsvaultClient
from pacsvault.client.units import human_bytes


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("prefetch", help="bring every study of a patient to the fastest tier")
    parser.add_argument("patient_id", metavar="PATIENT_ID")
    parser.add_argument("--issuer", default="", help="IssuerOfPatientID (default: every issuer)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    response = client.prefetch(args.patient_id, args.issuer)
    print(f"{response.studies_queued} studies ({human_bytes(response.bytes_queued)}) queued for the fastest tier")
    return 0
