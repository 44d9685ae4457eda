# -*- test-case-name: tests.test_directory -*-
"""
The nodes registered with the broker and which of them owns each device.

A node registers with C{hello} and a full snapshot, then reports each login and logout;
the newest login of a device wins, so a stale claim (a snapshot sent after a broker
restart, a node that was cut off) never takes a device from the node that holds it now.

A snapshot, and the devices of a node that leaves or is lost, can be a million devices:
both are worked through L{CHUNK} devices per reactor turn, so the broker keeps answering
meanwhile, and every answer is right at every turn:

  - a released node's devices are offline at once (the directory's ghosts);
  - a snapshot is only a node's past: a login or logout the node reports while its
    snapshot is loading is newer, so the snapshot's row for that device is applied first
    (if it is read yet) and then dropped; a login another node held and ended since the
    hello outdates an older row, as it would have had the snapshot loaded at once;
  - the warm-up (L{devicehub.broker.reads.Reads.warmingUp}) lasts until every snapshot
    that came during it is loaded;
  - the node gets its C{welcome} in its hello's turn, so it does not send its snapshot
    again while it loads.
"""

from collections import deque
from sys import intern
from typing import Any, Callable, Iterator

from twisted.logger import Logger

from devicehub.broker.directory import Directory, NodeRecord, Owner, Release
from devicehub.broker.loads import CHUNK, MAX_PARTS, Load, SnapshotLoads
from devicehub.broker.publish import EventPublisher
from devicehub.broker.routing import Routes, Send
from devicehub.common.imei import is_valid_imei
from devicehub.wire.frames import Message

log = Logger()

# Refusals remembered (to log each once per connection), at most.
MAX_REFUSED = 1000

