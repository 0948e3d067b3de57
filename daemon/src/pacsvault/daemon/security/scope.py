"""The caller of the call being served, for the domain layer that must narrow
what it answers (share grants) or flag what it did (break-glass)."""

from __future__ import annotations

from contextvars import ContextVar

from pacsvault.daemon.security.principals import Principal

current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)
