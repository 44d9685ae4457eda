"""
L{NodeService}: the node role, device listeners (one per protocol) feeding one L{Node},
and its links to the brokers (L{Upstreams}).
"""

import signal
import threading
from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred

from devicehub.common.drain import drain
from devicehub.common.listening import ListeningService
from devicehub.common.metrics import Metrics, NodeGauges
from devicehub.devices import codecs
from devicehub.devices.session import DeviceFactory
from devicehub.node.allowlist import AllowList
from devicehub.node.node import Node
from devicehub.node.settings import NodeSettings
from devicehub.node.upstreams import Upstreams
from devicehub.wire.curve import clientKeys
from devicehub.wire.link import Attach

# Seconds between checks whether the allow-list file changed.
ALLOW_LIST_CHECK = 5.0
# Seconds a clean shutdown waits for devices to take their error line and close.
CLOSE_GRACE = 2.0


class NodeService(MultiService):
    """The node role: device listeners and a link to each broker."""

    def __init__(self, reactor, settings: NodeSettings, metrics: Metrics, local: Attach | None = None) -> None:
        """@param local: the broker of this process: link to it in-process instead of over ZeroMQ."""
        super().__init__()
        self.settings = settings
        self.node = Node(settings.name, settings.commandTimeout, reactor, metrics)
        self.allowCheck: TimerService | None = None
        self.factories: list[DeviceFactory] = []
        self.listeners: list[ListeningService] = []
        for protocol, endpoint in settings.listeners:
            factory = DeviceFactory(self.node, reactor, settings.device, codecs.load(protocol))
            self.node.speaks(factory.codec)
            label = "devices" if protocol == "jsonl" else f"{protocol} devices"
            listener = ListeningService(reactor, endpoint, factory, label, lean=True)
            listener.setServiceParent(self)
            self.factories.append(factory)
            self.listeners.append(listener)
        self.factory, self.listener = self.factories[0], self.listeners[0]
        allow = settings.allow
        if allow is not None:
            self.node.allowList = AllowList(allow) if isinstance(allow, str) else allow
            self.allowCheck = TimerService(ALLOW_LIST_CHECK, self.node.allowList.refresh)
            self.allowCheck.clock = reactor
            self.allowCheck.setServiceParent(self)
        curve = None if settings.curveKeys is None else clientKeys(settings.curveKeys)
        self.upstreams = Upstreams(self.node, settings.backends, reactor, curve=curve, local=local)
        self.upstreams.setServiceParent(self)
        self.link = self.upstreams.links[0]
        node = self.node
        self.gauges = NodeGauges(node.name, lambda: len(node.devices), lambda: node.framesDecoded)
        self.reactor = reactor

    def startService(self) -> None:
        self.node.metrics.watchNode(self.gauges)
        allowList = self.node.allowList
        if allowList is not None and threading.current_thread() is threading.main_thread():
            # SIGHUP: read the allow-list again now (the reactor leaves this signal alone).
            signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(allowList.refresh, True))
        super().startService()

    async def _stop(self) -> None:
        self.node.metrics.forget(self.gauges)
        await gatherResults([listener.stopService() for listener in self.listeners])
        if self.allowCheck is not None:
            await maybeDeferred(self.allowCheck.stopService)
        self.upstreams.leave()
        await drain(self.reactor, self.node.whenAnswered(), self.settings.drainTimeout)
        await gatherResults([factory.closeAll("shutting down", CLOSE_GRACE) for factory in self.factories])
        await maybeDeferred(self.upstreams.stopService)
        Service.stopService(self)

    def stopService(self) -> Deferred:
        """
        Stop listening and leave the directory; wait (up to the drain timeout) for
        the acks of commands in flight; then close every device politely.
        """
        return Deferred.fromCoroutine(self._stop())
