"""The interceptor that enforces the access table on every call, before any handler runs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from pacsvault.daemon.errors import PermissionDenied, Unauthenticated
from pacsvault.daemon.security.access_table import allowed_roles
from pacsvault.daemon.security.principals import PrincipalResolver
from pacsvault.daemon.security.scope import current_principal
from pacsvault.daemon.service.call_wrapping import wrap_handler

log = logging.getLogger("pacsvault.access")


Refusal = Callable[..., None]  # (method, principal, outcome, peer, **detail)


class AuthorizationInterceptor(grpc.ServerInterceptor):
    def __init__(self, resolver: PrincipalResolver, on_refused: Refusal | None = None) -> None:
        self._resolver = resolver
        # Refusals go to the audit trail too (login failures, permission denials).
        self._on_refused = on_refused or (lambda *_: None)

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        return wrap_handler(handler, details.method, self._check)

    @contextlib.contextmanager
    def _check(self, method: str, context: grpc.ServicerContext) -> Iterator[None]:
        name = method.rsplit("/", 1)[-1]
        try:
            principal = self._resolver.resolve(context)
        except Unauthenticated as exc:
            log.warning("refused %s for %s: %s", name, exc.who or "an unidentified caller", exc)
            detail = {"locked_out": True} if exc.locked_out else {}
            self._on_refused(method, exc.who, "UNAUTHENTICATED", context.peer(), **detail)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except PermissionDenied as exc:
            log.warning("refused %s for %s: %s", name, exc.who or "an unidentified caller", exc)
            self._on_refused(method, exc.who, "PERMISSION_DENIED", context.peer())
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        needed = allowed_roles(method)
        if not principal.roles & needed:
            log.warning("refused %s for principal %s", name, principal.id)
            self._on_refused(method, principal.id, "PERMISSION_DENIED", context.peer())
            shown = ", ".join(sorted(r.value for r in needed)) or "nobody"
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"principal {principal.id} may not call {name} "
                                                             f"(allowed: {shown})")
        if principal.break_glass_reason:
            # The reason often names a patient: it is kept sealed in the audit trail, never in the log.
            log.warning("BREAK-GLASS %s by %s (reason of %d characters in the audit trail)", name, principal.id,
                        len(principal.break_glass_reason))
        else:
            log.info("call %s by %s", name, principal.id)
        token = current_principal.set(principal)
        try:
            yield
        finally:
            try:
                current_principal.reset(token)
            except ValueError:
                # A stream closed from another context: that context never saw the set.
                current_principal.set(None)
