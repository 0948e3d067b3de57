"""The caller of the call being served, and how a share grant narrows what it sees.

A share grant sees its own study, or every study of its own patient, and
nothing shows that anything else exists: outside its scope every answer is
NOT_FOUND or empty, exactly as if nothing were there.
"""

from __future__ import annotations

import dataclasses
from contextvars import ContextVar

from pacsvault.daemon.errors import NotFound
from pacsvault.daemon.index import keys
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.keys import IndexTags
from pacsvault.daemon.index.query import Level, Query
from pacsvault.daemon.security.principals import Principal

current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)


def narrow_to_scope(query: Query) -> Query | None:
    """The query limited to the caller's share scope; None when it asks outside it."""
    principal = current_principal.get()
    if principal is None or principal.scope is None:
        return query
    scope = principal.scope
    if scope.study_instance_uid:
        if query.study_instance_uid not in ("", scope.study_instance_uid) or query.level == Level.PATIENT:
            return None
        return dataclasses.replace(query, study_instance_uid=scope.study_instance_uid)
    patient_id, issuer = keys.split_share_scope(scope.patient_key)
    if query.patient_id not in ("", patient_id) or query.issuer_of_patient_id not in ("", issuer):
        return None
    return dataclasses.replace(query, patient_id=patient_id, issuer_of_patient_id=issuer, issuer_exact=True)


class ScopeGuard:
    """Refuses, as NOT_FOUND, a study outside the caller's share scope."""

    def __init__(self, catalog: Catalog, tags: IndexTags) -> None:
        self._catalog, self._tags = catalog, tags

    def check(self, study_uid: str, not_found: str) -> None:
        principal = current_principal.get()
        if principal is None or principal.scope is None:
            return
        scope = principal.scope
        if scope.study_instance_uid:
            if study_uid != scope.study_instance_uid:
                raise NotFound(not_found)
            return
        # The share keeps its patient as an identity (sealed with the grant); the study links to
        # its patient by keyed tags: compare tags, nothing needs opening.
        patient_key = self._tags.patient_key(*keys.split_share_scope(scope.patient_key))
        study = self._catalog.study(study_uid)
        if study is None or study.patient_key != patient_key:
            raise NotFound(not_found)
