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
from devicehub.broker.reads import Reads
from devicehub.broker.routing import Execute, Routed, Routes, Send
from devicehub.broker.settings import BrokerSettings
from devicehub.broker.store import CommandStore
from devicehub.common.limits import MAX_TTL
from devicehub.common.logs import Throttled
from devicehub.common.metrics import Metrics
from devicehub.common.results import BUSY, NO
from devicehub.wire import frames
from devicehub.wire.frames import FrameError, Message

log = Logger()
throttled = Throttled(log)


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
        settings: BrokerSettings,
        metrics: Metrics,
        publish: Publish | None = None,
        store: CommandStore | None = None,
        local: dict[bytes, Execute] | None = None,
    ) -> None:
        """
        @param publish: sends an event (topic, body) to subscribers; None: no events.
        @param store: the queue of commands for offline devices; None: no queueing.
        @param local: the nodes of this process that take commands as calls, by identity
            (L{Routes}).
        """
        self.clock = clock
        self.toClient = toClient
        self.toNode = toNode
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.directory = Directory()
        self.routes = Routes(clock, toNode, self._answer, metrics, settings.grace, settings.maxClientInflight, local)
        self.events = EventPublisher(clock, publish, self.metrics)
        self.registry = NodeRegistry(clock, self.directory, toNode, self.events, self.routes, settings.nodeTtl,
                                     settings.grace)
        self.queue: OfflineQueue | None = None
        if store is not None:
            self.queue = OfflineQueue(clock, store, self.directory, self._reply, self._error, self._routeOwn,
                                      self.routes.count, settings.deliveryTimeout, self.events.event)
            self.registry.onOnline = self.queue.online
        self.draining = False
        """Shutting down: new requests are refused, routed ones still answered."""
        warmup = settings.warmup
        warmUntil = clock.seconds() + (self.heartbeat + settings.grace if warmup is None else warmup)
        self.reads = Reads(clock, self.directory, self.registry, self.queue, store, self._reply, self._error, warmUntil)
        reads, registry = self.reads, self.registry
        self._clientHandlers = {
            b"send": self._send,
            b"find": reads.find,
            b"list": reads.list,
            b"total": reads.total,
            b"health": reads.health,
            b"status": reads.status,
            b"queue": reads.waiting,
            b"cancel": reads.cancel,
            b"ping": self._ping,
            b"locate": reads.locate,
            b"cluster": reads.cluster,
        }
        self._nodeHandlers = {
            b"online": lambda node, message: registry.reportedOnline(node, message.body),
            b"offline": lambda node, message: registry.reportedOffline(node, message.body),
            b"uplink": lambda node, message: self.events.uplink(node.name, message.body),
            b"ping": lambda node, message: self.toNode(node.identity, Message(b"pong", b"", {})),
            b"bye": lambda node, message: registry.bye(node),
            b"snapshot": lambda node, message: registry.snapshotPart(node, message.body),
            b"result": lambda node, message: self.routes.result(node, message.rid, message.body),
        }

    # The parts' state, as tests and the service read it.

    @property
    def nodes(self) -> dict[bytes, NodeRecord]:
        return self.registry.nodes

    @property
    def routed(self) -> dict[bytes, Routed]:
        return self.routes.routed

    @property
    def warmUntil(self) -> float:
        """Until then, a device missing from the directory may be on a node that has not reported yet."""
        return self.reads.warmUntil

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
            routed.waiter.callback((body.get("result", body.get("code")), body.get("data")))
        else:
            self._reply(routed.client, routed.rid, body, kind)

    def _ping(self, client: bytes, message: Message) -> None:
        """A client with several brokers asks whether this one answers (and has warmed up)."""
        self._reply(client, message.rid, {"warm": self.reads.warm})

    def _send(self, client: bytes, message: Message) -> None:
        body = message.body
        queue, coalesce, ttl = body.get("queue", False), body.get("coalesce", False), body.get("ttl")
        if not isinstance(queue, bool) or not isinstance(coalesce, bool) or not (
            ttl is None or (frames.is_seconds(ttl) and ttl <= MAX_TTL)
        ):
            self._error(client, message.rid, "invalid", f"queue and coalesce must be booleans, 0 < ttl <= {MAX_TTL:g}")
            return
        owner = self.directory.owner(body["imei"])
        if owner is None and self.reads.warmingUp(client, message.rid):
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

    def expireNodes(self) -> None:
        """Declare dead every node silent for longer than the TTL."""
        self.registry.expire()

    def close(self) -> None:
        """Answer every routed command (the broker is going away) and stop timers."""
        self.routes.failAll("unavailable", "broker shutting down")
