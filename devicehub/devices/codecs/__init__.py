"""
The device protocols a node can speak, by name (C{--listen NAME=ENDPOINT}).

The built-in ones live in this package, one module each; a third party adds one
without forking devicehub by publishing a L{devicehub.devices.codec.Codec} class
under the Python entry point group C{devicehub.codecs} (docs/protocols.md).
"""

from importlib import import_module
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "devicehub.codecs"

BUILTIN = {
    "jsonl": "devicehub.devices.codecs.jsonl:JsonLinesCodec",
    "watch": "devicehub.devices.codecs.watch.codec:WatchCodec",
    "gt06": "devicehub.devices.codecs.gt06.codec:Gt06Codec",
    "teltonika": "devicehub.devices.codecs.teltonika.codec:TeltonikaCodec",
}


class UnknownProtocol(LookupError):
    """No codec has that name."""


def names() -> list[str]:
    """Every protocol name known: the built-in ones, then those of installed plugins."""
    plugins = sorted(point.name for point in entry_points(group=ENTRY_POINT_GROUP) if point.name not in BUILTIN)
    return [*BUILTIN, *plugins]


def load(name: str):
    """The codec class of protocol C{name}."""
    if name in BUILTIN:
        module, _, attribute = BUILTIN[name].partition(":")
        return getattr(import_module(module), attribute)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name == name:
            codec = point.load()
            if getattr(codec, "name", None) != name:
                raise UnknownProtocol(f"the codec of plugin {name!r} calls itself {getattr(codec, 'name', None)!r}")
            return codec
    raise UnknownProtocol(f"unknown protocol {name!r} (known: {', '.join(names())})")
