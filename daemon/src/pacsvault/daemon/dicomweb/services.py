"""What the DICOMweb handlers work with: the use cases, the guard, and the door's settings."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from pacsvault.daemon.config import LimitsConfig, WebConfig
from pacsvault.daemon.dicomweb.guard import Guard
from pacsvault.daemon.ingest import Ingest
from pacsvault.daemon.retrieval import Retrieval
from pacsvault.daemon.search import Search
from pacsvault.daemon.security.credentials import CredentialStore


@dataclass(frozen=True)
class Services:
    guard: Guard
    search: Search
    retrieval: Retrieval
    ingest: Ingest
    credentials: CredentialStore
    limits: LimitsConfig
    web: WebConfig

    def root(self, request: web.Request) -> str:
        """The DICOMweb root as the caller reached it, so the URLs in answers resolve for them."""
        return f"{request.scheme}://{_host(request)}{self.web.base_path}"


def _host(request: web.Request) -> str:
    """The Host header, with the port the caller connected to when it left it out (dicomweb-client
    sends "Host: 127.0.0.1" to any port), so that URLs made from it resolve."""
    host = request.host
    if host.rpartition("]")[2].count(":") or request.transport is None:
        return host
    sockname = request.transport.get_extra_info("sockname")
    port = sockname[1] if sockname else 0
    default = 443 if request.scheme == "https" else 80
    return f"{host}:{port}" if port and port != default else host
