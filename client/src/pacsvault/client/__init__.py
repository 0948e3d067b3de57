"""Python client of a pacsvault appliance.

    from pacsvault.client import PacsvaultClient

    with PacsvaultClient("127.0.0.1:50051") as archive:
        result = archive.store_file("image.dcm")
        for study in archive.patient_studies("PAT-001"):
            print(study.study.study_instance_uid, study.study.study_date)
        archive.save_study(study.study.study_instance_uid, "out/")
"""

from pacsvault.client._client import (
    DEFAULT_SERVER,
    PacsvaultClient,
    StoreResult,
    default_server,
)
from pacsvault.client.keywords import match_to_keywords

__all__ = ["DEFAULT_SERVER", "PacsvaultClient", "StoreResult", "default_server", "match_to_keywords"]
