"""The CLI's exit codes (README "Exit codes"), and the one-line message for each error.

Scripts branch on these, so each means one thing:

    0    done
    1    the command worked and reports trouble: health not healthy, replication past
         its RPO, the audit trail not intact, a key re-wrap failed, a disk capture not healthy
    2    usage: unknown command or option, a bad or missing argument
    3    not found: no such patient, study, series, instance, share, token or volume
    4    permission denied: not authenticated, or the principal lacks the role
    5    unavailable: appliance unreachable or shutting down, a volume offline, no answer
         in time, or full / busy (RESOURCE_EXHAUSTED); trying again later may work
    6    rejected input: the appliance refused what was sent (not DICOM, malformed, a bad
         date range, the same UID with other bytes, not possible in its state), or a local
         file or folder cannot be used
    7    partial success: some of the work was done and some refused (store, restore)
    8    data loss: the appliance's copy is corrupt and unrepairable, or received bytes
         failed their digest (nothing was written under the final name)
    9    any other failure of the appliance (INTERNAL, UNIMPLEMENTED, ...)
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

from pacsvault.client import (
    Conflict,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    IntegrityError,
    InvalidInput,
    NotFound,
    PacsvaultError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

OK = 0
UNHEALTHY = 1
USAGE = 2
NOT_FOUND = 3
PERMISSION_DENIED = 4
UNAVAILABLE = 5
REJECTED = 6
PARTIAL = 7
DATA_LOSS = 8
FAILURE = 9
INTERRUPTED = 130

_BY_ERROR: tuple[tuple[type[PacsvaultError], int, str], ...] = (
    (NotFound, NOT_FOUND, "not found"),
    (Unauthenticated, PERMISSION_DENIED, "not authenticated"),
    (PermissionDenied, PERMISSION_DENIED, "permission denied"),
    (DeadlineExceeded, UNAVAILABLE, "no answer in time"),
    (Unavailable, UNAVAILABLE, "unavailable"),
    (ResourceExhausted, UNAVAILABLE, "refused for lack of room or capacity"),
    (InvalidInput, REJECTED, "rejected"),
    (Conflict, REJECTED, "conflict"),
    (FailedPrecondition, REJECTED, "not possible now"),
    (IntegrityError, DATA_LOSS, "integrity check failed"),
    (DataLoss, DATA_LOSS, "data loss"),
)


def for_error(error: PacsvaultError) -> int:
    return next((code for kind, code, _ in _BY_ERROR if isinstance(error, kind)), FAILURE)


def describe(error: PacsvaultError, target: str) -> str:
    """One line for people: what kind of failure, the appliance's words, the status name."""
    words = next((w for kind, _, w in _BY_ERROR if isinstance(error, kind)), "failed")
    details = " ".join(error.details().split())
    if isinstance(error, Unavailable) and not isinstance(error, DeadlineExceeded) and (
            "failed to connect" in details.lower() or "connection refused" in details.lower()):
        return (f"cannot reach the appliance at {target} (is pacsvaultd running there? "
                f"--server or $PACSVAULT_SERVER choose another): {details} ({error.code().name})")
    return f"{words}: {details} ({error.code().name})"
