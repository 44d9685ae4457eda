"""
L{Broker}: the broker role's logic, apart from its sockets. It only dispatches: each
message from a client (the frontend) or a node (the backend) goes to the part that does
the work (docs/architecture.md has the picture):

  - L{devicehub.broker.directory.Directory}: which node holds which online device;
  - L{devicehub.broker.nodes.NodeRegistry}: nodes, their snapshots and ownership;
  - L{devicehub.broker.routing.Routes}: commands in flight, their deadlines and limits;
  - L{devicehub.broker.queue.OfflineQueue}: the queue of commands for offline devices;
  - L{devicehub.broker.publish.EventPublisher}: the devices' events.

Every request gets exactly one answer: from the directory, from the node, or from the
broker itself when the node does not answer in time (TIMEOUT) or is gone. The messages
are described in L{devicehub.wire.frames}.
"""

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from devicehub.broker.directory import Directory, NodeRecord
from devicehub.broker.nodes import NodeRegistry
from devicehub.broker.publish import EventPublisher, Publish
from devicehub.broker.queue import OfflineQueue
from devicehub.broker.routing import Routed, Routes, Send
from devicehub.broker.store import CommandStore
from devicehub.common.imei import is_valid_imei
from devicehub.common.limits import MAX_TTL
from devicehub.common.logs import Throttled
from devicehub.common.metrics import Metrics
from devicehub.common.results import BUSY, NO, OK, REJECTED, RESULTS
from devicehub.wire import frames
from devicehub.wire.frames import FrameError, Message

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


