"""What a volume must keep a blob for, where the volume itself can enforce it (an object store's Object Lock).

Computed by ``tiering.retention`` from the rules the daemon keeps (a minimum
retention, legal holds); the object-store volume applies it to the object so
that the store refuses an early delete even to us.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Retention"]


@dataclass(frozen=True)
class Retention:
    """Keep until a date (epoch seconds), and / or under a legal hold until it is lifted."""

    until_epoch_s: float | None = None
    legal_hold: bool = False
    # COMPLIANCE: nobody can shorten it or delete early; GOVERNANCE: a user with the bypass right can.
    mode: str = "COMPLIANCE"

    @property
    def any(self) -> bool:
        return self.until_epoch_s is not None or self.legal_hold
