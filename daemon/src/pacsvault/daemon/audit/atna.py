"""Audit records as DICOM audit messages (PS3.15 Annex A.5), the IHE ATNA payload.

One trail record of an outcome (phase ``end``) or an alert the archive
raised itself (phase ``alert``) becomes one ``AuditMessage``; a refusal
(phase ``refused``) becomes two, the User Authentication event and the
Security Alert every refusal also is (see ``alerts``); ``begin`` records are
the fail-closed guard, not events, and become nothing. The event codes come
from the DCM coding scheme (PS3.16 CID 400 "Audit Event ID", CID 403
"Security Alert Type Code"):

    110103 DICOM Instances Accessed    retrieve and metadata reads (R), pins (U)
    110104 DICOM Instances Transferred store (C), replication restore/reseed (C/R)
    110105 DICOM Study Deleted         study deletion (D), once the API has it
    110101 Audit Log Used              the audit trail read or verified (R)
    110112 Query                       Find, ListPatientStudies and other listings (E)
    110113 Security Alert              tokens, certificates, break-glass, shares, volumes, legal holds (E);
                                       every alert of ``alerts.AlertKind`` (E), refusals included, stored
                                       data lost beyond repair among them; scrub, check repair, volume
                                       rebuild started (E)
    110114 User Authentication         a call refused: no credentials or not allowed (E)

Only identifiers from the record travel: patient ID, study / series /
instance UIDs, counts. Names are never in the trail, so never here; the
schema wants a ParticipantObjectName or Query, and the identifier stands in.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from xml.etree import ElementTree

from pacsvault.daemon.audit.alerts import AlertKind, alert_of, is_refusal

__all__ = ["EVENTS", "Event", "event_for", "outcome_indicator", "to_audit_message", "to_audit_messages"]


@dataclass(frozen=True)
class Code:
    code: str
    meaning: str
    scheme: str = "DCM"


@dataclass(frozen=True)
class Event:
    """What one RPC is, in audit terms: the EventID, action code and an optional type code."""

    event_id: Code
    action: str
    type_code: Code | None = None


INSTANCES_ACCESSED = Code("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = Code("110104", "DICOM Instances Transferred")
STUDY_DELETED = Code("110105", "DICOM Study Deleted")
AUDIT_LOG_USED = Code("110101", "Audit Log Used")
QUERY = Code("110112", "Query")
SECURITY_ALERT = Code("110113", "Security Alert")
USER_AUTHENTICATION = Code("110114", "User Authentication")

LOGIN = Code("110122", "Login")
EMERGENCY_OVERRIDE = Code("110127", "Emergency Override Started")
EMERGENCY_OVERRIDE_STOPPED = Code("110138", "Emergency Override Stopped")
AUTHENTICATION_DECISION = Code("110143", "Authentication Decision")
AUTHORIZATION_DECISION = Code("110144", "Authorization Decision")
SECURITY_CONFIGURATION = Code("110129", "Security Configuration")
HARDWARE_CONFIGURATION = Code("110130", "Hardware Configuration")
RESTRICTED_FUNCTION = Code("110132", "Use of Restricted Function")
OBJECT_SECURITY_CHANGED = Code("110135", "Object Security Attributes Changed")
USER_SECURITY_CHANGED = Code("110137", "User Security Attributes Changed")
# PS3.15 A.5.3.11 makes EventTypeCode mandatory in a Security Alert, from CID 403.
# None of CID 403's codes (110126-110147: node authentication, emergency override,
# configuration, restricted function, audit recording, security attributes and roles,
# service operations, authentication / authorization / access decisions, sessions)
# says that stored data failed its integrity check: borrowing one (110126 "Node
# Authentication" is the nearest) would mislead a SIEM rule, and leaving the code out
# breaks the "M". CID 403 is extensible, so a code of our own private scheme (a "99"
# designator, PS3.16 section 8) extends it, and names exactly what happened.
STORED_DATA_AUTHENTICATION = Code("PV-AT-REST-AUTH", "Stored Data Failed Authentication", "99PACSVAULT")
# The same private extension of CID 403: stored data found missing or damaged and repairable from nowhere.
STORED_DATA_UNREPAIRABLE = Code("PV-AT-REST-LOST", "Stored Data Lost (Unrepairable)", "99PACSVAULT")
LOCAL_SERVICE_OPERATION = Code("110141", "Local Service Operation Started")
# The same reasoning for the audit trail's own integrity: "110133 Audit Recording Stopped" would
# say recording stopped, which it did not; what happened is that records were lost or rewritten,
# or the witness refused a checkpoint.
AUDIT_CHAIN_INTEGRITY = Code("PV-AUDIT-CHAIN", "Audit Trail Integrity Failure", "99PACSVAULT")
WITNESS_REFUSAL = Code("PV-AUDIT-WITNESS", "Audit Checkpoint Refused by Witness", "99PACSVAULT")

# Every audited RPC by name; a test keeps this in step with the access table.
EVENTS: dict[str, Event] = {
    "StoreInstance": Event(INSTANCES_TRANSFERRED, "C"),
    "PutInstance": Event(INSTANCES_TRANSFERRED, "C"),
    "GetInstance": Event(INSTANCES_ACCESSED, "R"),
    "ReadInstance": Event(INSTANCES_ACCESSED, "R"),
    "GetSeries": Event(INSTANCES_ACCESSED, "R"),
    "GetStudy": Event(INSTANCES_ACCESSED, "R"),
    "GetStudyMetadata": Event(INSTANCES_ACCESSED, "R"),
    "Prefetch": Event(INSTANCES_ACCESSED, "R"),
    "Pin": Event(INSTANCES_ACCESSED, "U"),
    "DeleteStudy": Event(STUDY_DELETED, "D"),
    "ApproveStudyDeletion": Event(STUDY_DELETED, "D"),
    "ListStudyDeletionRequests": Event(QUERY, "E"),
    "Find": Event(QUERY, "E"),
    "ListPatientStudies": Event(QUERY, "E"),
    "ListVolumes": Event(QUERY, "E"),
    "PlanMoves": Event(QUERY, "E"),
    "GetReplicationStatus": Event(QUERY, "E"),
    "ListTokens": Event(QUERY, "E"),
    "ListShares": Event(QUERY, "E"),
    "QueryAudit": Event(AUDIT_LOG_USED, "R"),
    "VerifyAudit": Event(AUDIT_LOG_USED, "R"),
    "RestoreFromPeer": Event(INSTANCES_TRANSFERRED, "C"),
    "ReseedPeer": Event(INSTANCES_TRANSFERRED, "R"),
    "AddVolume": Event(SECURITY_ALERT, "E", HARDWARE_CONFIGURATION),
    "DrainVolume": Event(SECURITY_ALERT, "E", HARDWARE_CONFIGURATION),
    "CreateToken": Event(SECURITY_ALERT, "E", USER_SECURITY_CHANGED),
    "RevokeToken": Event(SECURITY_ALERT, "E", USER_SECURITY_CHANGED),
    "RevokeCertificate": Event(SECURITY_ALERT, "E", USER_SECURITY_CHANGED),
    "RotateKeys": Event(SECURITY_ALERT, "E", SECURITY_CONFIGURATION),
    "GetEncryptionStatus": Event(QUERY, "E"),
    "BreakGlass": Event(SECURITY_ALERT, "E", EMERGENCY_OVERRIDE),
    "CreateShare": Event(SECURITY_ALERT, "E", OBJECT_SECURITY_CHANGED),
    "RevokeShare": Event(SECURITY_ALERT, "E", OBJECT_SECURITY_CHANGED),
    "GetScrubStatus": Event(QUERY, "E"),
    "StartScrub": Event(SECURITY_ALERT, "E", LOCAL_SERVICE_OPERATION),
    "CheckIntegrity": Event(QUERY, "E"),
    "RepairIntegrity": Event(SECURITY_ALERT, "E", LOCAL_SERVICE_OPERATION),
    "RebuildVolume": Event(SECURITY_ALERT, "E", LOCAL_SERVICE_OPERATION),
    "AddLegalHold": Event(SECURITY_ALERT, "E", OBJECT_SECURITY_CHANGED),
    "RemoveLegalHold": Event(SECURITY_ALERT, "E", OBJECT_SECURITY_CHANGED),
    "ListLegalHolds": Event(QUERY, "E"),
    "ListDeleted": Event(QUERY, "E"),
    "DeleteSeries": Event(STUDY_DELETED, "D"),
    "DeleteInstance": Event(STUDY_DELETED, "D"),
    "Undelete": Event(INSTANCES_ACCESSED, "U"),
}
REFUSAL = Event(USER_AUTHENTICATION, "E", LOGIN)
# Alerts by kind: those the archive raises on its own (phase "alert") and the one each refusal
# also is. The alerts that are calls (break-glass, revocations) are in EVENTS.
ALERTS: dict[str, Event] = {
    AlertKind.BLOB_AUTHENTICATION_FAILED: Event(SECURITY_ALERT, "E", STORED_DATA_AUTHENTICATION),
    AlertKind.STORED_DATA_UNREPAIRABLE: Event(SECURITY_ALERT, "E", STORED_DATA_UNREPAIRABLE),
    AlertKind.AUDIT_CHAIN_BROKEN: Event(SECURITY_ALERT, "E", AUDIT_CHAIN_INTEGRITY),
    AlertKind.WITNESS_CONFLICT: Event(SECURITY_ALERT, "E", WITNESS_REFUSAL),
    AlertKind.BREAK_GLASS_ENDED: Event(SECURITY_ALERT, "E", EMERGENCY_OVERRIDE_STOPPED),
    AlertKind.AUTHENTICATION_REFUSED: Event(SECURITY_ALERT, "E", AUTHENTICATION_DECISION),
    AlertKind.PERMISSION_REFUSED: Event(SECURITY_ALERT, "E", AUTHORIZATION_DECISION),
    AlertKind.PIN_LOCKOUT: Event(SECURITY_ALERT, "E", USER_SECURITY_CHANGED),
}
# A DeleteStudy that only asked for a second admin's approval deleted nothing: it is the first
# half of a restricted function (two-person rule), not a deletion; its approval is the deletion.
DELETION_REQUESTED = Event(SECURITY_ALERT, "E", RESTRICTED_FUNCTION)
# An RPC added later without an entry is still exported, conservatively as an access.
FALLBACK = Event(INSTANCES_ACCESSED, "R")

# EventOutcomeIndicator: 4 the caller's request failed (minor, the action may be
# retried), 12 the archive was unavailable (major), 8 anything else went wrong.
_MINOR = frozenset({"CANCELLED", "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
                    "UNAUTHENTICATED", "FAILED_PRECONDITION", "OUT_OF_RANGE", "RESOURCE_EXHAUSTED", "ABORTED"})
_MAJOR = frozenset({"UNAVAILABLE"})

_PATIENT_NUMBER = Code("2", "Patient Number", "RFC-3881")
_SEARCH_CRITERIA = Code("10", "Search Criteria", "RFC-3881")
_STUDY_UID = Code("110180", "Study Instance UID")
_SOURCE_ROLE = Code("110153", "Source Role ID")
_DESTINATION_ROLE = Code("110152", "Destination Role ID")
# AuditSourceTypeCode 4: an application server process.
_APPLICATION_SERVER = "4"


def event_for(record: Mapping[str, object]) -> Event:
    if record.get("phase") == "refused":
        return REFUSAL
    if record.get("phase") == "alert":
        return ALERTS.get(str(record.get("alert", "")), Event(SECURITY_ALERT, "E"))
    if record.get("action") == "DeleteStudy" and record.get("approval_request_id"):
        return DELETION_REQUESTED
    return EVENTS.get(str(record.get("action", "")), FALLBACK)


def outcome_indicator(outcome: str) -> str:
    if outcome == "OK":
        return "0"
    if outcome in _MAJOR:
        return "12"
    return "4" if outcome in _MINOR else "8"


def to_audit_messages(record: Mapping[str, object], source_id: str) -> list[bytes]:
    """Every AuditMessage of ``record``: none, one, or for a refusal two (the event, and the alert)."""
    primary = to_audit_message(record, source_id)
    if primary is None:
        return []
    kind = alert_of(record)
    if not is_refusal(kind) or record.get("phase") == "alert":
        return [primary]
    assert kind is not None
    return [primary, _message(record, source_id, ALERTS[kind], alert=True)]


def to_audit_message(record: Mapping[str, object], source_id: str) -> bytes | None:
    """The AuditMessage XML (UTF-8, with declaration) of ``record``; None for a record that is no event."""
    if record.get("phase") not in ("end", "refused", "alert"):
        return None
    return _message(record, source_id, event_for(record), alert=record.get("phase") == "alert")


def _message(record: Mapping[str, object], source_id: str, event: Event, *, alert: bool) -> bytes:
    outcome = str(record.get("outcome", "OK"))
    root = ElementTree.Element("AuditMessage")
    _event_identification(root, record, event, outcome)
    if alert:
        _reporter(root, source_id)
        if record.get("phase") != "alert":
            _performer(root, record)
    else:
        _requestor(root, record, event)
        _archive(root, source_id, event, record)
    source = ElementTree.SubElement(root, "AuditSourceIdentification", AuditSourceID=source_id)
    ElementTree.SubElement(source, "AuditSourceTypeCode", {"csd-code": _APPLICATION_SERVER})
    _participant_objects(root, record, event)
    # One line: syslog receivers keep a message on one line (rsyslog escapes newlines).
    return _DECLARATION + ElementTree.tostring(root, encoding="unicode").encode("utf-8")


_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'


def _event_identification(root: ElementTree.Element, record: Mapping[str, object], event: Event,
                          outcome: str) -> None:
    ident = ElementTree.SubElement(root, "EventIdentification", EventActionCode=event.action,
                                   EventDateTime=_datetime(record.get("time")),
                                   EventOutcomeIndicator=outcome_indicator(outcome))
    _coded(ident, "EventID", event.event_id)
    if event.type_code is not None:
        _coded(ident, "EventTypeCode", event.type_code)
    description = f"{record.get('action', '?')}: {outcome} (audit record {record.get('seq', '?')})"
    if record.get("break_glass"):
        description += f"; break-glass: {str(record['break_glass'])[:200]}"
    if record.get("phase") == "alert" and (record.get("reason") or record.get("summary")):
        description += f"; {str(record.get('reason') or record.get('summary'))[:200]}"
    ElementTree.SubElement(ident, "EventOutcomeDescription").text = description


def _requestor(root: ElementTree.Element, record: Mapping[str, object], event: Event) -> None:
    attributes = {"UserID": str(record.get("principal") or "unauthenticated"), "UserIsRequestor": "true"}
    roles = record.get("roles")
    if isinstance(roles, list) and roles:
        attributes["AlternativeUserID"] = "roles=" + ",".join(str(r) for r in roles)
    address = _network_address(str(record.get("peer", "")))
    if address:
        attributes |= {"NetworkAccessPointID": address, "NetworkAccessPointTypeCode": "2"}
    participant = ElementTree.SubElement(root, "ActiveParticipant", attributes)
    if event.event_id == INSTANCES_TRANSFERRED and event.action == "C":
        _coded(participant, "RoleIDCode", _SOURCE_ROLE)


def _reporter(root: ElementTree.Element, source_id: str) -> None:
    """An alert's one active participant: the appliance, which detected it (PS3.15 A.5.3.11 "Reporting Person")."""
    ElementTree.SubElement(root, "ActiveParticipant", UserID=source_id, UserIsRequestor="true")


