"""
The broker role: a directory of which node holds which device, and routing.

Clients (L{devicehub.Demand}, the API) talk to the ROUTER I{frontend}; nodes attach
their DEALER to the ROUTER I{backend}. A command goes to the one node that holds
the device, and every request gets exactly one answer: from the directory, from
the node, or from the broker itself when the node does not answer in time
(TIMEOUT) or is gone. The messages are described in L{devicehub.wire.frames}.
"""

import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import zmq
from sortedcontainers import SortedList
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from devicehub.wire import frames
from devicehub.wire.curve import AUTHORIZED, ZapHandler, serverKeys
from devicehub.common.drain import DEFAULT_DRAIN_TIMEOUT, drain
from devicehub.wire.frames import FrameError, Message
from devicehub.common.imei import is_valid_imei
from devicehub.common.logs import Throttled
from devicehub.common.limits import MAX_TTL
from devicehub.broker.store import DEFAULT_TTL, CommandStore, NotClaimed, StoreFailed, openStore
from devicehub.common.metrics import BrokerGauges, Metrics
from devicehub.wire.pipe import Pipe
from devicehub.common.results import BUSY, NO, OK, QUEUED, REJECTED, RESULTS, TIMEOUT
from devicehub.common.startup import StartupError
from devicehub.wire.zmqsocket import ZmqSocket

log = Logger()
throttled = Throttled(log)

# Seconds without a message from a node after which it is declared dead.
DEFAULT_NODE_TTL = 5.0
# Seconds the broker waits past a command's timeout for the node's answer.
DEFAULT_GRACE = 0.5
# Commands one client may have routed and unanswered at once.
DEFAULT_MAX_CLIENT_INFLIGHT = 10_000
# Seconds a device has to ack a queued command delivered at its login (default; see --command-timeout).
DELIVERY_TIMEOUT = 10.0
# Seconds between sweeps that mark expired queued commands.
STORE_SWEEP = 60.0

Send = Callable[[bytes, Message], bool]
Publish = Callable[[bytes, bytes], None]


@dataclass(eq=False)
class NodeRecord:
    """What the broker knows of one attached node."""

    identity: bytes
    name: str
    lastSeen: float
    instance: str = ""
    """The node process's own random id: the same name from another process is another node."""
    devices: set[str] = field(default_factory=set)
    inflight: set[bytes] = field(default_factory=set)
    leaving: bool = False
    """Said C{bye}: holds no devices, kept only until its commands in flight are answered."""


class Owner(NamedTuple):
    """The node and connection that hold a device, and when the device logged in."""

    node: NodeRecord
    conn: int
    since: float
    protocol: str = "jsonl"


class Directory:
    """
    Online devices and their owners, with the imeis kept sorted for paging: logins, logouts,
    lookups and pages take time that grows with the log of the number of devices online
    (a B-tree-like sorted list; bench/directory.py measures it).
    """

    def __init__(self) -> None:
        self._owners: dict[str, Owner] = {}
        self._sorted = SortedList()

    def __len__(self) -> int:
        return len(self._owners)

    def owner(self, imei: str) -> Owner | None:
        return self._owners.get(imei)

    def own(self, imei: str, node: NodeRecord, conn: int, since: float, protocol: str = "jsonl") -> Owner | None:
        """Record that C{node} holds C{imei}; return the previous owner."""
        previous = self._owners.get(imei)
        if previous is None:
            self._sorted.add(imei)
        else:
            previous.node.devices.discard(imei)
        self._owners[imei] = Owner(node, conn, since, protocol)
        node.devices.add(imei)
        return previous

    def release(self, imei: str, node: NodeRecord, conn: int | None = None) -> bool:
        """Forget C{imei} if C{node} (and connection C{conn}, if given) still holds it."""
        owner = self._owners.get(imei)
        if owner is None or owner.node is not node or (conn is not None and owner.conn != conn):
            return False
        del self._owners[imei]
        node.devices.discard(imei)
        self._sorted.remove(imei)
        return True

    def releaseAll(self, node: NodeRecord) -> None:
        """Forget every device of C{node}."""
        gone = node.devices
        node.devices = set()
        for imei in gone:
            del self._owners[imei]
        if len(gone) < len(self._owners) // 4:
            for imei in gone:
                self._sorted.remove(imei)
        else:  # most of them: rebuilding is cheaper than removing one by one
            self._sorted = SortedList(self._owners)

    def page(self, num: int, page: int) -> list[str]:
        """Page C{page} (0 first) of C{num} imeis, sorted ascending."""
        start = num * page
        return list(self._sorted.islice(start, start + num))


