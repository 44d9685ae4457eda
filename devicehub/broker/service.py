"""
L{BrokerService}: the broker role's sockets and lifecycle. It binds the frontend and backend
ROUTERs (and the events PUB), opens the command store, offers in-process pipes to the roles
of its own process, runs the periodic sweeps and drains on stop; L{Broker} does the rest.
"""

from pathlib import Path
from typing import Callable

import zmq
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, gatherResults, maybeDeferred
from twisted.logger import Logger

from devicehub.broker.broker import Broker
from devicehub.broker.publish import Publish
from devicehub.broker.routing import Execute, Send
from devicehub.broker.settings import BrokerSettings
from devicehub.broker.store import CommandStore, StoreFailed, openStore
from devicehub.common.drain import allDone, drain
from devicehub.common.metrics import BrokerGauges, Metrics
from devicehub.common.startup import StartupError
from devicehub.wire import frames
from devicehub.wire.curve import AUTHORIZED, ZapHandler, serverKeys
from devicehub.wire.frames import Message
from devicehub.wire.pipe import Pipe
from devicehub.wire.zmqsocket import ZmqSocket

log = Logger()

# Seconds between sweeps that mark expired queued commands.
STORE_SWEEP = 60.0


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


class BrokerService(MultiService):
    """The broker role: binds the frontend and backend ROUTERs."""

    def __init__(self, reactor, settings: BrokerSettings, metrics: Metrics, clock=None) -> None:
        """@param clock: the clock of the periodic sweeps (nodes, expired commands); the reactor by default."""
        super().__init__()
        self.reactor = reactor
        self.settings = settings
        self.metrics = metrics
        self.clock = reactor if clock is None else clock
        self.store: CommandStore | None = None
        self.eventsSocket: ZmqSocket | None = None
        self.zap: ZapHandler | None = None
        self.broker: Broker | None = None
        self.frontendSocket: ZmqSocket | None = None
        self.backendSocket: ZmqSocket | None = None
        self._sweeps: list[TimerService] = []
        self._warm = None
        self._localClients: dict[bytes, Pipe[Message]] = {}
        self._localNodes: dict[bytes, Pipe[Message]] = {}
        self._localExecutors: dict[bytes, Execute] = {}
        self._lastLocal = 0

    def privilegedStartService(self) -> None:
        self._bind()
        super().privilegedStartService()

    def startService(self) -> None:
        if self.broker is None:
            self._bind()
        self._warm = self.reactor.callLater(max(0.0, self.broker.warmUntil - self.reactor.seconds()), self._warmed)
        self._sweep(self.settings.nodeTtl / 4, self.broker.expireNodes)
        if self.store is not None:
            store = self.store
            self._sweep(STORE_SWEEP, lambda: store.sweep(self.clock.seconds()))
        super().startService()

    def _sweep(self, interval: float, sweep: Callable[[], object]) -> None:
        timer = TimerService(interval, sweep)
        timer.clock = self.clock
        timer.setServiceParent(self)
        self._sweeps.append(timer)

    def _bind(self) -> None:
        if self.settings.store is not None:
            self._openStore()
        try:
            self._bindSockets()
        except BaseException:
            if self.store is not None:
                self.store.close()
                self.store = None
            raise

    def _bindSockets(self) -> None:
        settings, keys = self.settings, None
        if settings.curveKeys is not None:
            keys = serverKeys(settings.curveKeys)
            # Before binding: without a ZAP handler, ZeroMQ would let any CURVE client in.
            self.zap = ZapHandler(self.reactor, Path(settings.curveKeys) / AUTHORIZED)
        sockets = []
        try:
            for address, handler in ((settings.frontend, self._fromClient), (settings.backend, self._fromNode)):
                sockets.append(
                    ZmqSocket(self.reactor, zmq.ROUTER, handler, bind=[address], mandatory=True, curve=keys,
                              maxMessageSize=frames.MAX_MESSAGE)
                )
        except zmq.ZMQError as e:
            self._unbind(sockets)
            raise StartupError(f"cannot bind the broker on {address!r}: {e}") from None
        self.frontendSocket, self.backendSocket = sockets
        publish = None
        if settings.events is not None:
            try:
                self.eventsSocket = ZmqSocket(self.reactor, zmq.PUB, _ignore, bind=[settings.events], curve=keys)
            except zmq.ZMQError as e:
                self._unbind(sockets)
                raise StartupError(f"cannot bind the event publisher on {settings.events!r}: {e}") from None
            publish = _publisher(self.eventsSocket)
        self.broker = Broker(
            self.reactor,
            _sender(self.frontendSocket, self._localClients),
            _sender(self.backendSocket, self._localNodes),
            settings,
            self.metrics,
            publish=publish,
            store=self.store,
            local=self._localExecutors,
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

    def _unbind(self, sockets: list[ZmqSocket]) -> None:
        """Undo a start that failed half-way: close what was bound, and ZAP."""
        for socket in sockets:
            socket.shutdown()
        if self.zap is not None:
            self.zap.close()

    def _warmed(self) -> None:
        log.info("Broker warmed up: {nodes} nodes reported {devices} devices; it answers for every device now",
                 nodes=len(self.broker.nodes), devices=len(self.broker.directory))

    def _openStore(self) -> None:
        # Synchronously, once: at start-up a store that cannot be opened must stop the
        # start (like a port that is taken), not leave a broker that can queue nothing.
        try:
            self.store = openStore(self.settings.store, self.reactor, self.reactor.seconds(),
                                   deliveryTimeout=self.settings.deliveryTimeout)
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

    def connectNode(self, deliver: Callable[[Message], None], execute: Execute | None = None) -> Pipe[Message]:
        """
        Attach a node in this process, as L{connectClient} does a client; with C{execute},
        its commands are calls of C{execute} instead of messages (L{Routes}).
        """
        return self._connect(self._localNodes, deliver, lambda peer, message: self.broker.nodeMessage(peer, message),
                             execute)

    def _connect(self, peers: dict[bytes, Pipe[Message]], deliver, handle, execute: Execute | None = None) -> Pipe[Message]:
        self._lastLocal += 1
        # ZeroMQ never makes an identity like this one (its own are 5 bytes), nor lets a peer choose it.
        identity = b"\0local-%d" % self._lastLocal
        peers[identity] = Pipe(self.reactor, deliver)
        if execute is not None:
            self._localExecutors[identity] = execute

        def received(message: Message) -> None:
            if self.broker is not None:
                handle(identity, message)

        return Pipe(self.reactor, received)

    async def _stop(self) -> None:
        self.metrics.forget(self.gauges)
        self.broker.draining = True
        log.info("Broker stopping: refusing new requests, draining {count} commands in flight",
                 count=len(self.broker.routed))
        work = gatherResults([self.broker.routes.whenEmpty(), allDone(self.broker.storeCalls)])
        await drain(self.reactor, work, self.settings.drainTimeout)
        for timer in self._sweeps:
            await maybeDeferred(timer.stopService)
            timer.disownServiceParent()
        self._sweeps.clear()
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
        self._localExecutors.clear()
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
        self.running = False
        return Deferred.fromCoroutine(self._stop())
