"""devicehub: send commands to always-connected devices through a ZeroMQ broker."""

__version__ = "0.1.0"
"""The version of devicehub: the one place it is written (setup.cfg reads it from here)."""

from devicehub.client.demand import Demand
from devicehub.common.errors import BrokerUnavailable, Busy, CommandStoreFailed, DevicehubError, RequestRejected
from devicehub.client.events import Events
from devicehub.common.results import NO, OK, QUEUED, TIMEOUT, Reply

__all__ = [
    "Demand",
    "Events",
    "Reply",
    "OK",
    "NO",
    "TIMEOUT",
    "QUEUED",
    "BrokerUnavailable",
    "Busy",
    "CommandStoreFailed",
    "DevicehubError",
    "RequestRejected",
]
