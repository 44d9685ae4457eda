"""
L{Reads}: the broker's answers to questions no node is asked: presence, listings, totals,
health, and a queued command's record (CONTRACT §3, §6).

A broker that has just started may not know every device yet: until its warm-up ends
(one node heartbeat, and every snapshot that came during it loaded), what the directory
cannot vouch for is answered unavailable, never C{no}.
"""

from typing import Any, Callable

from devicehub.broker.directory import Directory
from devicehub.broker.nodes import NodeRegistry
from devicehub.broker.queue import OfflineQueue
from devicehub.broker.store import CommandStore
from devicehub.common.results import NO, OK
from devicehub.wire.frames import Message

Reply = Callable[[bytes, bytes, dict[str, Any]], None]
Error = Callable[[bytes, bytes, str, str], None]


class Reads:
    """Answers clients' read requests from the directory, the node registry and the queue."""

    def __init__(
        self, clock, directory: Directory, registry: NodeRegistry, queue: OfflineQueue | None,
        store: CommandStore | None, reply: Reply, error: Error, warmUntil: float,
    ) -> None:
        """@param warmUntil: until then, a device missing from the directory may be on a node that has not reported."""
        self.clock = clock
        self.directory = directory
        self.registry = registry
        self.queue = queue
        self.store = store
        self.reply = reply
        self.error = error
        self.warmUntil = warmUntil

    @property
    def warm(self) -> bool:
        """The warm-up is over: every node that was there has reported, its snapshot loaded."""
        return self.clock.seconds() >= self.warmUntil and not self.registry.loadingSince(self.warmUntil)

    def warmingUp(self, client: bytes, rid: bytes) -> bool:
        """
        Answer unavailable while nodes may not have reported yet (a broker that just
        started would otherwise say NO of devices that are online).
        """
        if self.warm:
            return False
        self.error(client, rid, "unavailable", "broker starting: not every node has reported yet")
        return True

    def find(self, client: bytes, message: Message) -> None:
        online = self.directory.owner(message.body["imei"]) is not None
        if online or not self.warmingUp(client, message.rid):
            self.reply(client, message.rid, {"result": OK if online else NO})

    def locate(self, client: bytes, message: Message) -> None:
        """L{find}, with the node, protocol and login time of a device online."""
        owner = self.directory.owner(message.body["imei"])
        if owner is not None:
            self.reply(client, message.rid, {"result": OK, "node": owner.node.name, "protocol": owner.protocol,
                                             "since": owner.since})
        elif not self.warmingUp(client, message.rid):
            self.reply(client, message.rid, {"result": NO})

    def list(self, client: bytes, message: Message) -> None:
        if not self.warmingUp(client, message.rid):
            devices = self.directory.page(message.body["num"], message.body["page"])
            self.reply(client, message.rid, {"devices": devices, "total": len(self.directory)})

    def total(self, client: bytes, message: Message) -> None:
        if not self.warmingUp(client, message.rid):
            self.reply(client, message.rid, {"total": len(self.directory)})

    def health(self, client: bytes, message: Message) -> None:
        if self.warmingUp(client, message.rid):
            return
        store = "none" if self.store is None else "ok" if self.store.healthy else "failing"
        self.reply(client, message.rid, {"nodes": self.registry.alive(), "total": len(self.directory), "store": store})

    def cluster(self, client: bytes, message: Message) -> None:
        """The devices of each node (as L{health}, per node)."""
        if not self.warmingUp(client, message.rid):
            perNode = {node.name: len(node.devices) for node in self.registry.nodes.values() if not node.leaving}
            self.reply(client, message.rid, {"perNode": perNode, "total": len(self.directory)})

    def _withQueue(self, client: bytes, message: Message) -> bool:
        if self.queue is None:
            self.error(client, message.rid, "invalid", "this broker keeps no queue (no --store)")
        return self.queue is not None

    def status(self, client: bytes, message: Message) -> None:
        if self._withQueue(client, message):
            self.queue.status(client, message.rid, message.body["id"])

    def waiting(self, client: bytes, message: Message) -> None:
        if self._withQueue(client, message):
            self.queue.waiting(client, message.rid, message.body["imei"])

    def cancel(self, client: bytes, message: Message) -> None:
        if self._withQueue(client, message):
            self.queue.cancel(client, message.rid, message.body["id"])
