"""Options of C{twistd devicehub} and the service they build (CONTRACT §1)."""

import gc
import getopt
import os
import resource
import socket
import sys

import twisted
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from devicehub import __version__
from devicehub.common.addresses import address_problem
from devicehub.common.limits import MAX_TIMEOUT
from devicehub.common.startup import EXPECTED, startupFailed, usageFailed

log = Logger()

ROLES = ("broker", "node", "api")
# File descriptors kept free for listeners, ZeroMQ and logs when --max-devices is derived.
FD_HEADROOM = 200
ENVIRONMENT_PREFIX = "DEVICEHUB_"
# Allocations between collections of the youngest generation (Python's default: 700).
GC_THRESHOLD = 20_000


def positiveFloat(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0 < number < float("inf"):
        raise ValueError(f"{value!r} is not a positive number")
    return number


positiveFloat.coerceDoc = "A positive number of seconds."


def commandSeconds(value: str) -> float:
    number = positiveFloat(value)
    if number > MAX_TIMEOUT:
        raise ValueError(f"{value!r} is more than {MAX_TIMEOUT:g} seconds, the longest a caller may wait")
    return number


commandSeconds.coerceDoc = f"Seconds, at most {MAX_TIMEOUT:g}."


def positiveInt(value: str) -> int:
    try:
        number = int(value, 10)
    except ValueError:
        number = 0
    if number <= 0:
        raise ValueError(f"{value!r} is not a positive whole number")
    return number


positiveInt.coerceDoc = "A positive whole number."


def environmentVariable(option: str) -> str:
    """The environment variable that sets C{--option}."""
    return ENVIRONMENT_PREFIX + option.upper().replace("-", "_")


class _NamedCoerce(usage.CoerceParameter):
    """A coerced option whose error names it (or the environment variable it came from)."""

    def dispatch(self, parameterName: str, value: str) -> None:
        try:
            self.options.opts[parameterName] = self.coerce(value)
        except ValueError as e:
            raise usage.UsageError(f"{self.options.label(parameterName)}: {e}") from None


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
        ["devices", None, "tcp:7700",
         "Server endpoint string for JSON Lines devices (the same as --listen jsonl=ENDPOINT); '' for none."],
        ["http", None, "tcp:8080:interface=127.0.0.1", "Server endpoint string for the HTTP API."],
        ["frontend", None, "tcp://127.0.0.1:5555", "ZeroMQ address of the broker frontend."],
        ["backend", None, "tcp://127.0.0.1:5556", "ZeroMQ address of the broker backend."],
        ["events", None, "tcp://127.0.0.1:5557", "ZeroMQ address the broker publishes device events on."],
        ["command-timeout", None, 10.0, "Seconds a command waits for its ack by default.", commandSeconds],
        ["login-timeout", None, 30.0, "Seconds a new device connection has to log in.", positiveFloat],
        ["idle-timeout", None, 300.0, "Seconds of silence before a device connection is closed.", positiveFloat],
        ["max-line", None, 65536, "Longest device frame (a JSON line, a binary packet) in bytes.", positiveInt],
        ["node-id", None, None, "The node's name in the directory and logs [default: host name-pid]."],
        ["node-ttl", None, 5.0, "Seconds without a heartbeat after which the broker declares a node dead.", positiveFloat],
        ["drain-timeout", None, 10.0, "Seconds a stopping role waits for its work in flight.", positiveFloat],
        ["max-devices", None, None,
         "Devices logged in on a node at once [default: what the open-file limit less 200 leaves once"
         " connections logging in have their share]", positiveInt],
        ["max-logins", None, None,
         "Connections not logged in yet that a node keeps at once [default: a tenth of --max-devices, at least 16]",
         positiveInt],
        ["max-pending", None, 64, "Unanswered commands per device; more are refused as busy (HTTP 429).", positiveInt],
        ["max-client-inflight", None, 10_000,
         "Commands one broker client may have in flight; more are refused as busy.", positiveInt],
        ["device-secret", None, None, "Devices must log in with token = hex HMAC-SHA256(secret, imei)."],
        ["api-token", None, None, "Every HTTP route but /health needs 'Authorization: Bearer TOKEN'."],
        ["curve-keys", None, None, "Key directory (devicehub keygen DIR): CURVE-encrypt and authenticate broker links."],
        ["store", None, "devicehub.sqlite3",
         "(broker) The queue of commands for offline devices, opened at start: a SQLite file (created if missing),"
         " or a postgresql://USER@HOST[:PORT]/DB URL that several brokers share; '' for none."],
        ["allow", None, None,
         "(node) File of the device identities (or patterns like 8612*) that may log in, over every protocol;"
         " re-read when it changes or on SIGHUP [default: any]"],
        ["metrics", None, None, "Server endpoint string to serve Prometheus metrics on (the api role also has /metrics)."],
        ["access-log", None, None,
         "(api) File to append the HTTP access log to, in Combined Log Format; '-' for the process log [default: none]."],
    ]

    optFlags = [
        ["no-store", None, "(broker) Keep no queue of commands for offline devices (the same as --store '')."],
    ]

    def __init__(self, environ=None) -> None:
        super().__init__()
        self["listen"] = []
        self.environ = os.environ if environ is None else environ
        self.environment: dict[str, str] = {}
        """The C{DEVICEHUB_*} variables that set options, and their values."""
        for name, dispatcher in self._dispatch.items():
            if type(dispatcher) is usage.CoerceParameter:
                self._dispatch[name] = _NamedCoerce(self, dispatcher.coerce)

    def parseOptions(self, options=None) -> None:
        if options is None:
            options = sys.argv[1:]
        options = list(options)
        given = self._given(options)
        # Environment values go first, as if typed first, and pass through the same
        # validation; an option also on the command line ignores its variable.
        fromEnvironment = []
        self.environment = {}
        for name, *_ in self.optParameters:
            variable = environmentVariable(name)
            value = self.environ.get(variable)
            if value is not None and name not in given:
                fromEnvironment.append(f"--{name}={value}")
                self.environment[variable] = value
        listen = self.environ.get(environmentVariable("listen"))
        if listen is not None and "listen" not in given:  # several, separated by spaces
            fromEnvironment += [f"--listen={item}" for item in listen.split()]
            self.environment[environmentVariable("listen")] = listen
        super().parseOptions(fromEnvironment + options)

    def _given(self, options: list[str]) -> set[str]:
        """The names of the options on the command line C{options}."""
        try:
            found, _ = getopt.getopt(options, self.shortOpt, self.longOpt)
        except getopt.error:
            return set()  # parseOptions reports it
        return {self.synonyms.get(option.lstrip("-"), option.lstrip("-")) for option, _ in found}

    def label(self, name: str) -> str:
        """How to name option C{name} in an error: C{--name}, or the variable that set it."""
        variable = environmentVariable(name)
        return variable if variable in self.environment else f"--{name}"

    def opt_listen(self, value: str) -> None:
        """PROTOCOL=ENDPOINT: one more device listener speaking PROTOCOL (jsonl, watch, gt06, teltonika); repeatable."""
        from devicehub.devices import codecs

        protocol, equals, endpoint = value.partition("=")
        if not equals or not endpoint:
            raise usage.UsageError(f"{self.label('listen')} takes PROTOCOL=ENDPOINT, e.g. gt06=tcp:5023; got {value!r}")
        try:
            codecs.load(protocol)
        except (codecs.UnknownProtocol, ImportError) as e:
            raise usage.UsageError(f"{self.label('listen')}: {e}") from None
        self["listen"].append((protocol, self._usableEndpoint("listen", endpoint)))

    def opt_version(self) -> None:
        """Display the version of devicehub (and Twisted) and exit."""
        print(f"devicehub {__version__} (Twisted {twisted.__version__})")
        sys.exit(0)

    def postOptions(self) -> None:
        roles = [role.strip() for role in self["roles"].split(",") if role.strip()]
        unknown = sorted(set(roles) - set(ROLES))
        if not roles or unknown:
            raise usage.UsageError(
                f"{self.label('roles')} takes a comma list of {', '.join(ROLES)}; got {self['roles']!r}"
            )
        self["roles"] = tuple(role for role in ROLES if role in roles)
        for name in ("frontend", "backend", "events"):
            problem = address_problem(self[name])
            if problem is not None:
                raise usage.UsageError(f"{self.label(name)}: {problem}")
        if not self["devices"]:  # --devices '': no JSON Lines listener
            self["devices"] = None
        if "node" in self["roles"] and self["devices"] is None and not self["listen"]:
            raise usage.UsageError(f"{self.label('devices')} is empty and there is no --listen: a node needs a listener")
        for name, role in (("devices", "node"), ("http", "api")):
            if role in self["roles"] and self[name] is not None:
                self._checkEndpoint(name)
        if self["metrics"] is not None:
            self._checkEndpoint("metrics")
        if self["node-id"] is None:
            self["node-id"] = f"{socket.gethostname()}-{os.getpid()}"
        if self["max-devices"] is None:
            openFiles = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            # Devices and, on top of them, a tenth for connections still logging in.
            usable = (openFiles - FD_HEADROOM) * 10 // 11
            self["max-devices"] = max(1, usable) if openFiles != resource.RLIM_INFINITY else 1_000_000
        for name in ("device-secret", "api-token"):
            if self[name] == "":
                raise usage.UsageError(f"{self.label(name)} must not be empty")
        if self["curve-keys"] is not None:
            self._checkKeys()
        if self["allow"] is not None and "node" in self["roles"]:
            from devicehub.node.allowlist import AllowList

            try:  # read once, here: the node takes this list
                self["allow"] = AllowList(self["allow"])
            except (OSError, ValueError) as e:
                raise usage.UsageError(f"{self.label('allow')}: cannot read the allow-list: {e}") from None
        if self["no-store"] or not self["store"]:
            self["store"] = None
        if "api" in self["roles"] and self["access-log"] not in (None, "-"):
            self._checkAccessLog()

    def _checkKeys(self) -> None:
        from devicehub.wire.curve import MissingKeys, clientKeys, serverKeys

        try:
            if "broker" in self["roles"]:
                serverKeys(self["curve-keys"])
            if "node" in self["roles"] or "api" in self["roles"]:
                clientKeys(self["curve-keys"])
        except (MissingKeys, ValueError, OSError) as e:
            raise usage.UsageError(f"{self.label('curve-keys')}: {e}") from None

    def _checkAccessLog(self) -> None:
        try:
            with open(self["access-log"], "a"):
                pass  # the api role appends to it
        except OSError as e:
            problem = f"cannot append to {self['access-log']!r}: {e.strerror}"
            raise usage.UsageError(f"{self.label('access-log')}: {problem}") from None

    def _checkEndpoint(self, name: str) -> None:
        self._usableEndpoint(name, self[name])

    def _usableEndpoint(self, name: str, endpoint: str) -> str:
        from twisted.internet import reactor

        try:
            serverFromString(reactor, endpoint)
        except Exception as e:
            raise usage.UsageError(f"{self.label(name)}: {endpoint!r} is not a usable endpoint: {e}") from None
        return endpoint


