"""ZeroMQ addresses as devicehub accepts them, in twistd's options and in the CLI."""

import re

_ADDRESS = re.compile(r"(tcp|ipc|inproc)://\S+")
EXAMPLE = "tcp://127.0.0.1:5555"

DEFAULT_FRONTEND = "tcp://127.0.0.1:5555"
"""The broker's frontend, where clients (api, Demand, CLI) reach it."""
DEFAULT_BACKEND = "tcp://127.0.0.1:5556"
"""The broker's backend, where nodes reach it."""
DEFAULT_EVENTS = "tcp://127.0.0.1:5557"
"""Where the broker publishes device events."""


def addresses(value: str) -> tuple[str, ...]:
    """The addresses of a comma list (several brokers' frontends or backends, CONTRACT §6)."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def address_problem(value: str, *, connect: bool = False) -> str | None:
    """
    Why C{value} is not a usable ZeroMQ address (C{tcp://HOST:PORT}, C{ipc://PATH},
    C{inproc://NAME}), or None when it is. With C{connect}, the wildcards only a
    bind understands (C{*}, port 0) are refused too.
    """
    if not _ADDRESS.fullmatch(value):
        return f"{value!r} is not a ZeroMQ address like {EXAMPLE}"
    if not value.startswith("tcp://"):
        return None
    host, colon, port = value[len("tcp://"):].rpartition(":")
    wildcards = ("*",) if connect else ()
    if not colon or not host or host in wildcards:
        return f"{value!r} lacks a host: use tcp://HOST:PORT, like {EXAMPLE}"
    if port == "*" and not connect:
        return None
    if not (port.isascii() and port.isdigit()) or not (0 if not connect else 1) <= int(port) <= 65535:
        return f"{value!r} has no valid port (1..65535): use tcp://HOST:PORT, like {EXAMPLE}"
    return None