def _performer(root: ElementTree.Element, record: Mapping[str, object]) -> None:
    """A refusal alert's second participant: the caller that was refused (as far as it is known)."""
    attributes = {"UserID": str(record.get("principal") or "unauthenticated"), "UserIsRequestor": "false"}
    address = _network_address(str(record.get("peer", "")))
    if address:
        attributes |= {"NetworkAccessPointID": address, "NetworkAccessPointTypeCode": "2"}
    ElementTree.SubElement(root, "ActiveParticipant", attributes)


def _archive(root: ElementTree.Element, source_id: str, event: Event, record: Mapping[str, object]) -> None:
    participant = ElementTree.SubElement(root, "ActiveParticipant", UserID=source_id, UserIsRequestor="false")
    if event.event_id == INSTANCES_TRANSFERRED:
        _coded(participant, "RoleIDCode", _DESTINATION_ROLE if event.action == "C" else _SOURCE_ROLE)


def _participant_objects(root: ElementTree.Element, record: Mapping[str, object], event: Event) -> None:
    patient_id = record.get("patient_id")
    if isinstance(patient_id, str) and patient_id:
        issuer = record.get("issuer_of_patient_id")
        shown = f"{patient_id}^^^{issuer}" if isinstance(issuer, str) and issuer else patient_id
        patient = _object(root, shown, type_code="1", role="1", id_type=_PATIENT_NUMBER)
        ElementTree.SubElement(patient, "ParticipantObjectName").text = shown
        _reorder(patient)
    study_uid = record.get("study_instance_uid")
    if isinstance(study_uid, str) and study_uid:
        study = _object(root, study_uid, type_code="2", role="3", id_type=_STUDY_UID)
        ElementTree.SubElement(study, "ParticipantObjectName").text = study_uid
        for key in ("series_instance_uid", "sop_instance_uid"):
            if isinstance(record.get(key), str):
                _detail(study, key, str(record[key]))
        if isinstance(record.get("sop_instance_uid"), str):
            description = ElementTree.SubElement(study, "ParticipantObjectDescription")
            sop_class = ElementTree.SubElement(description, "SOPClass", NumberOfInstances="1")
            ElementTree.SubElement(sop_class, "Instance", UID=str(record["sop_instance_uid"]))
        _reorder(study)
    if event.event_id in (QUERY, AUDIT_LOG_USED) and record.get("phase") != "refused":
        criteria = {k: v for k, v in record.items() if k in _QUERY_FIELDS}
        query = _object(root, str(record.get("action", "")), type_code="2", role="24", id_type=_SEARCH_CRITERIA)
        ElementTree.SubElement(query, "ParticipantObjectQuery").text = base64.b64encode(
            json.dumps(criteria, sort_keys=True).encode()).decode()
        if isinstance(record.get("messages"), int):
            _detail(query, "messages", str(record["messages"]))
        _reorder(query)


