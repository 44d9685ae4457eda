"""The outcomes of a command (CONTRACT §3, and QUEUED), and a command's reply."""

from dataclasses import dataclass
from typing import Any

OK = "ok"
"""The device acknowledged the command (or, for a query, is online)."""
NO = "no"
"""The device is not online."""
TIMEOUT = "timeout"
"""The command was sent but the device did not acknowledge it in time."""

QUEUED = "queued"
"""The device is offline and the command was queued (asked for with C{queue=True})."""

RESULTS = frozenset((OK, NO, TIMEOUT))

BUSY = "busy"
"""Internal: the device has too many unanswered commands. Callers see L{devicehub.Busy}."""

REJECTED = "rejected"
"""Internal: the device's protocol cannot carry the command (its reply data says why). Callers see L{devicehub.RequestRejected}."""


@dataclass(frozen=True)
class Reply:
    """The outcome of a command and the C{data} of the device's ack, if any."""

    result: str
    data: Any = None
    id: str | None = None
    """The queued command's id when C{result} is QUEUED."""
