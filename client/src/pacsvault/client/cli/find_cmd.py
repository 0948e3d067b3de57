"""pacsvault find: patients, studies, series or instances matching keys."""

from __future__ import annotations

import argparse
import json

from pacsvault.client import PacsvaultClient, match_to_keywords

COLUMNS = {
    "patient": ["PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "NumberOfPatientRelatedStudies"],
    "study": ["PatientID", "PatientName", "StudyDate", "AccessionNumber", "ModalitiesInStudy",
              "NumberOfStudyRelatedInstances", "StudyInstanceUID"],
    "series": ["PatientID", "StudyDate", "Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances",
               "SeriesInstanceUID"],
    "instance": ["PatientID", "Modality", "InstanceNumber", "SOPInstanceUID"],
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("find", help="find patients, studies, series or instances")
    parser.add_argument("--level", choices=list(COLUMNS), default="study")
    parser.add_argument("--patient-id")
    parser.add_argument("--issuer", help="IssuerOfPatientID")
    parser.add_argument("--patient-name", help="wildcards: * any run, ? one character; case-insensitive")
    parser.add_argument("--study-uid")
    parser.add_argument("--series-uid")
    parser.add_argument("--accession")
    parser.add_argument("--modality")
    parser.add_argument("--study-date", metavar="YYYYMMDD-YYYYMMDD", help="a date or an inclusive range")
    parser.add_argument("--limit", type=int, help="stop after N matches (default: all)")
    parser.add_argument("--json", action="store_true", help="one JSON object per match, DICOM keywords as keys")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, client: PacsvaultClient) -> int:
    filters = {
        "patient_id": args.patient_id, "issuer_of_patient_id": args.issuer,
        "patient_name": args.patient_name, "study_instance_uid": args.study_uid,
        "series_instance_uid": args.series_uid, "accession_number": args.accession,
        "modality": args.modality, "study_date": args.study_date,
    }
    matches = client.find(args.level, limit=args.limit, **{k: v for k, v in filters.items() if v})
    rows = (match_to_keywords(m) for m in matches)
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False), flush=True)
        return 0
    columns = COLUMNS[args.level]
    print("\t".join(columns))
    for row in rows:
        print("\t".join(_cell(row.get(c, "")) for c in columns))
    return 0


def _cell(value: object) -> str:
    return "\\".join(value) if isinstance(value, list) else str(value)
