"""What pydicom says about an instance it reads: one summary line per instance, not one line per complaint.

pydicom reports a file's defects (an IS value that is no number, explicit VR
announced but implicit found, ...) twice: on the ``pydicom`` logger and as a
Python warning, which Python prints with the path of pydicom's own source
file. Left alone, a modality that writes one bad value floods the log with a
line per element and file paths. Here the warnings are silenced for the
whole process (``warnings.catch_warnings`` around each read is not thread
safe: one thread's exit restores another's filters) and the log records are
collected per read: the caller of :func:`summarised` logs one line naming the
instance, with the complaints' kinds and counts and without the values, which
may be a patient's name or ID.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

log = logging.getLogger("pacsvault.dicom")
_current: contextvars.ContextVar[Notes | None] = contextvars.ContextVar("pydicom_notes", default=None)
# A value pydicom quotes, or a URL it points at.
_QUOTED = re.compile(r"""'[^']*'|"[^"]*"|<[^>]*>""")
_MOST_KINDS = 5


@dataclass
class Notes:
    """pydicom's complaints during one read, and what the summary calls the thing read."""

    subject: str = "a DICOM file"
    messages: list[str] = field(default_factory=list)

    def summary(self) -> str:
        kinds = Counter(_kind(m) for m in self.messages)
        shown = [kind if n == 1 else f"{kind} (x{n})" for kind, n in kinds.most_common(_MOST_KINDS)]
        more = len(kinds) - len(shown)
        return (f"{self.subject}: {len(self.messages)} DICOM warning{'s' * (len(self.messages) != 1)} "
                f"from pydicom: {'; '.join(shown)}" + (f"; and {more} other kinds" if more > 0 else ""))


@contextlib.contextmanager
def summarised(level: int = logging.INFO) -> Iterator[Notes]:
    """Collects what pydicom logs in this context; logs one summary line at ``level`` if it said anything.

    Set ``notes.subject`` (e.g. to the instance's SOP Instance UID) once it is known.
    """
    notes = Notes()
    token = _current.set(notes)
    try:
        yield notes
    finally:
        _current.reset(token)
        if notes.messages:
            log.log(level, "%s", notes.summary())


def _kind(message: str) -> str:
    """The complaint without its values: its first sentence, quoted parts replaced by '...'."""
    first = message.strip().split(". ", 1)[0].rstrip(".")
    return _QUOTED.sub("...", first)[:160]


class _Collector(logging.Handler):
    """pydicom's log records: into the current read's notes, else to DEBUG (values stripped)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record must not break a read
            return
        notes = _current.get()
        if notes is not None:
            notes.messages.append(message)
        elif record.levelno >= logging.WARNING:
            log.debug("pydicom: %s", _kind(message))


def _install() -> None:
    """Once per process, at import, before any serving thread reads DICOM."""
    pydicom_log = logging.getLogger("pydicom")
    if not any(isinstance(h, _Collector) for h in pydicom_log.handlers):
        pydicom_log.addHandler(_Collector())
        pydicom_log.propagate = False  # the summary speaks for it
    # pydicom's warn_and_log() logs every warning too: the log copy is the one kept.
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


_install()
