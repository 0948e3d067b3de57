"""pacsvault.v1.SecurityService and ShareService: tokens, revocation, break-glass, shares.

Key rotation runs in the back office (``KeyServicer``); serving processes forward those two methods.
"""

from __future__ import annotations

import grpc

from pacsvault.daemon.config import Config
from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys
from pacsvault.daemon.dicom import uid
from pacsvault.daemon.dicomweb.links import share_link
from pacsvault.daemon.errors import FailedPrecondition, InvalidInput, NotFound, PermissionDenied, shown
from pacsvault.daemon.index import keys
from pacsvault.daemon.index.query import Level, Query
from pacsvault.daemon.index.records import CredentialRecord
from pacsvault.daemon.key_rotation import KeyRotation
from pacsvault.daemon.retrieval import Retrieval
from pacsvault.daemon.search import Search
from pacsvault.daemon.security.credentials import CredentialStore, TokenPolicy
from pacsvault.daemon.security.scope import current_principal
from pacsvault.daemon.service.forwarding import BackOffice, forwarded
from pacsvault.daemon.security.serials import normalise_serial
from pacsvault.daemon.service.status import mapped
from pacsvault.v1 import security_pb2, security_pb2_grpc

_SECURITY = security_pb2.DESCRIPTOR.services_by_name["SecurityService"]


def _caller() -> str:
    principal = current_principal.get()
    if principal is None:
        raise PermissionDenied("no authenticated caller")
    return principal.id


def _token_info(r: CredentialRecord) -> security_pb2.TokenInfo:
    return security_pb2.TokenInfo(
        token_id=r.credential_id, principal=r.principal, created_at=r.created_at, expires_at=r.expires_at,
        idle_timeout_seconds=r.idle_timeout_s, last_used_at=r.last_used_at, revoked=bool(r.revoked_at),
        created_by=r.created_by)


def _share_info(r: CredentialRecord) -> security_pb2.ShareInfo:
    patient_id, issuer = keys.split_share_scope(r.patient_key) if r.patient_key else ("", "")
    return security_pb2.ShareInfo(
        share_id=r.credential_id, created_by=r.created_by, study_instance_uid=r.study_instance_uid,
        patient_id=patient_id, issuer_of_patient_id=issuer, created_at=r.created_at, expires_at=r.expires_at,
        max_uses=r.max_uses, uses=r.uses, pin_required=bool(r.pin_hash), revoked=bool(r.revoked_at))


class SecurityServicer(security_pb2_grpc.SecurityServiceServicer):
    def __init__(self, config: Config, credentials: CredentialStore, back_office: BackOffice) -> None:
        self._config, self._credentials, self._back_office = config, credentials, back_office
        self._principals = {p.identity for p in config.security.principals}
        self._tokens = TokenPolicy(config.security.max_token_ttl_s, config.security.token_idle_timeout_s)

    RotateKeys = forwarded(_SECURITY.methods_by_name["RotateKeys"])
    GetEncryptionStatus = forwarded(_SECURITY.methods_by_name["GetEncryptionStatus"])

    @mapped
    def CreateToken(self, request: security_pb2.CreateTokenRequest,
                    context: grpc.ServicerContext) -> security_pb2.CreateTokenResponse:
        if request.principal not in self._principals:
            raise InvalidInput("principal must be a configured identity (security.principals)")
        issued = self._credentials.create_access_token(request.principal, request.ttl_seconds,
                                                       request.idle_timeout_seconds, _caller(), self._tokens)
        return security_pb2.CreateTokenResponse(token=issued.token, info=_token_info(issued.record))

    @mapped
    def ListTokens(self, request: security_pb2.ListTokensRequest,
                   context: grpc.ServicerContext) -> security_pb2.ListTokensResponse:
        return security_pb2.ListTokensResponse(tokens=[_token_info(r) for r in self._credentials.list("access")])

    @mapped
    def RevokeToken(self, request: security_pb2.RevokeTokenRequest,
                    context: grpc.ServicerContext) -> security_pb2.RevokeTokenResponse:
        self._credentials.revoke(request.token_id, "access", lambda _: True)
        return security_pb2.RevokeTokenResponse()

    @mapped
    def RevokeCertificate(self, request: security_pb2.RevokeCertificateRequest,
                          context: grpc.ServicerContext) -> security_pb2.RevokeCertificateResponse:
        if bool(request.identity) == bool(request.serial_hex):
            raise InvalidInput("give exactly one of identity and serial_hex")
        if request.serial_hex:
            self._credentials.revoke_serial(normalise_serial(request.serial_hex), request.reason[:500], _caller())
        else:
            self._credentials.revoke_identity(request.identity[:512], request.reason[:500], _caller())
        return security_pb2.RevokeCertificateResponse()

    @mapped
    def BreakGlass(self, request: security_pb2.BreakGlassRequest,
                   context: grpc.ServicerContext) -> security_pb2.BreakGlassResponse:
        caller = _caller()
        if caller not in self._config.security.break_glass_principals:
            raise PermissionDenied(f"{caller} may not break the glass (security.break_glass_principals)")
        grant = self._credentials.break_glass(caller, request.reason, request.minutes)
        return security_pb2.BreakGlassResponse(expires_at=grant.expires_at)



