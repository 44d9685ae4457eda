"""Options of C{twistd devicehub} and the service they build (CONTRACT §1)."""

import gc
import os
import re
import resource
import socket
import sys

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

log = Logger()

ROLES = ("broker", "node", "api")
# File descriptors kept free for listeners, ZeroMQ and logs when --max-devices is derived.
FD_HEADROOM = 200
ENVIRONMENT_PREFIX = "DEVICEHUB_"
_ZMQ_ADDRESS = re.compile(r"(tcp|ipc|inproc)://\S+")
# Allocations between collections of the youngest generation (Python's default: 700).
GC_THRESHOLD = 20_000


def positiveFloat(value: str) -> float:
    number = float(value)
    if not 0 < number < float("inf"):
        raise ValueError(f"{value!r} is not a positive number")
    return number


positiveFloat.coerceDoc = "A positive number of seconds."


def positiveInt(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"{value!r} is not a positive whole number")
    return number


positiveInt.coerceDoc = "A positive whole number."


class Options(usage.Options):
    """
    Options of the devicehub plugin. Each can also be set in the environment as
    C{DEVICEHUB_<OPTION>} (dashes as underscores); the command line wins.
    """

    synopsis = "[options]"
    longdesc = (
        "Run devicehub roles in one process: the broker (directory and routing), a node "
        "(device connections) and the HTTP API. Every option can also be given in the "
        "environment as DEVICEHUB_<OPTION>, e.g. DEVICEHUB_COMMAND_TIMEOUT=5."
    )

    optParameters = [
        ["roles", None, "broker,node,api", "Comma list of roles to run: broker, node, api."],
        ["devices", None, "tcp:7700", "Server endpoint string for device connections."],
        ["http", None, "tcp:8080:interface=127.0.0.1", "Server endpoint string for the HTTP API."],
        ["frontend", None, "tcp://127.0.0.1:5555", "ZeroMQ address of the broker frontend."],
        ["backend", None, "tcp://127.0.0.1:5556", "ZeroMQ address of the broker backend."],
        ["events", None, "tcp://127.0.0.1:5557", "ZeroMQ address the broker publishes device events on."],
        ["command-timeout", None, 10.0, "Seconds a command waits for its ack by default.", positiveFloat],
        ["login-timeout", None, 30.0, "Seconds a new device connection has to log in.", positiveFloat],
        ["idle-timeout", None, 300.0, "Seconds of silence before a device connection is closed.", positiveFloat],
        ["max-line", None, 65536, "Longest device line in bytes.", positiveInt],
        ["node-id", None, None, "The node's name in the directory and logs [default: host name-pid]."],
        ["node-ttl", None, 5.0, "Seconds without a heartbeat after which the broker declares a node dead.", positiveFloat],
        ["drain-timeout", None, 10.0, "Seconds a stopping role waits for its work in flight.", positiveFloat],
        ["max-devices", None, None,
         "Device connections a node accepts at once [default: the open-file limit less 200].", positiveInt],
        ["max-pending", None, 64, "Unanswered commands per device; more are refused as busy (HTTP 429).", positiveInt],
        ["max-client-inflight", None, 10_000,
         "Commands one broker client may have in flight; more are refused as busy.", positiveInt],
        ["device-secret", None, None, "Devices must log in with token = hex HMAC-SHA256(secret, imei)."],
        ["api-token", None, None, "Every HTTP route but /health needs 'Authorization: Bearer TOKEN'."],
        ["curve-keys", None, None, "Key directory (devicehub keygen DIR): CURVE-encrypt and authenticate broker links."],
        ["store", None, "devicehub.sqlite3",
         "(broker) SQLite file of the queue of commands for offline devices, opened (created) at start; '' for none."],
        ["metrics", None, None, "Server endpoint string to serve Prometheus metrics on (the api role also has /metrics)."],
        ["access-log", None, None,
         "(api) File to append the HTTP access log to, in Combined Log Format; '-' for the process log [default: none]."],
    ]

    optFlags = [
        ["no-store", None, "(broker) Keep no queue of commands for offline devices (the same as --store '')."],
    ]

    def __init__(self, environ=None) -> None:
        super().__init__()
        self.environ = os.environ if environ is None else environ

    def parseOptions(self, options=None) -> None:
        if options is None:
            options = sys.argv[1:]
        # Environment values go first, as if typed first: a later command-line value wins,
        # and both pass through the same validation.
        super().parseOptions(self._fromEnvironment() + list(options))

    def _fromEnvironment(self) -> list[str]:
        arguments = []
        for name, *_ in self.optParameters:
            value = self.environ.get(ENVIRONMENT_PREFIX + name.upper().replace("-", "_"))
            if value is not None:
                arguments.append(f"--{name}={value}")
        return arguments

    def postOptions(self) -> None:
        roles = [role.strip() for role in self["roles"].split(",") if role.strip()]
        unknown = sorted(set(roles) - set(ROLES))
        if not roles or unknown:
            raise usage.UsageError(f"--roles takes a comma list of {', '.join(ROLES)}; got {self['roles']!r}")
        self["roles"] = tuple(role for role in ROLES if role in roles)
        for name in ("frontend", "backend", "events"):
            if not _ZMQ_ADDRESS.fullmatch(self[name]):
                raise usage.UsageError(f"--{name} must be a ZeroMQ address like tcp://127.0.0.1:5555")
        for name, role in (("devices", "node"), ("http", "api")):
            if role in self["roles"]:
                self._checkEndpoint(name)
        if self["metrics"] is not None:
            self._checkEndpoint("metrics")
        if self["node-id"] is None:
            self["node-id"] = f"{socket.gethostname()}-{os.getpid()}"
        if self["max-devices"] is None:
            openFiles = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            self["max-devices"] = max(1, openFiles - FD_HEADROOM) if openFiles != resource.RLIM_INFINITY else 1_000_000
        for name in ("device-secret", "api-token"):
            if self[name] == "":
                raise usage.UsageError(f"--{name} must not be empty")
        if self["curve-keys"] is not None:
            self._checkKeys()
        if self["no-store"] or not self["store"]:
            self["store"] = None

    def _checkKeys(self) -> None:
        from .curve import MissingKeys, clientKeys, serverKeys

        try:
            if "broker" in self["roles"]:
                serverKeys(self["curve-keys"])
            if "node" in self["roles"] or "api" in self["roles"]:
                clientKeys(self["curve-keys"])
        except (MissingKeys, ValueError, OSError) as e:
            raise usage.UsageError(f"--curve-keys: {e}") from None

    def _checkEndpoint(self, name: str) -> None:
        from twisted.internet import reactor

        try:
            serverFromString(reactor, self[name])
        except Exception as e:
            raise usage.UsageError(f"--{name} {self[name]!r} is not a usable endpoint: {e}") from None


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
    The roles of one twistd process. Its stop reports a failing child instead of
    swallowing it; once started, it tunes the garbage collector for the process.
    """

    def startService(self) -> None:
        super().startService()
        tune_garbage_collector()

    def stopService(self) -> Deferred:
        self.running = False
        stopping = [maybeDeferred(service.stopService) for service in reversed(list(self))]
        return gatherResults(stopping, consumeErrors=True).addErrback(
            lambda failure: log.failure("A role failed to stop", failure)
        )


def makeService(options: Options, reactor=None) -> Roles:
    """The roles C{options} selects, as one service."""
    if reactor is None:
        from twisted.internet import reactor
    from twisted.web.server import Site

    from .api import ApiService
    from .broker import BrokerService
    from .listening import ListeningService
    from .metrics import Metrics, MetricsPage
    from .node import NodeService
    from .devices.session import DeviceSettings

    hub = Roles()
    roles = options["roles"]
    metrics = Metrics()
    # Roles in one process talk through in-process pipes, not ZeroMQ (their options still name its addresses).
    broker = None
    if "broker" in roles:
        broker = BrokerService(
            reactor,
            frontend=options["frontend"],
            backend=options["backend"],
            nodeTtl=options["node-ttl"],
            drainTimeout=options["drain-timeout"],
            maxClientInflight=options["max-client-inflight"],
            curveKeys=options["curve-keys"],
            metrics=metrics,
            events=options["events"],
            store=options["store"],
            deliveryTimeout=options["command-timeout"],
        )
        broker.setServiceParent(hub)
    if "node" in roles:
        NodeService(
            reactor,
            devices=options["devices"],
            backend=options["backend"],
            name=options["node-id"],
            commandTimeout=options["command-timeout"],
            settings=DeviceSettings(
                loginTimeout=options["login-timeout"],
                idleTimeout=options["idle-timeout"],
                maxLine=options["max-line"],
                secret=None if options["device-secret"] is None else options["device-secret"].encode(),
                maxDevices=options["max-devices"],
                maxPending=options["max-pending"],
            ),
            drainTimeout=options["drain-timeout"],
            curveKeys=options["curve-keys"],
            metrics=metrics,
            broker=broker,
        ).setServiceParent(hub)
    if "api" in roles:
        ApiService(
            reactor,
            http=options["http"],
            frontend=options["frontend"],
            commandTimeout=options["command-timeout"],
            drainTimeout=options["drain-timeout"],
            token=options["api-token"],
            accessLog=options["access-log"],
            curveKeys=options["curve-keys"],
            metrics=metrics,
            events=options["events"],
            broker=broker,
        ).setServiceParent(hub)
    if options["metrics"] is not None:
        ListeningService(reactor, options["metrics"], Site(MetricsPage(metrics)), "metrics").setServiceParent(hub)
    return hub
