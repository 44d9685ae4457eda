"""devicehub: send commands to always-connected devices through a ZeroMQ broker."""

__version__ = "0.1.0"
"""The version of devicehub: the one place it is written (setup.cfg reads it from here)."""

from importlib import import_module

# Where each public name lives. They are imported when first used, not here: importing a
# module of the package (devicehub.common.reactor, before twistd picks a reactor) must not
# import txZMQ, which installs the default reactor as it is imported.
_PUBLIC = {
    "Demand": "devicehub.client.demand",
    "Events": "devicehub.client.events",
    "Reply": "devicehub.common.results",
    "OK": "devicehub.common.results",
    "NO": "devicehub.common.results",
    "TIMEOUT": "devicehub.common.results",
    "QUEUED": "devicehub.common.results",
    "BrokerUnavailable": "devicehub.common.errors",
    "Busy": "devicehub.common.errors",
    "CommandStoreFailed": "devicehub.common.errors",
    "DevicehubError": "devicehub.common.errors",
    "RequestRejected": "devicehub.common.errors",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str):
    """The public name C{name}, imported from its module on first use."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
