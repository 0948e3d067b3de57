"""Who a blob belongs to: the instances that name it and their patient, for reports that must
say which study and instance (and, in the audit trail, which patient) a bad blob costs."""

from __future__ import annotations

from dataclasses import dataclass, field

from pacsvault.daemon.index import keys
from pacsvault.daemon.index.keys import TRASH_OF_STUDY
from pacsvault.daemon.index.lmdb_env import IndexEnvironment, prefix_keys
from pacsvault.daemon.index.records import BlobRecord, InstanceRecord, PatientRecord, StudyRecord, TrashedInstance, decode


@dataclass
class Owners:
    study_instance_uid: str = ""
    sop_instance_uids: list[str] = field(default_factory=list)
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    # Instances of the trash naming it (deleted, not yet purged).
    trashed_sop_instance_uids: list[str] = field(default_factory=list)


def owners(env: IndexEnvironment, blob: BlobRecord) -> Owners:
    """The instances naming ``blob`` in its study (live and in the trash), and the study's patient."""
    found = Owners(blob.study_instance_uid)
    study_uid = blob.study_instance_uid
    with env.read() as txn:
        for series_key in prefix_keys(txn, env.dbs["study_series"], keys.join(study_uid, b"")):
            series_uid = keys.last_part(series_key)
            for member in prefix_keys(txn, env.dbs["series_instances"], keys.join(series_uid, b"")):
                value = txn.get(keys.last_part(member).encode(), db=env.dbs["instances"])
                if value is not None and decode(InstanceRecord, value).digest == blob.digest:
                    found.sop_instance_uids.append(keys.last_part(member))
        for target in prefix_keys(txn, env.dbs["trash_by_target"], keys.join(TRASH_OF_STUDY, study_uid, b"")):
            sop_uid = keys.last_part(target)
            value = txn.get(sop_uid.encode(), db=env.dbs["trash"])
            if value is not None and decode(TrashedInstance, value).instance.digest == blob.digest:
                found.trashed_sop_instance_uids.append(sop_uid)
        study_value = txn.get(study_uid.encode(), db=env.dbs["studies"])
        if study_value is not None:
            pkey = decode(StudyRecord, study_value).patient_key
            patient_value = txn.get(pkey, db=env.dbs["patients"])
            if patient_value is not None:
                patient = env.sealer.decode(PatientRecord, patient_value, "patients", pkey)
                found.patient_id, found.issuer_of_patient_id = patient.patient_id, patient.issuer_of_patient_id
    return found
