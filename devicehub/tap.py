"""
The wiring of C{twistd devicehub}: the roles its options select, built by the same
functions the tests use, and run as one service (CONTRACT §1).
"""

import gc

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger

from devicehub.api.service import ApiService
from devicehub.api.settings import ApiSettings
from devicehub.broker.service import BrokerService
from devicehub.broker.settings import BrokerSettings
from devicehub.common.listening import ListeningService
from devicehub.common.metrics import Metrics, MetricsSite
from devicehub.common.startup import EXPECTED, startupFailed
from devicehub.node.service import NodeService
from devicehub.node.settings import NodeSettings
from devicehub.options import ROLES, Options, TwistdOptions

__all__ = ["ROLES", "Options", "TwistdOptions", "Roles", "makeService", "brokerRole", "nodeRole", "apiRole"]

log = Logger()

# Allocations between collections of the youngest generation (Python's default: 700).
GC_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    """
    Leave what is alive now (modules, listeners, the app) out of the collector's scans,
    and collect the youngest generation every L{GC_THRESHOLD} allocations instead of
    Python's 700: a command allocates some dozens of objects, so the default ran a
    collection every few commands (~6 % of the hub's CPU).
    """
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


class Roles(MultiService):
    """
    The roles of one twistd process. A role that cannot start (it raises
    L{devicehub.common.startup.StartupError}; a broker that cannot bind) ends twistd with one
    line on stderr and exit status 1; its stop reports a failing child instead of
    swallowing it; once started, it tunes the garbage collector for the process.

    @param environment: the C{DEVICEHUB_*} variables that set options, named in a
        start-up failure they caused.
    """

    def __init__(self, environment: dict[str, str] | None = None) -> None:
        super().__init__()
        self.environment = dict(environment or {})

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except EXPECTED as e:
            raise startupFailed(e, self.environment) from None

    def startService(self) -> None:
        try:
            super().startService()
        except EXPECTED as e:
            raise startupFailed(e, self.environment) from None
        tune_garbage_collector()

    def stopService(self) -> Deferred:
        self.running = False
        stopping = [maybeDeferred(service.stopService) for service in reversed(list(self))]
        return gatherResults(stopping, consumeErrors=True).addErrback(
            lambda failure: log.failure("A role failed to stop", failure)
        )


def brokerRole(reactor, settings: BrokerSettings, metrics: Metrics, clock=None) -> BrokerService:
    """The broker role."""
    return BrokerService(reactor, settings, metrics, clock=clock)


def nodeRole(reactor, settings: NodeSettings, metrics: Metrics, broker: BrokerService | None = None) -> NodeService:
    """The node role; with C{broker} (of this process) linked to it in-process, not over ZeroMQ."""
    return NodeService(reactor, settings, metrics, local=None if broker is None else broker.connectNode)


def apiRole(reactor, settings: ApiSettings, metrics: Metrics, broker: BrokerService | None = None) -> ApiService:
    """The api role; with C{broker} (of this process) reaching it in-process, not over ZeroMQ."""
    return ApiService(reactor, settings, metrics, local=None if broker is None else broker.connectClient)


def makeService(options: Options, reactor=None) -> Roles:
    """The roles C{options} selects, as one service with one metrics registry."""
    if reactor is None:
        from twisted.internet import reactor

    hub = Roles(getattr(options, "environment", None))
    roles = options["roles"]
    metrics = Metrics()
    # Roles in one process talk through in-process pipes, not ZeroMQ (their options still name its addresses).
    broker = None
    if "broker" in roles:
        broker = brokerRole(reactor, options.brokerSettings(), metrics)
        broker.setServiceParent(hub)
    if "node" in roles:
        nodeRole(reactor, options.nodeSettings(), metrics, broker).setServiceParent(hub)
    if "api" in roles:
        apiRole(reactor, options.apiSettings(), metrics, broker).setServiceParent(hub)
    if options["metrics"] is not None:
        ListeningService(reactor, options["metrics"], MetricsSite(metrics), "metrics").setServiceParent(hub)
    return hub
