"""devicehub: send commands to always-connected devices through a ZeroMQ broker."""

from .client import BrokerUnavailable, Busy, Demand, DevicehubError, RequestRejected
from .results import NO, OK, TIMEOUT, Reply

__all__ = [
    "Demand",
    "Reply",
    "OK",
    "NO",
    "TIMEOUT",
    "BrokerUnavailable",
    "Busy",
    "DevicehubError",
    "RequestRejected",
]
