"""The one table of who may call what: every method of every service, deny by default.

A method missing from the table is refused for everyone, and a test fails
when a served method has no entry, so a new RPC cannot ship open by mistake.
Roles that must never read patient data (admin, security-admin, auditor,
monitor, peer) appear on no method that returns it.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    INGEST = "ingest"  # stores instances
    READER = "reader"  # finds, retrieves, metadata; clinical prefetch and pins
    ADMIN = "admin"  # tiers, volumes, replication operations; no patient data
    SECURITY_ADMIN = "security-admin"  # principals, tokens, revocation; no patient data
    AUDITOR = "auditor"  # the audit trail only
    PEER = "peer"  # the peer appliance: replication service only
    MONITOR = "monitor"  # health and metrics only
    # Not configurable: what a share grant's bearer holds, read-only and
    # narrowed to the grant's study or patient.
    SHARE = "share"


R = Role
_ARCHIVE = "/pacsvault.v1.ArchiveService/"
_APPLIANCE = "/pacsvault.v1.ApplianceService/"
_STORAGE = "/pacsvault.v1.StorageService/"
_REPLICATION = "/pacsvault.v1.ReplicationService/"
_PEER = "/pacsvault.v1.PeerService/"
_SECURITY = "/pacsvault.v1.SecurityService/"
_SHARE = "/pacsvault.v1.ShareService/"
_AUDIT = "/pacsvault.v1.AuditService/"
_INTEGRITY = "/pacsvault.v1.IntegrityService/"
_LIFECYCLE = "/pacsvault.v1.LifecycleService/"

METHOD_ROLES: dict[str, frozenset[Role]] = {
    _ARCHIVE + "StoreInstance": frozenset({R.INGEST}),
    _ARCHIVE + "PutInstance": frozenset({R.INGEST}),
    _ARCHIVE + "Find": frozenset({R.READER, R.SHARE}),
    _ARCHIVE + "ListPatientStudies": frozenset({R.READER, R.SHARE}),
    _ARCHIVE + "GetInstance": frozenset({R.READER, R.SHARE}),
    _ARCHIVE + "ReadInstance": frozenset({R.READER, R.SHARE}),
    _ARCHIVE + "GetSeries": frozenset({R.READER, R.SHARE}),
    _ARCHIVE + "GetStudy": frozenset({R.READER, R.SHARE}),
    _ARCHIVE + "GetStudyMetadata": frozenset({R.READER, R.SHARE}),
    _ARCHIVE + "Prefetch": frozenset({R.READER}),
    _ARCHIVE + "Pin": frozenset({R.READER}),
    _ARCHIVE + "DeleteStudy": frozenset({R.ADMIN}),
    # A second admin (security.delete_requires_second_admin); never the one who asked.
    _ARCHIVE + "ApproveStudyDeletion": frozenset({R.ADMIN}),
    _ARCHIVE + "ListStudyDeletionRequests": frozenset({R.ADMIN}),
    _APPLIANCE + "GetApplianceHealth": frozenset({R.MONITOR, R.ADMIN}),
    _APPLIANCE + "WatchHealth": frozenset({R.MONITOR, R.ADMIN}),
    _STORAGE + "ListVolumes": frozenset({R.ADMIN, R.MONITOR}),
    # Study UIDs and sizes only (no name, ID or date): what operators plan with.
    _STORAGE + "PlanMoves": frozenset({R.ADMIN}),
    _STORAGE + "AddVolume": frozenset({R.ADMIN}),
    _STORAGE + "DrainVolume": frozenset({R.ADMIN}),
    _STORAGE + "RebuildVolume": frozenset({R.ADMIN}),
    # Counts, study and instance UIDs of bad blobs: no name, ID or date.
    _INTEGRITY + "GetScrubStatus": frozenset({R.ADMIN, R.MONITOR}),
    _INTEGRITY + "StartScrub": frozenset({R.ADMIN}),
    _INTEGRITY + "CheckIntegrity": frozenset({R.ADMIN}),
    _INTEGRITY + "RepairIntegrity": frozenset({R.ADMIN}),
    # Study, series and instance UIDs and counts only, like DeleteStudy.
    _LIFECYCLE + "AddLegalHold": frozenset({R.ADMIN}),
    _LIFECYCLE + "RemoveLegalHold": frozenset({R.ADMIN}),
    _LIFECYCLE + "ListLegalHolds": frozenset({R.ADMIN}),
    _LIFECYCLE + "DeleteSeries": frozenset({R.ADMIN}),
    _LIFECYCLE + "DeleteInstance": frozenset({R.ADMIN}),
    _LIFECYCLE + "Undelete": frozenset({R.ADMIN}),
    _LIFECYCLE + "ListDeleted": frozenset({R.ADMIN}),
    _REPLICATION + "GetReplicationStatus": frozenset({R.ADMIN, R.MONITOR}),
    _REPLICATION + "RestoreFromPeer": frozenset({R.ADMIN}),
    _REPLICATION + "ReseedPeer": frozenset({R.ADMIN}),
    _PEER + "WriteShard": frozenset({R.PEER}),
    _PEER + "QueryWriteStatus": frozenset({R.PEER}),
    _PEER + "CommitBlob": frozenset({R.PEER}),
    _PEER + "ReadBlob": frozenset({R.PEER}),
    _PEER + "ListReplicaRecords": frozenset({R.PEER}),
    _SECURITY + "CreateToken": frozenset({R.SECURITY_ADMIN}),
    _SECURITY + "ListTokens": frozenset({R.SECURITY_ADMIN}),
    _SECURITY + "RevokeToken": frozenset({R.SECURITY_ADMIN}),
    _SECURITY + "RevokeCertificate": frozenset({R.SECURITY_ADMIN}),
    _SECURITY + "RotateKeys": frozenset({R.SECURITY_ADMIN}),
    # Versions and progress only, never key material.
    _SECURITY + "GetEncryptionStatus": frozenset({R.SECURITY_ADMIN, R.AUDITOR, R.MONITOR}),
    # Whether a principal may break the glass is its own setting (security.break_glass).
    _SECURITY + "BreakGlass": frozenset({R.INGEST, R.READER, R.ADMIN, R.SECURITY_ADMIN, R.AUDITOR, R.MONITOR}),
    _SHARE + "CreateShare": frozenset({R.READER}),
    _SHARE + "ListShares": frozenset({R.READER}),
    _SHARE + "RevokeShare": frozenset({R.READER}),
    _AUDIT + "VerifyAudit": frozenset({R.AUDITOR}),
    _AUDIT + "QueryAudit": frozenset({R.AUDITOR}),
    _PEER + "PutAuditCheckpoint": frozenset({R.PEER}),
    _PEER + "ListAuditCheckpoints": frozenset({R.PEER}),
    _PEER + "DeleteReplicas": frozenset({R.PEER}),
    _PEER + "ListLostReplicas": frozenset({R.PEER}),
    _PEER + "SetLegalHold": frozenset({R.PEER}),
    # A load balancer's health check works with the monitor role (or from loopback).
    "/grpc.health.v1.Health/Check": frozenset(Role) - {R.SHARE},
    "/grpc.health.v1.Health/Watch": frozenset(Role) - {R.SHARE},
    "/grpc.health.v1.Health/List": frozenset(Role) - {R.SHARE},
    # The API's shape is no secret from any authenticated caller.
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": frozenset(Role) - {R.SHARE},
}


def allowed_roles(method: str) -> frozenset[Role]:
    """The roles that may call ``method``; empty (nobody) for a method not in the table."""
    return METHOD_ROLES.get(method, frozenset())


def parse_roles(names: tuple[str, ...] | list[str], where: str) -> frozenset[Role]:
    try:
        roles = frozenset(Role(name) for name in names)
    except ValueError as exc:
        known = ", ".join(r.value for r in Role if r is not Role.SHARE)
        raise ValueError(f"{where}: unknown role in {list(names)} (roles: {known})") from exc
    if Role.SHARE in roles:
        raise ValueError(f"{where}: the share role comes with share grants only")
    return roles
