"""L{BrokerSettings}: what the broker role is told, validated once by the options."""

from dataclasses import dataclass

from devicehub.common.addresses import DEFAULT_BACKEND, DEFAULT_EVENTS, DEFAULT_FRONTEND
from devicehub.common.drain import DEFAULT_DRAIN_TIMEOUT

DEFAULT_NODE_TTL = 5.0
"""Seconds without a message from a node after which it is declared dead."""
DEFAULT_GRACE = 0.5
"""Seconds the broker waits past a command's timeout for the node's answer."""
DEFAULT_MAX_CLIENT_INFLIGHT = 10_000
"""Commands one client may have routed and unanswered at once."""
DELIVERY_TIMEOUT = 10.0
"""Seconds a device has to ack a queued command delivered at its login (see --command-timeout)."""


@dataclass(frozen=True)
class BrokerSettings:
    """The broker role's settings (C{twistd devicehub} options of the same names)."""

    frontend: str = DEFAULT_FRONTEND
    """ZeroMQ address to bind for clients."""
    backend: str = DEFAULT_BACKEND
    """ZeroMQ address to bind for nodes."""
    events: str | None = DEFAULT_EVENTS
    """ZeroMQ address to publish device events on (PUB), or None for none."""
    store: str | None = None
    """The queue of commands for offline devices: a SQLite file or a postgresql:// URL; None: no queue."""
    nodeTtl: float = DEFAULT_NODE_TTL
    grace: float = DEFAULT_GRACE
    maxClientInflight: int = DEFAULT_MAX_CLIENT_INFLIGHT
    deliveryTimeout: float = DELIVERY_TIMEOUT
    """Seconds a device has to ack a queued command delivered to it."""
    drainTimeout: float = DEFAULT_DRAIN_TIMEOUT
    curveKeys: str | None = None
    """A key directory (L{devicehub.wire.curve}): admit only authorized clients and nodes."""
    warmup: float | None = None
    """
    Seconds after start during which the directory may still miss devices of nodes that
    have not reported yet (None: one node heartbeat plus the grace); meanwhile, questions
    it cannot answer are answered unavailable.
    """
