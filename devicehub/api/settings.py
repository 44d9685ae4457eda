"""L{ApiSettings}: what the api role is told, validated once by the options."""

from dataclasses import dataclass

from devicehub.common.addresses import DEFAULT_EVENTS, DEFAULT_FRONTEND
from devicehub.client.many import DEFAULT_INFLIGHT
from devicehub.common.drain import DEFAULT_DRAIN_TIMEOUT

DEFAULT_HTTP = "tcp:8080:interface=127.0.0.1"
DEFAULT_COMMAND_TIMEOUT = 10.0
"""Seconds a command waits for the device's ack when the request gives no timeout."""


@dataclass(frozen=True)
class ApiSettings:
    """The api role's settings (C{twistd devicehub} options of the same names)."""

    http: str = DEFAULT_HTTP
    """The server endpoint string to listen for HTTP on."""
    frontend: str = DEFAULT_FRONTEND
    events: str | None = DEFAULT_EVENTS
    """The broker's event publisher, for C{/events}; None: no event stream."""
    commandTimeout: float = DEFAULT_COMMAND_TIMEOUT
    drainTimeout: float = DEFAULT_DRAIN_TIMEOUT
    token: str | None = None
    """When set, every route but C{/health} needs C{Authorization: Bearer TOKEN}."""
    accessLog: str | None = None
    """A file to append the access log to (Combined Log Format), C{"-"} for the process log, or None."""
    curveKeys: str | None = None
    jobInflight: int = DEFAULT_INFLIGHT
    """Commands one job (C{POST /commands}) keeps in flight at most."""
