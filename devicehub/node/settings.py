"""L{NodeSettings}: what the node role is told, validated once by the options."""

from dataclasses import dataclass, field

from devicehub.common.addresses import DEFAULT_BACKEND, addresses
from devicehub.common.drain import DEFAULT_DRAIN_TIMEOUT
from devicehub.devices.session import DeviceSettings
from devicehub.node.allowlist import AllowList

DEFAULT_COMMAND_TIMEOUT = 10.0
"""Seconds a command waits for the device's ack when its caller gives no timeout."""


@dataclass(frozen=True)
class NodeSettings:
    """The node role's settings (C{twistd devicehub} options of the same names)."""

    name: str
    """The node's name in the directory and in logs (C{--node-id})."""
    devices: str | None = "tcp:7700"
    """The endpoint for JSON Lines devices (the same as C{("jsonl", devices)} in C{listen}), or None."""
    listen: tuple[tuple[str, str], ...] = ()
    """C{(protocol, endpoint)} pairs: a listener each, all feeding this node."""
    backend: str = DEFAULT_BACKEND
    """The broker backend, or a comma list of several brokers' backends (the node reports to each)."""
    commandTimeout: float = DEFAULT_COMMAND_TIMEOUT
    device: DeviceSettings = field(default_factory=DeviceSettings)
    """What every device session of this node is held to."""
    drainTimeout: float = DEFAULT_DRAIN_TIMEOUT
    curveKeys: str | None = None
    allow: "AllowList | str | None" = None
    """The allow-list (L{devicehub.node.allowlist}) or its file; None: any identity may log in."""

    @property
    def backends(self) -> tuple[str, ...]:
        """Every broker backend this node reports to."""
        return addresses(self.backend)

    @property
    def listeners(self) -> list[tuple[str, str]]:
        """Every C{(protocol, endpoint)} this node listens on, JSON Lines first."""
        return ([("jsonl", self.devices)] if self.devices is not None else []) + list(self.listen)
