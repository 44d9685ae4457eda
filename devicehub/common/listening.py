"""A service that listens on a Twisted server endpoint string."""

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from devicehub.common.backlog import withBacklog
from devicehub.common.startup import StartupError

log = Logger()


class ListeningService(Service):
    """
    Listen on C{description} (e.g. C{tcp:7700}) while running, with a listen backlog of
    L{devicehub.common.backlog.LISTEN_BACKLOG} unless the description sets one.

    Unlike a plain C{StreamServerEndpointService}, a listen that fails at once
    (port taken, bad certificate) raises L{StartupError} from C{startService}, so
    twistd stops with that one line instead of running without its port; C{port} is public
    so callers (and tests on port 0) can read the bound address.
    """

    def __init__(self, reactor, description: str, factory, label: str) -> None:
        self.reactor = reactor
        self.description = description
        self.factory = factory
        self.label = label
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        self._listen()
        super().privilegedStartService()

    def startService(self) -> None:
        if self.port is None:
            self._listen()
        super().startService()

    def _listen(self) -> None:
        outcome: list = []
        serverFromString(self.reactor, withBacklog(self.description)).listen(self.factory).addBoth(
            outcome.append
        )
        if not outcome or isinstance(outcome[0], Failure):
            reason = outcome[0].value if outcome else "listening did not complete at once"
            raise StartupError(f"cannot listen for {self.label} on {self.description!r}: {reason}")
        self.port = outcome[0]
        log.info(
            "Listening for {label} on {description} (port {port})",
            label=self.label,
            description=self.description,
            port=getattr(self.port.getHost(), "port", "-"),
        )

    def stopService(self) -> Deferred:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return port.stopListening()