class KeyServicer(security_pb2_grpc.SecurityServiceServicer):
    """The back office's half of SecurityService: rotation and its progress."""

    def __init__(self, keys: ApplianceKeys | None, rotation: KeyRotation | None) -> None:
        self._keys, self._rotation = keys, rotation

    @mapped
    def RotateKeys(self, request: security_pb2.RotateKeysRequest,
                   context: grpc.ServicerContext) -> security_pb2.RotateKeysResponse:
        rotation = self._rotation
        if rotation is None:
            raise FailedPrecondition("encryption at rest is off ([encryption] enabled = false): there are no keys")
        return security_pb2.RotateKeysResponse(active_version=rotation.rotate())

    @mapped
    def GetEncryptionStatus(self, request: security_pb2.GetEncryptionStatusRequest,
                            context: grpc.ServicerContext) -> security_pb2.GetEncryptionStatusResponse:
        keys, rotation = self._keys, self._rotation
        if keys is None or rotation is None:
            return security_pb2.GetEncryptionStatusResponse(enabled=False)
        ring, progress = keys.holder.current, rotation.progress
        return security_pb2.GetEncryptionStatusResponse(
            enabled=True, keyring_source=ring.source or "encryption.key_command", active_version=ring.active,
            versions=sorted(ring.keks), rewrap_state=progress.state, blobs_checked=progress.checked,
            blobs_rewrapped=progress.rewrapped, blobs_failed=progress.failed, last_error=progress.last_error,
            rewrapped_to_version=rotation.rewrapped_to)


class ShareServicer(security_pb2_grpc.ShareServiceServicer):
    def __init__(self, search: Search, retrieval: Retrieval, credentials: CredentialStore,
                 web_root: str = "") -> None:
        """``web_root``: where the share page is reached (dicomweb.links), '' when the web door is off."""
        self._search, self._retrieval, self._credentials = search, retrieval, credentials
        self._web_root = web_root

    @mapped
    def CreateShare(self, request: security_pb2.CreateShareRequest,
                    context: grpc.ServicerContext) -> security_pb2.CreateShareResponse:
        study_uid, patient_key = "", b""
        if request.study_instance_uid:
            study_uid = uid.check(request.study_instance_uid, "study_instance_uid")
            self._retrieval.study_instances(study_uid)  # NOT_FOUND for an unknown study
        elif request.patient_id:
            # Exactly this issuer, the empty one included: the share will see that patient and no namesake.
            query = Query(Level.STUDY, patient_id=request.patient_id,
                          issuer_of_patient_id=request.issuer_of_patient_id, issuer_exact=True)
            matches, _ = self._search.find(query, 1, "")
            if not matches:
                raise NotFound(f"no studies of PatientID {shown(request.patient_id)} with issuer "
                               f"{shown(request.issuer_of_patient_id) if request.issuer_of_patient_id else '(none)'}")
            patient_key = keys.share_scope(request.patient_id, request.issuer_of_patient_id)
        issued = self._credentials.create_share(study_uid, patient_key, request.ttl_seconds, request.max_uses,
                                                request.pin, _caller())
        return security_pb2.CreateShareResponse(token=issued.token, share=_share_info(issued.record),
                                                link=share_link(self._web_root, issued.token))

    @mapped
    def ListShares(self, request: security_pb2.ListSharesRequest,
                   context: grpc.ServicerContext) -> security_pb2.ListSharesResponse:
        return security_pb2.ListSharesResponse(
            shares=[_share_info(r) for r in self._credentials.list("share", created_by=_caller())])

    @mapped
    def RevokeShare(self, request: security_pb2.RevokeShareRequest,
                    context: grpc.ServicerContext) -> security_pb2.RevokeShareResponse:
        caller = _caller()
        self._credentials.revoke(request.share_id, "share", lambda r: r.created_by == caller)
        return security_pb2.RevokeShareResponse()
