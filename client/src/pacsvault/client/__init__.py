"""Python client of a pacsvault appliance.

    from pacsvault.client import PacsvaultClient, NotFound

    with PacsvaultClient("127.0.0.1:50051") as archive:
        result = archive.store_file("image.dcm")
        for match in archive.patient_studies("PAT-001"):
            print(match.study.study_instance_uid, match.study.study_date)
        archive.save_study(match.study.study_instance_uid, "out/")

``AsyncPacsvaultClient`` has the same methods for asyncio code. Every
refusal of the appliance is a ``PacsvaultError`` subclass (see
``pacsvault.client._errors`` for the tree and the gRPC codes behind it).
"""

from pacsvault.client._aio import AsyncPacsvaultClient
from pacsvault.client._channel import DEFAULT_RETRY, DEFAULT_SERVER, RetryPolicy, default_server
from pacsvault.client._client import PacsvaultClient
from pacsvault.client._errors import (
    Cancelled,
    Conflict,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    IntegrityError,
    InvalidInput,
    NotFound,
    PacsvaultError,
    PermissionDenied,
    ResourceExhausted,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from pacsvault.client._files import SavedInstance
from pacsvault.client._messages import InstanceMetadata, Level, StoreResult, to_dataset
from pacsvault.client.keywords import match_to_keywords

__all__ = [
    "AsyncPacsvaultClient",
    "Cancelled",
    "Conflict",
    "DEFAULT_RETRY",
    "DEFAULT_SERVER",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InstanceMetadata",
    "IntegrityError",
    "InvalidInput",
    "Level",
    "NotFound",
    "PacsvaultClient",
    "PacsvaultError",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "SavedInstance",
    "ServerError",
    "StoreResult",
    "Unauthenticated",
    "Unavailable",
    "default_server",
    "match_to_keywords",
    "to_dataset",
]
