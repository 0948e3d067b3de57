"""Bearer credentials, the certificate revocation list and break-glass grants, in the index.

Tokens are 256 random bits shown once; only their SHA-256 is stored, so a
copy of the index gives no usable token. Every check reads the index, so a
revocation is effective on the very next call. A share's patient is PHI: it
is sealed with the record (encryption on), and only ever opened here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import lmdb

from pacsvault.daemon.errors import InvalidInput, NotFound, Unauthenticated, shown
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BreakGlassGrant, CredentialRecord, RevocationRecord, decode, encode
from pacsvault.daemon.security.serials import stored_forms

_CREDENTIALS = "credentials"

TOKEN_PREFIX = "pv_"
MAX_PIN_FAILURES = 5
# Enough to slow a guesser holding a copy of the index; cheap enough for every call.
_PIN_ITERATIONS = 20_000


@dataclass(frozen=True)
class TokenPolicy:
    """security.max_token_ttl_s and security.token_idle_timeout_s (see security.production_guard)."""

    max_ttl_s: float
    default_idle_timeout_s: float


@dataclass(frozen=True)
class Issued:
    token: str
    record: CredentialRecord


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class CredentialStore:
    def __init__(self, env: IndexEnvironment, clock: Callable[[], float] = time.time) -> None:
        self._env, self._clock = env, clock
        self._db = env.dbs

    # -- issuing -----------------------------------------------------------

    def create_access_token(self, principal: str, ttl_s: float, idle_timeout_s: float, created_by: str,
                            policy: TokenPolicy) -> Issued:
        """``idle_timeout_s`` 0: the policy's default idle timeout."""
        if ttl_s <= 0 or ttl_s > policy.max_ttl_s:
            raise InvalidInput(f"ttl_seconds must be positive and at most {policy.max_ttl_s:g} "
                               "(security.max_token_ttl_s)")
        if idle_timeout_s < 0:
            raise InvalidInput("idle_timeout_seconds must not be negative")
        record = CredentialRecord(kind="access", principal=principal,
                                  idle_timeout_s=idle_timeout_s or policy.default_idle_timeout_s)
        return self._issue(record, ttl_s, created_by)

    def create_share(self, study_uid: str, patient_key: bytes, ttl_s: float, max_uses: int, pin: str,
                     created_by: str) -> Issued:
        """``patient_key``: the share's patient as keys.share_scope(PatientID, issuer)."""
        if bool(study_uid) == bool(patient_key):
            raise InvalidInput("a share names exactly one study or one patient")
        if ttl_s <= 0 or ttl_s > 90 * 86400:
            raise InvalidInput("ttl_seconds must be positive and at most 90 days")
        if max_uses < 0:
            raise InvalidInput("max_uses must not be negative")
        record = CredentialRecord(kind="share", study_instance_uid=study_uid, patient_key=patient_key,
                                  max_uses=max_uses)
        if pin:
            if not 4 <= len(pin) <= 32:
                raise InvalidInput("a PIN has 4 to 32 characters")
            record.pin_salt = os.urandom(16)
            record.pin_hash = _pin_hash(pin, record.pin_salt)
        return self._issue(record, ttl_s, created_by)

    def _issue(self, record: CredentialRecord, ttl_s: float, created_by: str) -> Issued:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        record.credential_id = token_hash(token).hex()[:16]
        record.created_by, record.created_at, record.expires_at = created_by, now, now + ttl_s
        key = token_hash(token)
        value = self._env.sealer.encode(record, _CREDENTIALS, key)
        self._env.write(lambda txn: txn.put(key, value, db=self._db[_CREDENTIALS]))
        return Issued(token, record)

    def _opened(self, key: bytes, value: bytes) -> CredentialRecord:
        # Written back with encode(), which keeps the seal and never writes the scope in plain.
        return self._env.sealer.decode(CredentialRecord, value, _CREDENTIALS, key)

    # -- checking ----------------------------------------------------------

    def authenticate(self, token: str, pin: str | None) -> CredentialRecord:
        """The live credential for ``token``, its use counted; Unauthenticated otherwise."""
        key = token_hash(token)
        now = self._clock()

        def op(txn: lmdb.Transaction) -> CredentialRecord | tuple[str, str, bool]:
            value = txn.get(key, db=self._db[_CREDENTIALS])
            if value is None:
                return "unknown token", f"token:{key.hex()[:16]}", False
            record = self._opened(key, value)
            problem = _problem(record, now, pin)
            locked = False
            if problem == "wrong PIN":
                record.pin_failures += 1
                if record.pin_failures >= MAX_PIN_FAILURES:
                    record.revoked_at = now  # locked: too many wrong PINs
                    problem, locked = f"wrong PIN; locked after {MAX_PIN_FAILURES} wrong PINs", True
            elif problem is None:
                record.uses += 1
                record.last_used_at = now
            txn.put(key, encode(record), db=self._db[_CREDENTIALS])
            return (problem, holder(record), locked) if problem else record

        outcome = self._env.write(op)
        if isinstance(outcome, tuple):
            problem, who, locked = outcome
            raise Unauthenticated(f"credential refused: {problem}", who=who, locked_out=locked)
        return outcome

    def live_share(self, token: str) -> CredentialRecord | None:
        """The share grant ``token`` names, while it could still be used; no use counted, no PIN asked.

        For the share page, which shows whether to ask for a PIN before anything is read.
        """
        key = token_hash(token)
        with self._env.read() as txn:
            value = txn.get(key, db=self._db[_CREDENTIALS])
        if value is None:
            return None
        record = self._opened(key, value)
        if record.kind != "share" or _problem(record, self._clock(), None) not in (None, "wrong PIN"):
            return None
        return record

    def still_live(self, key: bytes) -> str | None:
        """Why the credential under ``key`` (its token hash) no longer holds, or None.

        For a call already admitted that is still answering: one read, no
        use counted, no PIN asked again.
        """
        with self._env.read() as txn:
            value = txn.get(key, db=self._db[_CREDENTIALS])
        if value is None:
            return "removed"
        record = self._opened(key, value)
        if record.revoked_at:
            return "revoked"
        return "expired" if self._clock() >= record.expires_at else None

    # -- listing and revoking ------------------------------------------------

    def list(self, kind: str, created_by: str | None = None) -> list[CredentialRecord]:
        with self._env.read() as txn:
            records = [self._opened(k, v) for k, v in txn.cursor(db=self._db[_CREDENTIALS])]
        return sorted((r for r in records if r.kind == kind and created_by in (None, r.created_by)),
                      key=lambda r: r.created_at)

    def revoke(self, credential_id: str, kind: str, allowed: Callable[[CredentialRecord], bool]) -> None:
        now = self._clock()

        def op(txn: lmdb.Transaction) -> bool:
            for key, value in txn.cursor(db=self._db[_CREDENTIALS]):
                record = self._opened(key, value)
                if record.credential_id == credential_id and record.kind == kind and allowed(record):
                    record.revoked_at = record.revoked_at or now
                    txn.put(key, encode(record), db=self._db[_CREDENTIALS])
                    return True
            return False

        if not self._env.write(op):
            raise NotFound(f"no {kind} {shown(credential_id)} of yours")

    def revoke_identity(self, identity: str, reason: str, by: str) -> None:
        self._revoke_certificate(identity.encode(), reason, by)

    def revoke_serial(self, canonical_serial: str, reason: str, by: str) -> None:
        """``canonical_serial``: as serials.normalise_serial gives it."""
        self._revoke_certificate(f"serial:{canonical_serial}".encode(), reason, by)

    def _revoke_certificate(self, key: bytes, reason: str, by: str) -> None:
        record = RevocationRecord(reason=reason, revoked_at=self._clock(), revoked_by=by)
        self._env.write(lambda txn: txn.put(key, encode(record), db=self._db["revoked_certificates"]))

    def certificate_revoked(self, identities: Iterable[str], canonical_serial: str) -> bool:
        """Whether any of the certificate's identities, or its serial, is on the revocation list."""
        names = [i.encode() for i in identities]
        if canonical_serial:
            names += [f"serial:{form}".encode() for form in stored_forms(canonical_serial)]
        with self._env.read() as txn:
            db = self._db["revoked_certificates"]
            return any(txn.get(name, db=db) is not None for name in names)

    # -- break-glass -----------------------------------------------------------

    def break_glass(self, principal: str, reason: str, minutes: int) -> BreakGlassGrant:
        if len(reason.strip()) < 10:
            raise InvalidInput("break-glass needs a typed reason of at least 10 characters")
        if not 1 <= minutes <= 240:
            raise InvalidInput("break-glass lasts 1 to 240 minutes")
        now = self._clock()
        grant = BreakGlassGrant(principal=principal, reason=reason.strip()[:500], granted_at=now,
                                expires_at=now + minutes * 60)
        self._env.write(lambda txn: txn.put(principal.encode(), encode(grant), db=self._db["break_glass"]))
        return grant

    def ended_break_glass(self) -> list[BreakGlassGrant]:
        """Grants that ran out and whose end is not recorded yet."""
        now = self._clock()
        with self._env.read() as txn:
            grants = [decode(BreakGlassGrant, v) for _, v in txn.cursor(db=self._db["break_glass"])]
        return [g for g in grants if g.expires_at <= now and not g.end_recorded]

    def break_glass_end_recorded(self, grant: BreakGlassGrant) -> None:
        """Marks the end of ``grant`` recorded (unless a new grant replaced it meanwhile)."""

        def op(txn: lmdb.Transaction) -> None:
            value = txn.get(grant.principal.encode(), db=self._db["break_glass"])
            if value is None:
                return
            current = decode(BreakGlassGrant, value)
            if current.granted_at == grant.granted_at:
                current.end_recorded = True
                txn.put(grant.principal.encode(), encode(current), db=self._db["break_glass"])

        self._env.write(op)

    def active_break_glass(self, principal: str) -> BreakGlassGrant | None:
        with self._env.read() as txn:
            value = txn.get(principal.encode(), db=self._db["break_glass"])
        grant = decode(BreakGlassGrant, value) if value is not None else None
        return grant if grant is not None and grant.expires_at > self._clock() else None


def holder(record: CredentialRecord) -> str:
    """Who a credential speaks for: its principal, or ``share:<id>`` for a share grant."""
    return f"share:{record.credential_id}" if record.kind == "share" else record.principal


def _problem(record: CredentialRecord, now: float, pin: str | None) -> str | None:
    if record.revoked_at:
        return "revoked"
    if now >= record.expires_at:
        return "expired"
    if record.idle_timeout_s and record.last_used_at and now - record.last_used_at > record.idle_timeout_s:
        return "idle too long"
    if record.max_uses and record.uses >= record.max_uses:
        return "use limit reached"
    if record.pin_hash and not (pin and hmac.compare_digest(_pin_hash(pin, record.pin_salt), record.pin_hash)):
        return "wrong PIN"
    return None


def _pin_hash(pin: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, _PIN_ITERATIONS)
