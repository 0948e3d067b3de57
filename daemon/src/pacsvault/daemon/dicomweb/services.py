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
        return f"{request.scheme}://{request.host}{self.web.base_path}"
