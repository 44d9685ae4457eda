"""The api role's service: the HTTP API (L{ApiSite}) over a L{Demand} of the broker frontend."""

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred

from devicehub.api.root import ApiRoot
from devicehub.api.routes import DeviceAPI
from devicehub.api.site import ApiSite
from devicehub.api.sse import EventStreams
from devicehub.client.demand import Demand
from devicehub.client.events import Events
from devicehub.common.drain import DEFAULT_DRAIN_TIMEOUT, drain
from devicehub.common.listening import ListeningService
from devicehub.common.metrics import Metrics
from devicehub.wire.link import Attach

# Seconds a stopping api process waits for its connections to flush and close.
CLOSE_GRACE = 2.0


class ApiService(MultiService):
    """The api role: the HTTP API listening on C{http}, a client of C{frontend}."""

    def __init__(
        self,
        reactor,
        *,
        http: str,
        frontend: str,
        commandTimeout: float,
        drainTimeout: float = DEFAULT_DRAIN_TIMEOUT,
        token: str | None = None,
        accessLog: str | None = None,
        curveKeys: str | None = None,
        metrics: Metrics | None = None,
        events: str | None = None,
        local: Attach | None = None,
    ) -> None:
        """
        @param accessLog: see L{ApiSite}.
        @param local: the broker of this process: reach it in-process instead of over ZeroMQ.
        """
        super().__init__()
        self.local = local
        self.curveKeys = curveKeys
        self.events = events
        self.subscriber: Events | None = None
        self.reactor = reactor
        self.frontend = frontend
        self.drainTimeout = drainTimeout
        self.api = DeviceAPI(None, commandTimeout, metrics=metrics)
        self.streams = EventStreams(self.api.metrics.eventsDropped.labels("sse"))
        self.root = ApiRoot(self.api.resource(), token, self.streams)
        self.site = ApiSite(self.root, accessLog, reactor)
        self.listener = ListeningService(reactor, http, self.site, "HTTP")
        self.listener.setServiceParent(self)

    def startService(self) -> None:
        # ZeroMQ sockets are made here, after twistd may have forked, never before.
        self.api.demand = Demand(
            self.frontend, self.api.commandTimeout, reactor=self.reactor, curve_keys=self.curveKeys, local=self.local
        )
        if self.events is not None:
            upstream = self.api.metrics.eventsDropped.labels("upstream")
            self.subscriber = Events(
                self.events,
                callback=self.streams.publish,
                onDrop=upstream.inc,
                reactor=self.reactor,
                curve_keys=self.curveKeys,
            )
        super().startService()

    async def _stop(self) -> None:
        await MultiService.stopService(self)  # stop listening
        self.streams.closeAll()
        if self.subscriber is not None:
            self.subscriber.close()
        await drain(self.reactor, self.root.idle.wait(bool(self.root.inflight)), self.drainTimeout)
        self.api.demand.close()  # what still waits answers 503
        # A finished response may still sit in a connection's buffer: close the
        # connections (which flushes them) and wait, instead of leaving them to the
        # reactor's shutdown, which drops unsent data.
        self.site.closeAll()
        await drain(self.reactor, self.site.idle.wait(bool(self.site.channels)), CLOSE_GRACE)

    def stopService(self) -> Deferred:
        """Stop listening, let requests in flight finish (up to the drain timeout), then close."""
        return Deferred.fromCoroutine(self._stop())
