"""devicehub: send commands to always-connected devices through a ZeroMQ broker."""

from .client import BrokerUnavailable, Demand, DevicehubError, RequestRejected
from .results import NO, OK, TIMEOUT, Reply

__all__ = [
    "Demand",
    "Reply",
    "OK",
    "NO",
    "TIMEOUT",
    "BrokerUnavailable",
    "DevicehubError",
    "RequestRejected",
]
