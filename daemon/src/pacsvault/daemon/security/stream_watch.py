"""A long answer keeps checking that its caller may still have it.

A call is admitted once, at its start; a study can take minutes to stream.
Revoking a share, a token or a certificate must also stop the transfers it
already started, so a streaming answer asks a CredentialWatch between
messages. The check is one index read and runs at most every
``every_s`` seconds, so a fast transfer pays nothing measurable.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pacsvault.daemon.errors import Unauthenticated
from pacsvault.daemon.security.credentials import CredentialStore
from pacsvault.daemon.security.principals import Principal


class CredentialWatch:
    def __init__(self, credentials: CredentialStore, principal: Principal | None, *, every_s: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._credentials, self._principal = credentials, principal
        self._every_s, self._clock = every_s, clock
        self._checked = clock()  # admitted just now

    def check(self) -> None:
        """Unauthenticated when what the call was admitted on no longer holds."""
        principal, now = self._principal, self._clock()
        if principal is None or now - self._checked < self._every_s:
            return
        self._checked = now
        if principal.credential_key:
            problem = self._credentials.still_live(principal.credential_key)
            if problem is not None:
                raise Unauthenticated(f"the credential of {principal.id} was {problem} during the transfer, "
                                      "which stopped there", who=principal.id)
        certificate = principal.certificate
        if certificate is not None and self._credentials.certificate_revoked(certificate.uris, certificate.serial):
            raise Unauthenticated(f"the certificate of {certificate.described} was revoked during the transfer, "
                                  "which stopped there", who=principal.id)
