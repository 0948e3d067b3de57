"""Find: patients, studies, series and instances by their attributes, within the caller's scope."""

from __future__ import annotations

from pacsvault.daemon.config import LimitsConfig
from pacsvault.daemon.errors import InvalidInput
from pacsvault.daemon.index import query as query_module
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.query import Level, Match, Query
from pacsvault.daemon.security.scope import narrow_to_scope


class Search:
    def __init__(self, env: IndexEnvironment, limits: LimitsConfig) -> None:
        self._env, self._limits = env, limits

    def find(self, query: Query, page_size: int, page_token: str) -> tuple[list[Match], str]:
        narrowed = narrow_to_scope(query)
        if narrowed is None:
            return [], ""  # outside a share's scope: as if nothing existed
        return query_module.find(self._env, narrowed, self._page_size(page_size), page_token)

    def patient_studies(self, patient_id: str, issuer: str, page_size: int, page_token: str) -> tuple[list[Match], str]:
        if not patient_id:
            raise InvalidInput("patient_id is required")
        query = Query(Level.STUDY, patient_id=patient_id, issuer_of_patient_id=issuer)
        return self.find(query, page_size, page_token)

    def all_patient_studies(self, patient_id: str, issuer: str) -> list[Match]:
        """Every page of ``patient_studies``."""
        found, token = [], ""
        while True:
            page, token = self.patient_studies(patient_id, issuer, self._limits.max_page_size, token)
            found.extend(page)
            if not token:
                return found

    def _page_size(self, requested: int) -> int:
        if requested < 0:
            raise InvalidInput("page_size must not be negative")
        return min(requested or self._limits.default_page_size, self._limits.max_page_size)