class TwistdOptions(Options):
    """
    L{Options} as C{twistd devicehub} parses them: a mistake is one line on stderr and
    exit status 64, instead of twistd's whole --help on stdout with the error last.
    """

    def parseOptions(self, options=None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise usageFailed(str(e)) from None


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


def makeService(options: Options, reactor=None) -> Roles:
    """The roles C{options} selects, as one service."""
    if reactor is None:
        from twisted.internet import reactor
    from devicehub.api.resource import ApiService
    from devicehub.broker.service import BrokerService
    from devicehub.common.listening import ListeningService
    from devicehub.common.metrics import Metrics, MetricsSite
    from devicehub.node.service import NodeService
    from devicehub.devices.session import DeviceSettings

    hub = Roles(getattr(options, "environment", None))
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
            listen=options["listen"],
            backend=options["backend"],
            name=options["node-id"],
            commandTimeout=options["command-timeout"],
            settings=DeviceSettings(
                loginTimeout=options["login-timeout"],
                idleTimeout=options["idle-timeout"],
                maxLine=options["max-line"],
                secret=None if options["device-secret"] is None else options["device-secret"].encode(),
                maxDevices=options["max-devices"],
                maxLogins=options["max-logins"],
                maxPending=options["max-pending"],
            ),
            drainTimeout=options["drain-timeout"],
            curveKeys=options["curve-keys"],
            metrics=metrics,
            local=None if broker is None else broker.connectNode,
            allow=options["allow"],
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
            local=None if broker is None else broker.connectClient,
        ).setServiceParent(hub)
    if options["metrics"] is not None:
        ListeningService(reactor, options["metrics"], MetricsSite(metrics), "metrics").setServiceParent(hub)
    return hub
