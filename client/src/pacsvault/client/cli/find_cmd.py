"""pacsvault find: patients, studies, series or instances matching keys.

Text output is tab-separated with a header line, printed only once the
first answer arrived (an error prints nothing on stdout). Instances come
in reading order within each study: series by SeriesNumber, then
InstanceNumber as a number.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Iterator

from pacsvault.client import PacsvaultClient, match_to_keywords
from pacsvault.client._messages import match_order
from pacsvault.v1 import common_pb2

COLUMNS = {
    "patient": ["PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "NumberOfPatientRelatedStudies"],
    "study": ["PatientID", "PatientName", "StudyDate", "AccessionNumber", "ModalitiesInStudy",
              "NumberOfStudyRelatedInstances", "StudyInstanceUID"],
    "series": ["PatientID", "StudyDate", "Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances",
               "SeriesInstanceUID"],
    "instance": ["PatientID", "Modality", "SeriesNumber", "InstanceNumber", "Tier", "SOPInstanceUID"],
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("find", help="find patients, studies, series or instances")
    parser.add_argument("--level", choices=list(COLUMNS), default="study")
    parser.add_argument("--patient-id", default="")
    parser.add_argument("--issuer", default="", help="IssuerOfPatientID")
    parser.add_argument("--patient-name", default="", help="wildcards: * any run, ? one character; case-insensitive")
    parser.add_argument("--study-uid", default="")
    parser.add_argument("--series-uid", default="")
    parser.add_argument("--accession", default="")
    parser.add_argument("--modality", default="")
    parser.add_argument("--study-date", default="", metavar="YYYYMMDD-YYYYMMDD", help="a date or an inclusive range")
    parser.add_argument("--limit", type=int, help="stop after N matches, counted in the appliance's order "
                                                  "(default: all)")
    parser.add_argument("--json", action="store_true", help="one JSON object per match, DICOM keywords as keys "
                                                            "(and Tier for instances)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    matches = client.find(
        args.level, patient_id=args.patient_id, issuer_of_patient_id=args.issuer, patient_name=args.patient_name,
        study_instance_uid=args.study_uid, series_instance_uid=args.series_uid, accession_number=args.accession,
        modality=args.modality, study_date=args.study_date, limit=args.limit)
    if args.level == "instance":
        matches = in_reading_order(matches)
    rows = (match_to_keywords(m) for m in matches)
    first = next(rows, None)  # the first answer (or the error) before anything is printed
    if first is None:
        return 0
    columns = COLUMNS[args.level]
    if not args.json:
        print("\t".join(columns))
    for row in itertools.chain([first], rows):
        if args.json:
            print(json.dumps(row, ensure_ascii=False), flush=True)
        else:
            print("\t".join(_cell(row.get(c)) for c in columns))
    return 0


def in_reading_order(matches: Iterator[common_pb2.Match]) -> Iterator[common_pb2.Match]:
    """The appliance sends a study's instances together: sort each study's group as it completes."""
    for _, group in itertools.groupby(matches, key=lambda m: m.study.study_instance_uid):
        yield from sorted(group, key=match_order)


def _cell(value: object) -> str:
    if value is None:
        return ""
    return "\\".join(value) if isinstance(value, list) else str(value)