class NodeRegistry(SnapshotLoads):
    """Registers nodes, keeps the directory current with what they report, and declares them dead."""

    def __init__(
        self, clock, directory: Directory, toNode: Send, events: EventPublisher, routes: Routes,
        nodeTtl: float, grace: float,
    ) -> None:
        self.clock = clock
        self.directory = directory
        self.toNode = toNode
        self.events = events
        self.routes = routes
        self.nodeTtl = nodeTtl
        self.heartbeat = nodeTtl / 3
        self.grace = grace
        self.nodes: dict[bytes, NodeRecord] = {}
        self.onOnline: Callable[[str], None] = lambda imei: None
        """Called when a device comes online on a node (to deliver its queued commands)."""
        self._refused: dict[bytes, str] = {}
        routes.onNodeIdle = self._idle
        directory.onReleased = self._released
        self.chunk = CHUNK
        self._loads: dict[NodeRecord, Load] = {}
        self._work: deque[Iterator[None]] = deque()
        self._turn = None

    def alive(self) -> int:
        """Nodes registered and not leaving."""
        return sum(not node.leaving for node in self.nodes.values())

    def hello(self, identity: bytes, body: dict[str, Any]) -> None:
        """Register (or refresh) a node from its full snapshot."""
        name, instance, now = body["node"], body["instance"], self.clock.seconds()
        node = self.nodes.get(identity)
        if node is None:
            for other in list(self.nodes.values()):
                if other.name != name:
                    continue
                if other.instance != instance and not other.leaving and now - other.lastSeen <= self.heartbeat + self.grace:
                    # Another live process with the same --node-id: taking its devices would
                    # start a tug of war between the two.
                    self._refuse(identity, name, f"node id {name!r} is in use by another live node")
                    return
                self.lost(other, "registered again from a new connection")
            node = self.nodes[identity] = NodeRecord(identity, name, now, instance)
            self._refused.pop(identity, None)
            log.info("Node {node} registered with {count} devices{more}", node=name, count=len(body["devices"]),
                     more=" and more in parts to come" if body.get("parts") else "")
        node.lastSeen = now
        previous = self._loads.pop(node, None)
        if previous is not None:  # a newer snapshot: it holds what the older one would have loaded
            previous.cancelled = True
        parts = body.get("parts", 0)
        expected = parts if isinstance(parts, int) and not isinstance(parts, bool) and 0 <= parts <= MAX_PARTS else 0
        load = self._loads[node] = Load(node, body["devices"], now, self.directory.releases, expected, lastPart=now)
        load.job = self._load(load)
        self._start(load.job)
        # Now, not once it is loaded: a node left without a welcome sends its whole snapshot again.
        self.toNode(identity, Message(b"welcome", b"", {"heartbeat": self.heartbeat}))

    def _refuse(self, identity: bytes, name: str, error: str) -> None:
        if self._refused.get(identity) != error:  # once per connection, not per hello
            if len(self._refused) >= MAX_REFUSED:
                self._refused.clear()
            self._refused[identity] = error
            log.error("Refused a node calling itself {node}: {error}", node=name, error=error)
        self.toNode(identity, Message(b"refused", b"", {"error": error}))

    def own(
        self, node: NodeRecord, imei: str, conn: int, since: float, reason: str = "login", protocol: str = "jsonl"
    ) -> None:
        """Give C{imei} to C{node}, unless another node holds a newer login of it."""
        current = self.directory.owner(imei)
        if current is not None and current.node is not node and current.since > since:
            # A stale claim (e.g. a snapshot sent after a broker restart): the newer login stays.
            self.toNode(node.identity, Message(b"drop", b"", {"imei": imei, "conn": conn}))
            return
        previous = self.directory.own(imei, node, conn, since, protocol)
        if previous is None or previous.conn != conn or previous.node is not node:
            moved = previous is not None and previous.node is not node
            data = {"reason": "moved", "from": previous.node.name} if moved else {"reason": reason}
            self.events.event(imei, node.name, "online", data, protocol=protocol)
            self.onOnline(imei)
        if previous is not None and previous.node is not node:
            log.info("{imei} moved from node {old} to node {new}", imei=imei, old=previous.node.name, new=node.name)
            self.toNode(previous.node.identity, Message(b"drop", b"", {"imei": imei, "conn": previous.conn}))

    def reportedOnline(self, node: NodeRecord, body: dict[str, Any]) -> None:
        """C{node} reports a login; its time is bounded by the broker's clock (a fast node clock wins nothing)."""
        imei = body["imei"]
        if is_valid_imei(imei) and not node.leaving:
            if self._loads:
                self._noticed(node, imei)
            protocol = body.get("protocol")
            since = min(body["since"], self.clock.seconds())
            # One string per protocol, not one per device (54 bytes each).
            protocol = intern(protocol) if isinstance(protocol, str) else "jsonl"
            self.own(node, imei, body["conn"], since, protocol=protocol)

    def reportedOffline(self, node: NodeRecord, body: dict[str, Any]) -> None:
        """C{node} reports a logout (with its reason, "closed" by default)."""
        reason, imei, conn = body.get("reason"), body["imei"], body["conn"]
        if self._loads and self._noticed(node, imei):
            conn = None
        self.release(imei, node, conn, reason if isinstance(reason, str) else "closed")

    def release(self, imei: str, node: NodeRecord, conn: int | None, reason: str) -> None:
        """C{imei} logged out of C{node} (of connection C{conn}, if given)."""
        owner = self.directory.owner(imei)
        if self.directory.release(imei, node, conn):
            if self._loads:
                self._ended(imei, owner)
            self.events.event(imei, node.name, "offline", {"reason": reason}, protocol=owner.protocol)

    def _releaseAll(self, node: NodeRecord, reason: str) -> None:
        """Every device of C{node} is offline now; they leave the directory a chunk per turn."""
        load = self._loads.pop(node, None)
        if load is not None:
            load.cancelled = True
        release = self.directory.startRelease(node, reason)
        if release is not None:
            self._start(self._release(release))

    def _release(self, release: Release) -> Iterator[None]:
        started, count, turns = self.clock.seconds(), len(release.ghosts), 0
        while not self.directory.releaseSome(release, self.chunk):
            turns += 1
            yield
        if turns:
            log.info("Node {node}'s {count} devices have left the directory's structures ({seconds:.3f} s)",
                     node=release.node.name, count=count, seconds=self.clock.seconds() - started)

    def _released(self, imei: str, owner: Owner, release: Release) -> None:
        if self._loads:
            self._ended(imei, owner, release.number)
        self.events.event(imei, owner.node.name, "offline", {"reason": release.reason}, protocol=owner.protocol)

    def bye(self, node: NodeRecord) -> None:
        """C{node} is leaving: its devices leave the directory; it stays until its commands are answered."""
        log.info("Node {node} is leaving; {count} devices leave the directory", node=node.name, count=len(node.devices))
        node.leaving = True
        self._releaseAll(node, "node left")
        if not node.inflight:
            del self.nodes[node.identity]

    def _idle(self, node: NodeRecord) -> None:
        self.nodes.pop(node.identity, None)

    def expire(self) -> None:
        """Declare dead every node silent for longer than the TTL."""
        deadline = self.clock.seconds() - self.nodeTtl
        for node in list(self.nodes.values()):
            if node.lastSeen < deadline:
                self.lost(node, f"silent for more than {self.nodeTtl:g} s")
        for load in list(self._loads.values()):
            if load.parked is not None and load.lastPart < deadline:
                # A part never came (the node could not send it): start over from a new hello.
                log.warn("Node {node}'s snapshot lacks a part after {ttl:g} s; asking it again", node=load.node.name,
                         ttl=self.nodeTtl)
                load.cancelled = True
                load.parked = None
                del self._loads[load.node]
                self.toNode(load.node.identity, Message(b"reset", b"", {}))

    def lost(self, node: NodeRecord, why: str) -> None:
        """C{node} is gone: its devices leave the directory and its commands time out."""
        if self.nodes.get(node.identity) is not node:
            return
        del self.nodes[node.identity]
        log.info("Node {node} is gone ({why}); {count} devices leave the directory",
                 node=node.name, why=why, count=len(node.devices))
        self._releaseAll(node, "node lost")
        self.routes.failNode(node)
