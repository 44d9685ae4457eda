"""
L{Upstreams}: a node's links to every broker it reports to, one L{BrokerLink} per
C{--backend} (CONTRACT §6). Each broker gets the node's whole state (its snapshot, every
login and logout, every uplink), so each holds the whole directory and publishes every
event; each command's answer goes back through the link it came on.
"""

from typing import Any

from twisted.application.service import MultiService

from devicehub.node.link import BrokerLink
from devicehub.node.node import Node
from devicehub.wire.link import Attach


class Upstreams(MultiService):
    """The node's brokers: what the node reports goes to each of them."""

    def __init__(self, node: Node, backends: tuple[str, ...], reactor, curve=None, local: Attach | None = None) -> None:
        """@param local: the broker of this process; the first backend (the one it binds) is reached through it."""
        super().__init__()
        self.node = node
        self.links = [
            BrokerLink(node, backend, reactor, curve=curve, local=local if index == 0 else None)
            for index, backend in enumerate(backends)
        ]
        for link in self.links:
            link.setServiceParent(self)

    @property
    def registered(self) -> bool:
        """Whether at least one broker has this node registered."""
        return any(link.registered for link in self.links)

    def startService(self) -> None:
        super().startService()
        self.node.upstream = self

    def leave(self) -> None:
        """Leave every broker's directory (L{BrokerLink.leave}); report nothing more."""
        self.node.upstream = None
        for link in self.links:
            link.leave()

    def online(self, imei: str, conn: int, since: float, protocol: str = "jsonl") -> None:
        for link in self.links:
            link.online(imei, conn, since, protocol)

    def offline(self, imei: str, conn: int, reason: str = "closed") -> None:
        for link in self.links:
            link.offline(imei, conn, reason)

    def uplink(self, imei: str, message: dict[str, Any], ts: float, protocol: str | None = None) -> None:
        for link in self.links:
            link.uplink(imei, message, ts, protocol)
