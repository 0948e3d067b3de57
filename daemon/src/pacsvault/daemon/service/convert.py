"""Between index records and the API's messages."""

from __future__ import annotations

from pacsvault.daemon import digest as digests
from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.errors import InvalidInput
from pacsvault.daemon.index import query
from pacsvault.daemon.index.records import BlobRecord, InstanceRecord
from pacsvault.v1 import archive_pb2, common_pb2

LEVELS = {
    archive_pb2.QUERY_LEVEL_PATIENT: query.Level.PATIENT,
    archive_pb2.QUERY_LEVEL_STUDY: query.Level.STUDY,
    archive_pb2.QUERY_LEVEL_SERIES: query.Level.SERIES,
    archive_pb2.QUERY_LEVEL_INSTANCE: query.Level.INSTANCE,
}


def digest_to_proto(d: Digest) -> common_pb2.Digest:
    return common_pb2.Digest(function=int(d.function), hash=d.hex, size_bytes=d.size_bytes)  # type: ignore[arg-type]


def digest_from_proto(d: common_pb2.Digest) -> Digest:
    try:
        function = DigestFunction(d.function)
    except ValueError as exc:
        raise InvalidInput(f"expected_digest.function {d.function} is unknown") from exc
    return digests.parse_hex(function, d.hash, d.size_bytes)


def query_from_proto(level: int, f: archive_pb2.QueryFilter) -> query.Query:
    if level not in LEVELS:
        raise InvalidInput("level must be one of PATIENT, STUDY, SERIES, INSTANCE")
    return query.Query(
        LEVELS[level], patient_id=f.patient_id, issuer_of_patient_id=f.issuer_of_patient_id,
        patient_name=f.patient_name, study_instance_uid=f.study_instance_uid,
        accession_number=f.accession_number, modality=f.modality.upper(),
        study_date_from=f.study_date.start, study_date_to=f.study_date.end,
        series_instance_uid=f.series_instance_uid,
    )


def instance_to_proto(instance: InstanceRecord, blob: BlobRecord | None,
                      content: Digest | None = None) -> common_pb2.InstanceAttributes:
    """``content`` is the BLAKE3 of the bytes being sent; without bytes at hand the
    digest is left out, since the index keeps only keyed addresses when encrypting."""
    message = common_pb2.InstanceAttributes(
        sop_instance_uid=instance.sop_instance_uid, sop_class_uid=instance.sop_class_uid,
        instance_number=instance.instance_number, transfer_syntax_uid=instance.transfer_syntax_uid,
        number_of_frames=instance.number_of_frames,
        series_instance_uid=instance.series_instance_uid, study_instance_uid=instance.study_instance_uid,
    )
    if content is not None:
        message.digest.CopyFrom(digest_to_proto(content))
    if blob is not None:
        message.tier = blob.location.tier
    return message


def match_to_proto(match: query.Match) -> common_pb2.Match:
    p = match.patient
    result = common_pb2.Match(patient=common_pb2.PatientAttributes(
        patient_id=p.patient_id, issuer_of_patient_id=p.issuer_of_patient_id,
        patient_name=p.patient_name, patient_birth_date=p.patient_birth_date,
        patient_sex=p.patient_sex, number_of_patient_related_studies=p.study_count,
        number_of_patient_related_instances=p.instance_count,
    ))
    if (s := match.study) is not None:
        result.study.CopyFrom(common_pb2.StudyAttributes(
            study_instance_uid=s.study_instance_uid, study_date=s.study_date, study_time=s.study_time,
            accession_number=s.accession_number, study_description=s.study_description,
            study_id=s.study_id, referring_physician_name=s.referring_physician_name,
            modalities_in_study=list(s.modalities), number_of_study_related_series=s.series_count,
            number_of_study_related_instances=s.instance_count, size_bytes=s.size_bytes,
        ))
    if (se := match.series) is not None:
        result.series.CopyFrom(common_pb2.SeriesAttributes(
            series_instance_uid=se.series_instance_uid, modality=se.modality,
            series_number=se.series_number, series_description=se.series_description,
            number_of_series_related_instances=se.instance_count,
        ))
    if match.instance is not None:
        result.instance.CopyFrom(instance_to_proto(match.instance, match.blob))
    return result

