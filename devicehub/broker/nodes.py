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
from dataclasses import dataclass, field
from sys import intern
from typing import Any, Callable, Iterator

from twisted.logger import Logger

from devicehub.broker.directory import Directory, NodeRecord, Owner, Release, Sharded
from devicehub.broker.publish import EventPublisher
from devicehub.broker.routing import Routes, Send
from devicehub.common.imei import is_valid_imei
from devicehub.wire.frames import Message

log = Logger()

# Refusals remembered (to log each once per connection), at most.
MAX_REFUSED = 1000

# Devices owned or released per reactor turn (a snapshot's rows are read twice as many at a
# time): ~2 ms a turn on this project's machine (tests/test_directory.py prints it).
CHUNK = 500
WAIT = object()
"""What a load yields while it waits for its snapshot's next part."""
MAX_PARTS = 10_000
"""Most parts a snapshot is announced in (of L{devicehub.node.link.SNAPSHOT_PART} rows each)."""


@dataclass(eq=False)
class Load:
    """A node's snapshot being loaded."""

    node: NodeRecord
    rows: list | None
    now: float
    releases: int
    """The directory's releases that started before the hello."""
    expected: int = 0
    """The C{snapshot} parts that follow the hello (a big snapshot comes in parts)."""
    parts: deque = field(default_factory=deque)
    """Parts received and not read yet."""
    received: int = 0
    lastPart: float = 0.0
    """When the hello or its latest part came."""
    job: Iterator[None] | None = None
    """Its loader (L{NodeRegistry._load})."""
    parked: Iterator[None] | None = None
    """The loader, while it waits for the next part."""
    snapshot: Sharded = field(default_factory=Sharded)
    """What the rows read so far say: imei -> (conn, since, protocol)."""
    noticed: set[str] = field(default_factory=set)
    """Devices the node reported on since its hello: the snapshot's word on them is older."""
    ended: dict[str, float] = field(default_factory=dict)
    """Devices another node held since the hello, released since: when that login began."""
    parsed: bool = False
    """Every row read (until then, a device missing from C{snapshot} may be in a row not read yet)."""
    turns: int = 0
    """Turns it has waited for so far."""
    cancelled: bool = False