class Routed(NamedTuple):
    """A command handed to a node, waiting for its result."""

    client: bytes | None
    """The client to answer, or None for the broker's own delivery of a queued command."""
    rid: bytes
    node: NodeRecord
    imei: str
    timer: Any
    started: float
    waiter: Deferred | None = None
    """For the broker's own deliveries: fires with the result."""


class Broker:
    """
    The broker's logic, apart from its sockets: C{toClient} and C{toNode} send
    a message to a peer identity and return False when the peer cannot be reached.
    """

    def __init__(
        self,
        clock,
        toClient: Send,
        toNode: Send,
        nodeTtl: float = DEFAULT_NODE_TTL,
        grace: float = DEFAULT_GRACE,
        maxClientInflight: int = DEFAULT_MAX_CLIENT_INFLIGHT,
        metrics: Metrics | None = None,
        publish: Publish | None = None,
        store: CommandStore | None = None,
        deliveryTimeout: float = DELIVERY_TIMEOUT,
        warmup: float | None = None,
    ) -> None:
        """
        @param publish: sends an event (topic, body) to subscribers; None: no events.
        @param store: the queue of commands for offline devices; None: no queueing.
        @param deliveryTimeout: seconds a device has to ack a queued command delivered to it.
        @param warmup: seconds after start during which the directory may still miss
            devices of nodes that have not reported yet (default: one node heartbeat
            plus the grace); meanwhile, questions it cannot answer are answered unavailable.
        """
        self.clock = clock
        self.deliveryTimeout = deliveryTimeout
        self.publish = publish
        self.store = store
        self.deliveries: set[Deferred] = set()
        """The broker's own deliveries of queued commands under way."""
        self.storeCalls: set[Deferred] = set()
        """Clients' queue requests waiting for the store."""
        self._delivering: set[str] = set()
        self._deliverAgain: set[str] = set()
        self._eventNumbers: dict[str, int] = {}
        self.metrics = metrics or Metrics()
        self._counters: dict[str, Any] = {}
        self.maxClientInflight = maxClientInflight
        self._perClient: Counter[bytes] = Counter()
        self.toClient = toClient
        self.toNode = toNode
        self.nodeTtl = nodeTtl
        self.heartbeat = nodeTtl / 3
        self.grace = grace
        self.directory = Directory()
        self.nodes: dict[bytes, NodeRecord] = {}
        self._refusedNodes: dict[bytes, str] = {}
        self.routed: dict[bytes, Routed] = {}
        self.draining = False
        """Shutting down: new requests are refused, routed ones still answered."""
        self.warmUntil = clock.seconds() + (self.heartbeat + grace if warmup is None else warmup)
        """Until then, a device missing from the directory may be on a node that has not reported yet."""
        # Ids of routed commands are unique across broker incarnations: a node may still
        # answer a command routed by this broker's previous run (CONTRACT §6).
        self._ridPrefix = secrets.token_hex(8).encode() + b"."
        self._lastRid = 0
        self._clientHandlers = {
            b"send": self._send,
            b"find": self._find,
            b"list": self._list,
            b"total": self._total,
            b"health": self._health,
            b"status": self._status,
            b"queue": self._queue,
            b"cancel": self._cancel,
        }
        self._nodeHandlers = {
            b"online": self._online,
            b"offline": self._offline,
            b"uplink": self._uplink,
            b"ping": self._ping,
            b"bye": self._bye,
            b"result": self._result,
        }

    # -- clients

    def fromClient(self, raw: list[bytes]) -> None:
        """Handle one message on the frontend (identity frame first)."""
        client, rest = raw[0], raw[1:]
        try:
            message = frames.decode(rest)
        except FrameError as e:
            self._malformed(client, frames.request_id(rest), e)
            return
        self.clientMessage(client, message)

    def clientMessage(self, client: bytes, message: Message) -> None:
        """Handle one decoded request of C{client}."""
        handler = self._clientHandlers.get(message.kind)
        if handler is None:
            self._malformed(client, message.rid, FrameError(f"{message.kind.decode()} is not a request"))
        elif self.draining:
            self._error(client, message.rid, "unavailable", "broker shutting down")
        else:
            handler(client, message)

    def _malformed(self, client: bytes, rid: bytes | None, error: FrameError) -> None:
        throttled.warn("Rejected a malformed request: {error}", error=error)
        if rid is not None and len(rid) <= frames.MAX_REQUEST_ID:
            self._error(client, rid, "invalid", str(error))

    def _reply(self, client: bytes, rid: bytes, body: dict[str, Any], kind: bytes = b"reply") -> None:
        if not self.toClient(client, Message(kind, rid, body)):
            log.debug("Dropped an answer to a client that is gone")

    def _error(self, client: bytes, rid: bytes, code: str, error: str) -> None:
        self._reply(client, rid, {"error": error, "code": code}, b"error")

    def _send(self, client: bytes, message: Message) -> None:
        body = message.body
        queue, coalesce, ttl = body.get("queue", False), body.get("coalesce", False), body.get("ttl")
        if not isinstance(queue, bool) or not isinstance(coalesce, bool) or not (
            ttl is None or (frames.is_seconds(ttl) and ttl <= MAX_TTL)
        ):
            self._error(client, message.rid, "invalid", f"queue and coalesce must be booleans, 0 < ttl <= {MAX_TTL:g}")
            return
        owner = self.directory.owner(body["imei"])
        if owner is None and self._warmingUp(client, message.rid):
            return
        if owner is None and queue and self.store is not None:
            self._enqueue(client, message.rid, body, DEFAULT_TTL if ttl is None else ttl, coalesce)
            return
        if owner is None:
            self._count(NO)
            self._reply(client, message.rid, {"result": NO})
            return
        if self._perClient[client] >= self.maxClientInflight:
            self._count(BUSY)
            self._error(client, message.rid, "busy", f"more than {self.maxClientInflight} requests in flight")
            return
        # The body is forwarded as it came: the node reads the same fields.
        if not self._route(owner.node, body, message.payload, client, message.rid):
            self._count(NO)
            self._reply(client, message.rid, {"result": NO})

    def _route(
        self, node: NodeRecord, body: dict[str, Any], payload: bytes | None, client: bytes | None, rid: bytes,
        waiter=None,
    ) -> bool:
        """Hand a command to C{node}; False (and the node removed) if it cannot be reached."""
        self._lastRid += 1
        brid = b"%s%x" % (self._ridPrefix, self._lastRid)
        if not self.toNode(node.identity, Message(b"command", brid, body, payload)):
            self._nodeLost(node, "unreachable")
            return False
        timer = self.clock.callLater(body["timeout"] + self.grace, self._expire, brid)
        self.routed[brid] = Routed(client, rid, node, body["imei"], timer, self.clock.seconds(), waiter)
        node.inflight.add(brid)
        if client is not None:
            self._perClient[client] += 1
        return True

    def _answer(self, routed: Routed, body: dict[str, Any], kind: bytes = b"reply") -> None:
        """Answer a routed command's caller: a client, or the broker's own delivery."""
        if routed.waiter is not None:
            routed.waiter.callback(body.get("result", body.get("code")))
        else:
            self._reply(routed.client, routed.rid, body, kind)

    def _finish(self, rid: bytes, result: str) -> Routed:
        """Forget routed command C{rid}, whose caller is about to be answered C{result}."""
        routed = self.routed.pop(rid)
        self._count(result)
        self.metrics.commandSeconds.observe(self.clock.seconds() - routed.started)
        if routed.timer.active():
            routed.timer.cancel()
        node = routed.node
        node.inflight.discard(rid)
        if routed.client is not None:
            self._perClient[routed.client] -= 1
            if not self._perClient[routed.client]:
                del self._perClient[routed.client]
        if node.leaving and not node.inflight:
            self.nodes.pop(node.identity, None)
        return routed

    def _count(self, result: str) -> None:
        counter = self._counters.get(result)
        if counter is None:  # labels() is a locked lookup: once per result, not per command
            counter = self._counters[result] = self.metrics.commands.labels(result)
        counter.inc()

    def _expire(self, rid: bytes) -> None:
        routed = self._finish(rid, TIMEOUT)
        log.debug("No result from node {node} in time", node=routed.node.name)
        self._answer(routed, {"result": TIMEOUT})

    def _warmingUp(self, client: bytes, rid: bytes) -> bool:
        """
        Answer unavailable while nodes may not have reported yet (a broker that just
        started would otherwise say NO of devices that are online).
        """
        if self.clock.seconds() >= self.warmUntil:
            return False
        self._error(client, rid, "unavailable", "broker starting: not every node has reported yet")
        return True

    def _find(self, client: bytes, message: Message) -> None:
        online = self.directory.owner(message.body["imei"]) is not None
        if online or not self._warmingUp(client, message.rid):
            self._reply(client, message.rid, {"result": OK if online else NO})

    def _list(self, client: bytes, message: Message) -> None:
        if not self._warmingUp(client, message.rid):
            devices = self.directory.page(message.body["num"], message.body["page"])
            self._reply(client, message.rid, {"devices": devices, "total": len(self.directory)})

    def _total(self, client: bytes, message: Message) -> None:
        if not self._warmingUp(client, message.rid):
            self._reply(client, message.rid, {"total": len(self.directory)})

    def _health(self, client: bytes, message: Message) -> None:
        if self._warmingUp(client, message.rid):
            return
        nodes = sum(not node.leaving for node in self.nodes.values())
        store = "none" if self.store is None else "ok" if self.store.healthy else "failing"
        body = {"nodes": nodes, "total": len(self.directory), "store": store}
        self._reply(client, message.rid, body)

    # -- the queue of commands for offline devices

    def _enqueue(self, client: bytes, rid: bytes, body: dict[str, Any], ttl: float, coalesce: bool) -> None:
        imei = body["imei"]
        added = self.store.add(imei, body["instruct"], body["data"], ttl, coalesce, self.clock.seconds())

        def queued(id: str) -> None:
            self._count(QUEUED)
            self._reply(client, rid, {"result": QUEUED, "id": id})
            if self.directory.owner(imei) is not None:  # it logged in while the store wrote
                self._startDelivery(imei)

        added.addCallbacks(queued, self._storeFailed, errbackArgs=(client, rid))
        self._track(added)

    def _track(self, call: Deferred) -> None:
        self.storeCalls.add(call)
        call.addBoth(lambda _: self.storeCalls.discard(call))

    def _storeFailed(self, failure, client: bytes, rid: bytes) -> None:
        log.failure("The command store failed", failure)
        error = str(failure.value) if failure.check(StoreFailed) else "the command store failed"
        self._error(client, rid, "store", error)

    def _storeQuery(self, client: bytes, rid: bytes, query: Deferred, answer) -> None:
        query.addCallbacks(lambda value: self._reply(client, rid, answer(value)), self._storeFailed,
                           errbackArgs=(client, rid))
        self._track(query)

    def _withStore(self, client: bytes, message: Message) -> bool:
        if self.store is None:
            self._error(client, message.rid, "invalid", "this broker keeps no queue (no --store)")
        return self.store is not None

    def _status(self, client: bytes, message: Message) -> None:
        if self._withStore(client, message):
            self._storeQuery(client, message.rid, self.store.get(message.body["id"]), lambda command: {"command": command})

    def _queue(self, client: bytes, message: Message) -> None:
        if self._withStore(client, message):
            waiting = self.store.waiting(message.body["imei"])
            self._storeQuery(client, message.rid, waiting, lambda commands: {"commands": commands})

    def _cancel(self, client: bytes, message: Message) -> None:
        if self._withStore(client, message):
            cancelled = self.store.cancel(message.body["id"], self.clock.seconds())
            self._storeQuery(client, message.rid, cancelled, lambda command: {"command": command})

    def _startDelivery(self, imei: str) -> None:
        if self.store is None or not self.store.mayHaveWaiting(imei):
            return
        if imei in self._delivering:
            self._deliverAgain.add(imei)
            return
        delivery = Deferred.fromCoroutine(self._deliver(imei))
        self.deliveries.add(delivery)
        delivery.addBoth(lambda _: self.deliveries.discard(delivery))

    async def _deliver(self, imei: str) -> None:
        """
        Send C{imei} its queued commands, oldest first, each once acked before the next;
        start over when it logged in again meanwhile (its new connection gets them).
        """
        self._delivering.add(imei)
        try:
            while True:
                self._deliverAgain.discard(imei)
                await self._deliverDue(imei)
                if imei not in self._deliverAgain:
                    return
        except Exception:
            log.failure("Delivering queued commands to {imei} failed", imei=imei)
        finally:
            self._delivering.discard(imei)

    async def _deliverDue(self, imei: str) -> None:
        """Deliver C{imei}'s due commands until one is not acked: the rest waits for its next login."""
        for command in await self.store.due(imei, self.clock.seconds()):
            owner = self.directory.owner(imei)
            if owner is None:
                return
            try:
                await self.store.sending(command["id"], self.clock.seconds())
            except NotClaimed:  # another broker delivers it (a shared store)
                return
            result = await self._deliverOne(owner.node, command)
            # "invalid": the device's protocol cannot carry it, now or at any later login
            invalid = result == "invalid"
            await self.store.delivered(command["id"], result == OK, self.clock.seconds(), final=invalid)
            if invalid:
                log.info("Queued command {id} for {imei} failed: its protocol cannot carry it", id=command["id"], imei=imei)
            elif result != OK:
                return

    def _deliverOne(self, node: NodeRecord, command: dict[str, Any]) -> "Deferred[str]":
        body = {"imei": command["imei"], "instruct": command["instruct"], "data": command["data"],
                "timeout": self.deliveryTimeout, "wait": True}
        waiter: Deferred[str] = Deferred()
        if not self._route(node, body, None, None, b"", waiter):
            waiter.callback(NO)
        return waiter

    # -- nodes

    def fromNode(self, raw: list[bytes]) -> None:
        """Handle one message on the backend (identity frame first)."""
        identity = raw[0]
        try:
            message = frames.decode(raw[1:])
        except FrameError as e:
            throttled.warn("Dropped a malformed message from a node: {error}", error=e)
            return
        self.nodeMessage(identity, message)

    def nodeMessage(self, identity: bytes, message: Message) -> None:
        """Handle one decoded message of the node C{identity}."""
        if message.kind == b"hello":
            self._hello(identity, message.body)
            return
        node = self.nodes.get(identity)
        if node is None:
            # Not registered (e.g. this broker restarted): ask for a full hello.
            self.toNode(identity, Message(b"reset", b"", {}))
            return
        node.lastSeen = self.clock.seconds()
        handler = self._nodeHandlers.get(message.kind)
        if handler is None:
            throttled.warn("Dropped an unexpected {kind} from node {node}", kind=message.kind, node=node.name)
            return
        handler(node, message)

    def _hello(self, identity: bytes, body: dict[str, Any]) -> None:
        name, instance, now = body["node"], body["instance"], self.clock.seconds()
        node = self.nodes.get(identity)
        if node is None:
            for other in list(self.nodes.values()):
                if other.name != name:
                    continue
                if other.instance != instance and not other.leaving and now - other.lastSeen <= self.heartbeat + self.grace:
                    # Another live process with the same --node-id: taking its devices would
                    # start a tug of war between the two.
                    self._refuseNode(identity, name, f"node id {name!r} is in use by another live node")
                    return
                self._nodeLost(other, "registered again from a new connection")
            node = self.nodes[identity] = NodeRecord(identity, name, now, instance)
            self._refusedNodes.pop(identity, None)
            log.info("Node {node} registered with {count} devices", node=name, count=len(body["devices"]))
        node.lastSeen = now
        # A node's clock may run ahead: a login is never later than the broker's own time.
        snapshot = {
            imei: (conn, min(since, now), protocol[0] if protocol else "jsonl")
            for imei, conn, since, *protocol in body["devices"] if is_valid_imei(imei)
        }
        for imei in node.devices - snapshot.keys():
            self._release(imei, node, None, "closed")
        for imei, (conn, since, protocol) in snapshot.items():
            self._own(node, imei, conn, since, "registered", protocol)
        self.toNode(identity, Message(b"welcome", b"", {"heartbeat": self.heartbeat}))

    def _own(
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
            self._event(imei, node, "online", data, protocol=protocol)
            self._startDelivery(imei)
        if previous is not None and previous.node is not node:
            log.info(
                "{imei} moved from node {old} to node {new}",
                imei=imei,
                old=previous.node.name,
                new=node.name,
            )
            drop = Message(b"drop", b"", {"imei": imei, "conn": previous.conn})
            self.toNode(previous.node.identity, drop)

    def _refuseNode(self, identity: bytes, name: str, error: str) -> None:
        if self._refusedNodes.get(identity) != error:  # once per connection, not per hello
            if len(self._refusedNodes) >= 1000:
                self._refusedNodes.clear()
            self._refusedNodes[identity] = error
            log.error("Refused a node calling itself {node}: {error}", node=name, error=error)
        self.toNode(identity, Message(b"refused", b"", {"error": error}))

    def _online(self, node: NodeRecord, message: Message) -> None:
        imei = message.body["imei"]
        if is_valid_imei(imei) and not node.leaving:
            protocol = message.body.get("protocol")
            since = min(message.body["since"], self.clock.seconds())
            self._own(node, imei, message.body["conn"], since, protocol=protocol if isinstance(protocol, str) else "jsonl")

    def _offline(self, node: NodeRecord, message: Message) -> None:
        reason = message.body.get("reason")
        self._release(message.body["imei"], node, message.body["conn"], reason if isinstance(reason, str) else "closed")

    def _release(self, imei: str, node: NodeRecord, conn: int | None, reason: str) -> None:
        owner = self.directory.owner(imei)
        if self.directory.release(imei, node, conn):
            self._event(imei, node, "offline", {"reason": reason}, protocol=owner.protocol)

    def _uplink(self, node: NodeRecord, message: Message) -> None:
        body = message.body
        if is_valid_imei(body["imei"]):
            data = {key: value for key, value in body["message"].items() if key != "type"}
            protocol = body.get("protocol")
            self._event(body["imei"], node, str(body["message"].get("type")), data, body["ts"],
                        protocol if isinstance(protocol, str) else None)

    def _event(
        self, imei: str, node: NodeRecord, kind: str, data: Any, ts: float | None = None, protocol: str | None = None
    ) -> None:
        """Publish one event; C{n} numbers each device's events while it is online."""
        if self.publish is None:
            return
        number = self._eventNumbers.get(imei, 0) + 1
        if kind == "offline":
            self._eventNumbers.pop(imei, None)
        else:
            self._eventNumbers[imei] = number
        body = {"imei": imei, "node": node.name, "type": kind, "data": data,
                "ts": self.clock.seconds() if ts is None else ts, "n": number}
        if protocol is not None:
            body["protocol"] = protocol
        self.publish(imei.encode(), frames.dumps(body))
        self.metrics.eventsPublished.inc()

    def _releaseAll(self, node: NodeRecord, reason: str) -> None:
        gone = list(node.devices)
        self.directory.releaseAll(node)
        for imei in gone:
            self._event(imei, node, "offline", {"reason": reason})

    def _ping(self, node: NodeRecord, message: Message) -> None:
        self.toNode(node.identity, Message(b"pong", b"", {}))

    def _bye(self, node: NodeRecord, message: Message) -> None:
        log.info("Node {node} is leaving; {count} devices leave the directory", node=node.name, count=len(node.devices))
        node.leaving = True
        self._releaseAll(node, "node left")
        if not node.inflight:
            del self.nodes[node.identity]

    def _result(self, node: NodeRecord, message: Message) -> None:
        routed = self.routed.get(message.rid)
        if routed is None or routed.node is not node or routed.imei != message.body["imei"]:
            log.debug("Dropped a late result from node {node}", node=node.name)
            return
        result = message.body["result"]
        self._finish(message.rid, result if result in RESULTS or result in (BUSY, REJECTED) else "invalid")
        if result in RESULTS:
            self._answer(routed, {"result": result, "data": message.body["data"]})
        elif result == BUSY:
            self._answer(routed, {"error": "the device has too many unanswered commands", "code": "busy"}, b"error")
        elif result == REJECTED:
            self._answer(routed, {"error": str(message.body["data"]), "code": "invalid"}, b"error")
        else:
            throttled.warn("Node {node} sent an invalid result {result!r}", node=node.name, result=result)
            self._answer(routed, {"error": "invalid result from node", "code": "unavailable"}, b"error")

    def expireNodes(self) -> None:
        """Declare dead every node silent for longer than the TTL."""
        deadline = self.clock.seconds() - self.nodeTtl
        for node in list(self.nodes.values()):
            if node.lastSeen < deadline:
                self._nodeLost(node, f"silent for more than {self.nodeTtl:g} s")

    def _nodeLost(self, node: NodeRecord, why: str) -> None:
        if self.nodes.get(node.identity) is not node:
            return
        del self.nodes[node.identity]
        log.info(
            "Node {node} is gone ({why}); {count} devices leave the directory",
            node=node.name,
            why=why,
            count=len(node.devices),
        )
        self._releaseAll(node, "node lost")
        for rid in list(node.inflight):
            routed = self._finish(rid, TIMEOUT)
            self._answer(routed, {"result": TIMEOUT})

    def close(self) -> None:
        """Answer every routed command (the broker is going away) and stop timers."""
        for rid in list(self.routed):
            routed = self._finish(rid, "unavailable")
            self._answer(routed, {"error": "broker shutting down", "code": "unavailable"}, b"error")


def _sender(socket: ZmqSocket, local: dict[bytes, Pipe[Message]]) -> Send:
    """Send to a peer in this process through its pipe, to any other over C{socket}."""

    def send(peer: bytes, message: Message) -> bool:
        pipe = local.get(peer)
        if pipe is not None:
            pipe.send(message)
            return True
        try:
            socket.sendFrames([peer, *message.frames()])
        except zmq.ZMQError:
            return False
        return True

    return send


def _publisher(socket: ZmqSocket) -> Publish:
    def publish(topic: bytes, body: bytes) -> None:
        try:
            socket.sendFrames([topic, body])
        except zmq.ZMQError:
            pass  # at-most-once: a PUB socket drops for full subscribers anyway

    return publish


def _ignore(raw: list[bytes]) -> None:
    """A PUB socket receives nothing."""


class BrokerService(Service):
    """The broker role: binds the frontend and backend ROUTERs."""

    def __init__(
        self,
        reactor,
        *,
        frontend: str,
        backend: str,
        nodeTtl: float = DEFAULT_NODE_TTL,
        drainTimeout: float = DEFAULT_DRAIN_TIMEOUT,
        maxClientInflight: int = DEFAULT_MAX_CLIENT_INFLIGHT,
        curveKeys: str | None = None,
        metrics: Metrics | None = None,
        events: str | None = None,
        store: str | None = None,
        deliveryTimeout: float = DELIVERY_TIMEOUT,
        warmup: float | None = None,
        clock=None,
    ) -> None:
        """
        @param warmup: see L{Broker}.
        @param curveKeys: a key directory (see L{devicehub.wire.curve}): admit only authorized clients.
        @param events: the ZeroMQ address to publish events on (PUB), or None.
        @param store: the SQLite file of the queue for offline devices, or None.
        @param clock: the clock of the periodic sweeps (nodes, expired commands); the reactor by default.
        """
        self.clock = reactor if clock is None else clock
        self.events = events
        self.storePath = store
        self.deliveryTimeout = deliveryTimeout
        self.warmup = warmup
        self.store: CommandStore | None = None
        self._storeExpiry: LoopingCall | None = None
        self.eventsSocket: ZmqSocket | None = None
        self.reactor = reactor
        self.metrics = metrics or Metrics()
        self.curveKeys = curveKeys
        self.zap: ZapHandler | None = None
        self.frontend = frontend
        self.backend = backend
        self.nodeTtl = nodeTtl
        self.drainTimeout = drainTimeout
        self.maxClientInflight = maxClientInflight
        self.broker: Broker | None = None
        self.frontendSocket: ZmqSocket | None = None
        self.backendSocket: ZmqSocket | None = None
        self._expiry: LoopingCall | None = None
        self._warm = None
        self._localClients: dict[bytes, Pipe[Message]] = {}
        self._localNodes: dict[bytes, Pipe[Message]] = {}
        self._lastLocal = 0

    def privilegedStartService(self) -> None:
        self._bind()
        super().privilegedStartService()

    def startService(self) -> None:
        if self.broker is None:
            self._bind()
        super().startService()
        self._warm = self.reactor.callLater(max(0.0, self.broker.warmUntil - self.reactor.seconds()), self._warmed)
        self._expiry = LoopingCall(self.broker.expireNodes)
        self._expiry.clock = self.clock
        self._expiry.start(self.nodeTtl / 4, now=False)
        if self.store is not None:
            self._storeExpiry = LoopingCall(lambda: self.store.sweep(self.clock.seconds()))
            self._storeExpiry.clock = self.clock
            self._storeExpiry.start(STORE_SWEEP, now=False)

    def _bind(self) -> None:
        if self.storePath is not None:
            self._openStore()
        try:
            self._bindSockets()
        except BaseException:
            if self.store is not None:
                self.store.close()
                self.store = None
            raise

    def _bindSockets(self) -> None:
        keys = None
        if self.curveKeys is not None:
            keys = serverKeys(self.curveKeys)
            # Before binding: without a ZAP handler, ZeroMQ would let any CURVE client in.
            self.zap = ZapHandler(self.reactor, Path(self.curveKeys) / AUTHORIZED)
        sockets = []
        try:
            for address, handler in ((self.frontend, self._fromClient), (self.backend, self._fromNode)):
                sockets.append(
                    ZmqSocket(self.reactor, zmq.ROUTER, handler, bind=[address], mandatory=True, curve=keys,
                              maxMessageSize=frames.MAX_MESSAGE)
                )
        except zmq.ZMQError as e:
            for socket in sockets:
                socket.shutdown()
            if self.zap is not None:
                self.zap.close()
            raise StartupError(f"cannot bind the broker on {address!r}: {e}") from None
        self.frontendSocket, self.backendSocket = sockets
        publish = None
        if self.events is not None:
            try:
                self.eventsSocket = ZmqSocket(self.reactor, zmq.PUB, _ignore, bind=[self.events], curve=keys)
            except zmq.ZMQError as e:
                for socket in sockets:
                    socket.shutdown()
                if self.zap is not None:
                    self.zap.close()
                raise StartupError(f"cannot bind the event publisher on {self.events!r}: {e}") from None
            publish = _publisher(self.eventsSocket)
        self.broker = Broker(
            self.reactor,
            _sender(self.frontendSocket, self._localClients),
            _sender(self.backendSocket, self._localNodes),
            self.nodeTtl,
            maxClientInflight=self.maxClientInflight,
            metrics=self.metrics,
            publish=publish,
            store=self.store,
            deliveryTimeout=self.deliveryTimeout,
            warmup=self.warmup,
        )
        broker = self.broker
        self.gauges = BrokerGauges(
            nodes=lambda: sum(not node.leaving for node in broker.nodes.values()),
            devices=lambda: len(broker.directory),
            inflight=lambda: len(broker.routed),
            queueDepth=lambda: broker.store.depth if broker.store else 0,
        )
        self.metrics.watchBroker(self.gauges)
        log.info(
            "Broker frontend on {frontend}, backend on {backend}, events on {events}",
            frontend=self.frontendSocket.lastEndpoint,
            backend=self.backendSocket.lastEndpoint,
            events=self.eventsSocket.lastEndpoint if self.eventsSocket else "(none)",
        )

    def _warmed(self) -> None:
        log.info("Broker warmed up: {nodes} nodes reported {devices} devices; it answers for every device now",
                 nodes=len(self.broker.nodes), devices=len(self.broker.directory))

    def _openStore(self) -> None:
        # Synchronously, once: at start-up a store that cannot be opened must stop the
        # start (like a port that is taken), not leave a broker that can queue nothing.
        try:
            self.store = openStore(self.storePath, self.reactor, self.reactor.seconds(),
                                   deliveryTimeout=self.deliveryTimeout)
        except StoreFailed as e:
            raise StartupError(str(e)) from None

    def _fromClient(self, raw: list[bytes]) -> None:
        self.broker.fromClient(raw)

    def _fromNode(self, raw: list[bytes]) -> None:
        self.broker.fromNode(raw)

    def connectClient(self, deliver: Callable[[Message], None]) -> Pipe[Message]:
        """
        Attach a client in this process (the api role's L{devicehub.Demand}) with
        no ZeroMQ or JSON in between: answers go to C{deliver}; requests go on
        the returned pipe, which the client closes when it is done.
        """
        return self._connect(self._localClients, deliver, lambda peer, message: self.broker.clientMessage(peer, message))

    def connectNode(self, deliver: Callable[[Message], None]) -> Pipe[Message]:
        """Attach a node in this process, as L{connectClient} does a client."""
        return self._connect(self._localNodes, deliver, lambda peer, message: self.broker.nodeMessage(peer, message))

    def _connect(self, peers: dict[bytes, Pipe[Message]], deliver, handle) -> Pipe[Message]:
        self._lastLocal += 1
        # ZeroMQ never makes an identity like this one (its own are 5 bytes), nor lets a peer choose it.
        identity = b"\0local-%d" % self._lastLocal
        peers[identity] = Pipe(self.reactor, deliver)

        def received(message: Message) -> None:
            if self.broker is not None:
                handle(identity, message)

        return Pipe(self.reactor, received)

    async def _stop(self) -> None:
        self.metrics.forget(self.gauges)
        self.broker.draining = True
        log.info("Broker stopping: refusing new requests, draining {count} commands in flight",
                 count=len(self.broker.routed))
        await drain(self.reactor, lambda: self.broker.routed or self.broker.storeCalls, self.drainTimeout)
        for loop in (self._expiry, self._storeExpiry):
            if loop is not None and loop.running:
                loop.stop()
        if self._warm is not None and self._warm.active():
            self._warm.cancel()
        self.broker.close()
        if self.broker.deliveries:  # they record their last outcome in the store
            await DeferredList(list(self.broker.deliveries))
        if self.store is not None:
            self.store.close()
            self.store = None
        self.frontendSocket.shutdown(linger=0.5)
        self.backendSocket.shutdown()
        pipes = [*self._localClients.values(), *self._localNodes.values()]
        self._localClients.clear()
        self._localNodes.clear()
        await DeferredList([pipe.close(deliver=True) for pipe in pipes])  # the last answers
        if self.eventsSocket is not None:
            self.eventsSocket.shutdown()
            self.eventsSocket = None
        if self.zap is not None:
            self.zap.close()
            self.zap = None
        self.broker = self.frontendSocket = self.backendSocket = None

    def stopService(self) -> Deferred:
        """
        Refuse new requests, wait (up to the drain timeout) for the results of
        commands in flight, answer what is left as unavailable, then close.
        """
        super().stopService()
        return Deferred.fromCoroutine(self._stop())
