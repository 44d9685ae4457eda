"""devicehub: send commands to always-connected devices through a ZeroMQ broker."""

from .client import BrokerUnavailable, Busy, CommandStoreFailed, Demand, DevicehubError, RequestRejected
from .events import Events
from .results import NO, OK, QUEUED, TIMEOUT, Reply

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
