"""
Simulated devices of every built-in protocol, for trying a hub and for the bench.

Each protocol's module has a sans-IO device model (C{hello}, C{heartbeat}, C{position},
C{feed} answering what the hub sends the way real devices do); L{devicehub.devices.simulate.fleet}
runs many of them over real connections (C{devicehub simulate}).
"""

from importlib import import_module

MODELS = {
    "jsonl": "devicehub.devices.simulate.jsonl:JsonlDevice",
    "watch": "devicehub.devices.simulate.watch:WatchDevice",
    "gt06": "devicehub.devices.simulate.gt06:Gt06Device",
    "teltonika": "devicehub.devices.simulate.teltonika:TeltonikaDevice",
}


def model(protocol: str):
    """The simulated device class of C{protocol}."""
    module, _, name = MODELS[protocol].partition(":")
    return getattr(import_module(module), name)
