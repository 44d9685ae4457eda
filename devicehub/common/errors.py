"""The errors a devicehub call can fail with (CONTRACT §3)."""


class DevicehubError(Exception):
    """Base class of devicehub's errors."""


class BrokerUnavailable(DevicehubError):
    """The broker did not answer in time (down, unreachable or overloaded)."""


class CommandStoreFailed(BrokerUnavailable):
    """The broker's queue of commands for offline devices failed (its database)."""


class RequestRejected(DevicehubError, ValueError):
    """The broker refused a request as malformed."""


class Busy(DevicehubError):
    """Refused for load: the device has too many unanswered commands, or this client too many calls in flight."""
