"""Matches as dicts keyed by DICOM keywords, for --json output and scripts.

Numbers are numbers: SeriesNumber and InstanceNumber (DICOM IS) become
integers, None when absent. ``Tier`` (not a DICOM keyword) is the storage
tier holding an instance.
"""

from __future__ import annotations

from typing import Any

from pacsvault.client._messages import number
from pacsvault.v1 import common_pb2


def match_to_keywords(match: common_pb2.Match) -> dict[str, Any]:
    p = match.patient
    out: dict[str, Any] = {
        "PatientID": p.patient_id,
        "IssuerOfPatientID": p.issuer_of_patient_id,
        "PatientName": p.patient_name,
        "PatientBirthDate": p.patient_birth_date,
        "PatientSex": p.patient_sex,
    }
    if not match.HasField("study"):
        out["NumberOfPatientRelatedStudies"] = p.number_of_patient_related_studies
        out["NumberOfPatientRelatedInstances"] = p.number_of_patient_related_instances
        return out
    s = match.study
    out.update({
        "StudyInstanceUID": s.study_instance_uid,
        "StudyDate": s.study_date,
        "StudyTime": s.study_time,
        "AccessionNumber": s.accession_number,
        "StudyDescription": s.study_description,
        "StudyID": s.study_id,
        "ModalitiesInStudy": list(s.modalities_in_study),
        "NumberOfStudyRelatedSeries": s.number_of_study_related_series,
        "NumberOfStudyRelatedInstances": s.number_of_study_related_instances,
    })
    if match.HasField("series"):
        se = match.series
        out.update({
            "SeriesInstanceUID": se.series_instance_uid,
            "Modality": se.modality,
            "SeriesNumber": number(se.series_number),
            "SeriesDescription": se.series_description,
            "NumberOfSeriesRelatedInstances": se.number_of_series_related_instances,
        })
    if match.HasField("instance"):
        i = match.instance
        out.update({
            "SOPInstanceUID": i.sop_instance_uid,
            "SOPClassUID": i.sop_class_uid,
            "InstanceNumber": number(i.instance_number),
            "TransferSyntaxUID": i.transfer_syntax_uid,
            "NumberOfFrames": i.number_of_frames,
            "Tier": i.tier,
        })
    return out
