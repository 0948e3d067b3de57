"""pacsvault metadata STUDY_UID: the study as DICOM JSON (PS3.18 F), in reading order.

Each instance object also carries the storage tier that holds it, as a
private element (PS3.5 7.8) so that any DICOM JSON reader keeps working:
the creator ``PACSVAULT`` reserves a block in group 0009 (the first free
one, e.g. ``00090010``) and the block's element 01 holds the tier
(``00091001``: ``{"vr": "LO", "Value": ["hot"]}``).
"""

from __future__ import annotations

import argparse
import json

from pacsvault.client import PacsvaultClient

PRIVATE_GROUP = "0009"
PRIVATE_CREATOR = "PACSVAULT"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("metadata", help="print a study's metadata as DICOM JSON, with each instance's tier")
    parser.add_argument("study_instance_uid", metavar="STUDY_INSTANCE_UID")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    items = client.study_metadata_items(args.study_instance_uid)
    print(json.dumps([with_tier(item.dicom_json, item.tier) for item in items], ensure_ascii=False, indent=1))
    return 0


def with_tier(dicom_json: dict[str, object], tier: str) -> dict[str, object]:
    """The object with the tier in a private block of its own (never one the instance already uses)."""
    block = _free_block(dicom_json)
    out = dict(dicom_json)
    out[f"{PRIVATE_GROUP}00{block:02X}"] = {"vr": "LO", "Value": [PRIVATE_CREATOR]}
    out[f"{PRIVATE_GROUP}{block:02X}01"] = {"vr": "LO", "Value": [tier]}
    return dict(sorted(out.items()))


def _free_block(dicom_json: dict[str, object]) -> int:
    for block in range(0x10, 0x100):
        creator = dicom_json.get(f"{PRIVATE_GROUP}00{block:02X}")
        if creator is None or (isinstance(creator, dict) and creator.get("Value") == [PRIVATE_CREATOR]):
            return block
    raise ValueError("every private block of group 0009 is taken")
