"""The interceptor that enforces the access table on every call, before any handler runs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from pacsvault.daemon.security.access_table import allowed_roles
from pacsvault.daemon.security.principals import PrincipalResolver
from pacsvault.daemon.service.call_wrapping import wrap_handler

log = logging.getLogger(__name__)


class AuthorizationInterceptor(grpc.ServerInterceptor):
    def __init__(self, resolver: PrincipalResolver) -> None:
        self._resolver = resolver

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        return wrap_handler(handler, details.method, self._check)

    @contextlib.contextmanager
    def _check(self, method: str, context: grpc.ServicerContext) -> Iterator[None]:
        principal = self._resolver.resolve(context)
        if principal is None:
            log.warning("refused %s: the client certificate names no configured principal", method)
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          "your certificate is valid but names no principal configured on this appliance")
        needed = allowed_roles(method)
        if not principal.roles & needed:
            log.warning("refused %s for principal %s", method, principal.id)
            shown = ", ".join(sorted(r.value for r in needed)) or "nobody"
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"principal {principal.id} may not call {method.rsplit('/', 1)[-1]} (allowed: {shown})")
        yield