class Broker:
    """
    Dispatches clients' requests and nodes' messages: C{toClient} and C{toNode} send a
    message to a peer identity and return False when the peer cannot be reached.
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
        self.toClient = toClient
        self.toNode = toNode
        self.metrics = metrics if metrics is not None else Metrics()
        self.store = store
        self.directory = Directory()
        self.routes = Routes(clock, toNode, self._answer, self.metrics, grace, maxClientInflight)
        self.events = EventPublisher(clock, publish, self.metrics)
        self.registry = NodeRegistry(clock, self.directory, toNode, self.events, self.routes, nodeTtl, grace)
        self.queue: OfflineQueue | None = None
        if store is not None:
            self.queue = OfflineQueue(clock, store, self.directory, self._reply, self._error, self._routeOwn,
                                      self.routes.count, deliveryTimeout)
            self.registry.onOnline = self.queue.online
        self.draining = False
        """Shutting down: new requests are refused, routed ones still answered."""
        self.warmUntil = clock.seconds() + (self.heartbeat + grace if warmup is None else warmup)
        """Until then, a device missing from the directory may be on a node that has not reported yet."""
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
            b"bye": lambda node, message: self.registry.bye(node),
            b"result": self._result,
        }

    # The parts' state, as tests and the service read it.

    @property
    def nodes(self) -> dict[bytes, NodeRecord]:
        return self.registry.nodes

    @property
    def routed(self) -> dict[bytes, Routed]:
        return self.routes.routed

    @property
    def heartbeat(self) -> float:
        return self.registry.heartbeat

    @property
    def grace(self) -> float:
        return self.routes.grace

    @property
    def deliveries(self) -> set[Deferred]:
        """The broker's own deliveries of queued commands under way."""
        return set() if self.queue is None else self.queue.deliveries

    @property
    def storeCalls(self) -> set[Deferred]:
        """Clients' queue requests waiting for the store."""
        return set() if self.queue is None else self.queue.calls

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

    def _answer(self, routed: Routed, body: dict[str, Any], kind: bytes = b"reply") -> None:
        """Answer a routed command's caller: a client, or the broker's own delivery."""
        if routed.waiter is not None:
            routed.waiter.callback(body.get("result", body.get("code")))
        else:
            self._reply(routed.client, routed.rid, body, kind)

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
        if owner is None and queue and self.queue is not None:
            self.queue.enqueue(client, message.rid, body, ttl, coalesce)
            return
        if owner is None:
            self.routes.count(NO)
            self._reply(client, message.rid, {"result": NO})
            return
        if self.routes.full(client):
            self.routes.count(BUSY)
            self._error(client, message.rid, "busy", f"more than {self.routes.maxClientInflight} requests in flight")
            return
        # The body is forwarded as it came: the node reads the same fields.
        if not self._route(owner.node, body, message.payload, client, message.rid):
            self.routes.count(NO)
            self._reply(client, message.rid, {"result": NO})

    def _route(self, node: NodeRecord, body: dict[str, Any], payload: bytes | None, client: bytes | None, rid: bytes,
               waiter: Deferred | None = None) -> bool:
        """Hand a command to C{node}; False (and the node removed) if it cannot be reached."""
        if self.routes.route(node, body, payload, client, rid, waiter):
            return True
        self.registry.lost(node, "unreachable")
        return False

    def _routeOwn(self, node: NodeRecord, body: dict[str, Any], waiter: Deferred) -> bool:
        """Route the broker's own command (a queued one), its result to C{waiter}."""
        return self._route(node, body, None, None, b"", waiter)

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
        store = "none" if self.store is None else "ok" if self.store.healthy else "failing"
        self._reply(client, message.rid, {"nodes": self.registry.alive(), "total": len(self.directory), "store": store})

    def _withQueue(self, client: bytes, message: Message) -> bool:
        if self.queue is None:
            self._error(client, message.rid, "invalid", "this broker keeps no queue (no --store)")
        return self.queue is not None

    def _status(self, client: bytes, message: Message) -> None:
        if self._withQueue(client, message):
            self.queue.status(client, message.rid, message.body["id"])

    def _queue(self, client: bytes, message: Message) -> None:
        if self._withQueue(client, message):
            self.queue.waiting(client, message.rid, message.body["imei"])

    def _cancel(self, client: bytes, message: Message) -> None:
        if self._withQueue(client, message):
            self.queue.cancel(client, message.rid, message.body["id"])

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
            self.registry.hello(identity, message.body)
            return
        node = self.registry.nodes.get(identity)
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

    def _online(self, node: NodeRecord, message: Message) -> None:
        imei = message.body["imei"]
        if is_valid_imei(imei) and not node.leaving:
            protocol = message.body.get("protocol")
            since = min(message.body["since"], self.clock.seconds())
            self.registry.own(node, imei, message.body["conn"], since,
                              protocol=protocol if isinstance(protocol, str) else "jsonl")

    def _offline(self, node: NodeRecord, message: Message) -> None:
        reason = message.body.get("reason")
        self.registry.release(message.body["imei"], node, message.body["conn"],
                              reason if isinstance(reason, str) else "closed")

    def _uplink(self, node: NodeRecord, message: Message) -> None:
        body = message.body
        if is_valid_imei(body["imei"]):
            data = {key: value for key, value in body["message"].items() if key != "type"}
            protocol = body.get("protocol")
            self.events.event(body["imei"], node.name, str(body["message"].get("type")), data, body["ts"],
                              protocol if isinstance(protocol, str) else None)

    def _ping(self, node: NodeRecord, message: Message) -> None:
        self.toNode(node.identity, Message(b"pong", b"", {}))

    def _result(self, node: NodeRecord, message: Message) -> None:
        routed = self.routes.resultFor(message.rid, node, message.body["imei"])
        if routed is None:
            log.debug("Dropped a late result from node {node}", node=node.name)
            return
        result = message.body["result"]
        self.routes.finish(message.rid, result if result in RESULTS or result in (BUSY, REJECTED) else "invalid")
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
        self.registry.expire()

    def close(self) -> None:
        """Answer every routed command (the broker is going away) and stop timers."""
        self.routes.failAll("unavailable", "broker shutting down")
