"""Break-glass ends on its own, when its time runs out: nobody calls anything. The back office
looks for grants that ran out and records each end, a security alert (ATNA Emergency Override
Stopped), once: an end recorded is marked in the index, so no other pass and no restart repeats it
(a crash between the two repeats it once at most)."""

from __future__ import annotations

import datetime

from pacsvault.daemon.audit.alerts import AlertKind, AlertSink
from pacsvault.daemon.security.credentials import CredentialStore

__all__ = ["BreakGlassWatch"]


class BreakGlassWatch:
    def __init__(self, credentials: CredentialStore, alerts: AlertSink) -> None:
        self._credentials, self._alerts = credentials, alerts

    def run_once(self) -> int:
        """Records the end of every grant that ran out since the last pass; returns how many."""
        ended = self._credentials.ended_break_glass()
        for grant in ended:
            # The reason stays in the grant's own records (it often names a patient).
            self._alerts.alert(AlertKind.BREAK_GLASS_ENDED,
                               f"break-glass of {grant.principal} ended at {_utc(grant.expires_at)}",
                               principal=grant.principal, granted_at=grant.granted_at, expires_at=grant.expires_at)
            self._credentials.break_glass_end_recorded(grant)
        return len(ended)


def _utc(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
