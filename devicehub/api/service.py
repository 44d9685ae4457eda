"""The api role's service: the HTTP API (L{ApiSite}) over a L{Demand} of the broker frontend."""

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred

from devicehub.api.root import ApiRoot
from devicehub.api.routes import DeviceAPI
from devicehub.api.settings import ApiSettings
from devicehub.api.site import ApiSite
from devicehub.api.sse import EventStreams
from devicehub.client.demand import Demand
from devicehub.client.events import Events
from devicehub.common.drain import drain
from devicehub.common.listening import ListeningService
from devicehub.common.metrics import Metrics
from devicehub.wire.link import Attach

# Seconds a stopping api process waits for its connections to flush and close.
CLOSE_GRACE = 2.0


class ApiService(MultiService):
    """The api role: the HTTP API listening on C{settings.http}, a client of C{settings.frontend}."""

    def __init__(self, reactor, settings: ApiSettings, metrics: Metrics, local: Attach | None = None) -> None:
        """@param local: the broker of this process: reach it in-process instead of over ZeroMQ."""
        super().__init__()
        self.reactor = reactor
        self.settings = settings
        self.local = local
        self.subscriber: Events | None = None
        self.api = DeviceAPI(None, settings.commandTimeout, metrics, clock=reactor, jobInflight=settings.jobInflight)
        self.streams = EventStreams(metrics.eventsDropped.labels("sse"))
        self.root = ApiRoot(self.api.resource(), settings.token, self.streams)
        self.site = ApiSite(self.root, settings.accessLog, reactor)
        self.listener = ListeningService(reactor, settings.http, self.site, "HTTP")
        self.listener.setServiceParent(self)

    def startService(self) -> None:
        # ZeroMQ sockets are made here, after twistd may have forked, never before.
        settings = self.settings
        self.api.demand = Demand(
            settings.frontend, settings.commandTimeout, reactor=self.reactor, curve_keys=settings.curveKeys, local=self.local
        )
        if settings.events is not None:
            upstream = self.api.metrics.eventsDropped.labels("upstream")
            self.subscriber = Events(
                settings.events,
                callback=self.streams.publish,
                onDrop=upstream.inc,
                reactor=self.reactor,
                curve_keys=settings.curveKeys,
            )
        super().startService()

    async def _stop(self) -> None:
        await MultiService.stopService(self)  # stop listening
        self.streams.closeAll()
        if self.subscriber is not None:
            self.subscriber.close()
        await drain(self.reactor, self.root.idle.wait(bool(self.root.inflight)), self.settings.drainTimeout)
        self.api.demand.close()  # what still waits answers 503
        # A finished response may still sit in a connection's buffer: close the
        # connections (which flushes them) and wait, instead of leaving them to the
        # reactor's shutdown, which drops unsent data.
        self.site.closeAll()
        await drain(self.reactor, self.site.idle.wait(bool(self.site.channels)), CLOSE_GRACE)

    def stopService(self) -> Deferred:
        """Stop listening, let requests in flight finish (up to the drain timeout), then close."""
        return Deferred.fromCoroutine(self._stop())