class NodeRegistry:
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

    def snapshotPart(self, node: NodeRecord, body: dict[str, Any]) -> None:
        """The next part of the snapshot C{node} is loading (parts out of turn, or of an older hello, are dropped)."""
        load = self._loads.get(node)
        if load is None or load.cancelled or body["part"] != load.received + 1 or load.received >= load.expected:
            log.warn("Dropped a snapshot part of node {node} that no hello announced", node=node.name)
            return
        load.received += 1
        load.lastPart = self.clock.seconds()
        load.parts.append(body["devices"])
        if load.parked is not None:
            job, load.parked = load.parked, None
            self._work.append(job)
            if self._turn is None:
                self._turn = self.clock.callLater(0, self._step)

    def _rows(self, load: Load) -> Iterator[list | None]:
        """The snapshot's rows, a part at a time: the hello's, then each C{snapshot} part (None: wait for it)."""
        yield load.rows
        load.rows = None
        while load.received < load.expected or load.parts:
            if load.parts:
                yield load.parts.popleft()
            else:
                yield None

    def _load(self, load: Load) -> Iterator[None]:
        """
        Load C{load}'s snapshot, a chunk per turn: read it, release what it lacks, own what
        it has. Reading a row counts as half of owning a device (it takes less, but its
        dictionaries grow, see L{devicehub.broker.directory.SHARDS}), checking one a quarter.
        """
        node, now, snapshot, noticed = load.node, load.now, load.snapshot, load.noticed
        budget = spent = self.chunk * 4
        step = self.chunk * 2
        for rows in self._rows(load):
            if rows is None:  # the next part has not come yet: wait for it, off the reactor's turns
                load.turns += 1
                load.parked = load.job
                yield WAIT
                if load.cancelled:
                    return
                spent = budget
                continue
            for start in range(0, len(rows), step):
                read = rows[start:start + step]
                rows[start:start + step] = [None] * len(read)  # freed as they are read, not all at once
                # A node's clock may run ahead: a login is never later than the broker's own time.
                for imei, conn, since, *protocol in read:
                    if is_valid_imei(imei) and imei not in noticed:
                        snapshot[imei] = (conn, min(since, now), intern(protocol[0]) if protocol else "jsonl")
                spent -= 2 * len(read)
                del read
                if spent <= 0:
                    load.turns += 1
                    yield
                    if load.cancelled:
                        return
                    spent = budget
            del rows
        load.parsed = True
        for imei in list(node.devices):
            if imei not in snapshot and imei not in noticed:
                self.release(imei, node, None, "closed")
            spent -= 1
            if not spent:
                load.turns += 1
                yield
                if load.cancelled:
                    return
                spent = budget
        while snapshot:
            imei, (conn, since, protocol) = snapshot.popitem()
            if not self._outdated(load, imei, since):
                self.own(node, imei, conn, since, "registered", protocol)
            spent -= 4
            if spent <= 0 and snapshot:
                load.turns += 1
                yield
                if load.cancelled:
                    return
                spent = budget
        if self._loads.get(node) is load:
            del self._loads[node]
        if load.turns:  # it took more than its hello's turn
            log.info("Node {node}'s snapshot is loaded ({seconds:.3f} s)", node=node.name,
                     seconds=self.clock.seconds() - now)

    def _outdated(self, load: Load, imei: str, since: float) -> bool:
        """
        Was a login newer than the snapshot's held elsewhere and ended since the hello? The
        snapshot would have lost to it, had it been loaded at once: it loses to it now.
        """
        ended = load.ended.get(imei)
        if ended is not None and ended > since:
            return True
        ghost = self.directory.ghost(imei) if self.directory.releasing else None
        return ghost is not None and ghost[1].number > load.releases and ghost[0].since > since

    def _ended(self, imei: str, owner: Owner, release: int | None = None) -> None:
        """
        C{imei}'s login on C{owner.node} ended (by the directory's release number
        C{release}), while snapshots are loading: those that came before it remember it.
        """
        for load in self._loads.values():
            if release is not None and load.releases >= release:
                continue
            if load.node is not owner.node and load.ended.get(imei, -1.0) < owner.since:
                load.ended[imei] = owner.since

    def loadingSince(self, before: float) -> bool:
        """Is a snapshot that came before C{before} still loading?"""
        return any(load.now < before for load in self._loads.values())

    @property
    def busy(self) -> bool:
        """Snapshots or releases still being worked through."""
        return bool(self._work)

    def _start(self, job: Iterator[None]) -> None:
        """Do a job's first chunk now (a small job is done at once), the rest a chunk per turn."""
        try:
            waits = next(job) is WAIT
        except StopIteration:
            return
        self._queue(job, waits)
        if self._work and self._turn is None:
            self._turn = self.clock.callLater(0, self._step)

    def _queue(self, job: Iterator[None], waits: bool) -> None:
        """Back in the turns, unless it waits (a load parked with its load until the next part comes)."""
        if not waits:
            self._work.append(job)

    def _step(self) -> None:
        """One chunk of the oldest job; jobs take turns."""
        self._turn = None
        job = self._work.popleft()
        try:
            self._queue(job, next(job) is WAIT)
        except StopIteration:
            pass
        except Exception:
            log.failure("A snapshot or a release failed half-way")
        if self._work:
            self._turn = self.clock.callLater(0, self._step)

    def settle(self) -> None:
        """Finish every job now, in this turn (for tests)."""
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        while self._work:
            self._step()
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None

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

    def _noticed(self, node: NodeRecord, imei: str) -> bool:
        """
        C{node} reported on C{imei}: newer than what the snapshot that may be loading says of
        it, so the snapshot's row, if read, is applied now, before the report. True if the
        report is the first on it since the hello and its row may not be read yet: then the
        connection it closes is the snapshot's, not the one the directory has.
        """
        load = self._loads.get(node)
        if load is None or imei in load.noticed:
            return False
        load.noticed.add(imei)
        entry = load.snapshot.pop(imei, None)
        if entry is not None:  # the snapshot's word first, as if it had been loaded at once
            conn, since, protocol = entry
            if not self._outdated(load, imei, since):
                self.own(node, imei, conn, since, "registered", protocol)
            return False
        return not load.parsed

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