_QUERY_FIELDS = frozenset({"patient_id", "issuer_of_patient_id", "study_instance_uid", "series_instance_uid",
                           "sop_instance_uid", "principal_filter", "level", "volume", "tier", "query"})
# The schema's order inside ParticipantObjectIdentification.
_OBJECT_ORDER = ("ParticipantObjectIDTypeCode", "ParticipantObjectName", "ParticipantObjectQuery",
                 "ParticipantObjectDetail", "ParticipantObjectDescription")


def _object(root: ElementTree.Element, object_id: str, *, type_code: str, role: str,
            id_type: Code) -> ElementTree.Element:
    element = ElementTree.SubElement(root, "ParticipantObjectIdentification", ParticipantObjectID=object_id,
                                     ParticipantObjectTypeCode=type_code, ParticipantObjectTypeCodeRole=role)
    _coded(element, "ParticipantObjectIDTypeCode", id_type)
    return element


def _detail(element: ElementTree.Element, kind: str, value: str) -> None:
    ElementTree.SubElement(element, "ParticipantObjectDetail", type=kind,
                           value=base64.b64encode(value.encode()).decode())


def _reorder(element: ElementTree.Element) -> None:
    children = sorted(element, key=lambda child: _OBJECT_ORDER.index(child.tag))
    for child in list(element):
        element.remove(child)
    element.extend(children)


def _coded(parent: ElementTree.Element, tag: str, code: Code) -> ElementTree.Element:
    return ElementTree.SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.scheme,
                                                "originalText": code.meaning})


def _datetime(value: object) -> str:
    seconds = float(value) if isinstance(value, (int, float)) else 0.0
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _network_address(peer: str) -> str:
    """The IP address of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``); empty otherwise."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return ""
