"""A service that listens on a Twisted server endpoint string."""

from twisted.application.service import Service
from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from devicehub.common.backlog import withBacklog
from devicehub.common.startup import StartupError

log = Logger()


def _noFileno() -> int:
    return -1


class LeanServer(tcp.Server):
    """
    Twisted's TCP server connection, less three objects it keeps for each connection
    (~180 bytes of heap): its log prefix and repr strings are made when asked, not at accept, and
    C{fileno} is the socket's, looked up when called, not a bound method stored per
    connection. For listeners of many long-lived, mostly idle connections: devices.
    """

    # tcp.Server.__init__ assigns these, and connectionLost deletes fileno: the properties
    # drop both, and stand for the stored values.
    logstr = property(lambda self: self.logPrefix(), lambda self, value: None)
    repstr = property(lambda self: self.__repr__(), lambda self, value: None)
    fileno = property(
        lambda self: self.socket.fileno if "socket" in self.__dict__ else _noFileno,
        lambda self, value: None,
        lambda self: None,
    )

    def logPrefix(self) -> str:
        """The prefix tcp.Server would have stored: the protocol's, the session number and the peer's host."""
        protocol = self.__dict__.get("protocol")  # gone once the connection is lost
        prefix = "-" if protocol is None else self._getLogPrefix(protocol)
        return f"{prefix},{self.sessionno},{self.hostname}"

    def __repr__(self) -> str:
        protocol = self.__dict__.get("protocol")
        name = "-" if protocol is None else protocol.__class__.__name__
        return f"<{name} #{self.sessionno} on {self.server._realPortNumber}>"


class ListeningService(Service):
    """
    Listen on C{description} (e.g. C{tcp:7700}) while running, with a listen backlog of
    L{devicehub.common.backlog.LISTEN_BACKLOG} unless the description sets one.

    Unlike a plain C{StreamServerEndpointService}, a listen that fails at once
    (port taken, bad certificate) raises L{StartupError} from C{startService}, so
    twistd stops with that one line instead of running without its port; C{port} is public
    so callers (and tests on port 0) can read the bound address.
    """

    def __init__(self, reactor, description: str, factory, label: str, lean: bool = False) -> None:
        """@param lean: TCP connections are L{LeanServer}s (C{tcp:}, C{tcp6:} and C{ssl:} listeners)."""
        self.reactor = reactor
        self.lean = lean
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
        if self.lean and getattr(self.port, "transport", None) is tcp.Server:
            self.port.transport = LeanServer
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
