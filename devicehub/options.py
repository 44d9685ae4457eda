"""
Options of C{twistd devicehub} (CONTRACT §1): parsed, taken from the environment too,
validated once, and turned into each role's settings.
"""

import getopt
import os
import resource
import socket
import sys
from typing import TYPE_CHECKING

import twisted
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from devicehub import __version__
from devicehub.common.addresses import DEFAULT_BACKEND, DEFAULT_EVENTS, DEFAULT_FRONTEND, address_problem, addresses
from devicehub.common.limits import MAX_TIMEOUT, isSeconds, parseSeconds
from devicehub.common.startup import usageFailed

if TYPE_CHECKING:
    from devicehub.api.settings import ApiSettings
    from devicehub.broker.settings import BrokerSettings
    from devicehub.node.settings import NodeSettings

ROLES = ("broker", "node", "api")
# File descriptors kept free for listeners, ZeroMQ and logs when --max-devices is derived.
FD_HEADROOM = 200
ENVIRONMENT_PREFIX = "DEVICEHUB_"


def positiveFloat(value: str) -> float:
    number = parseSeconds(value)
    if number is None:
        raise ValueError(f"{value!r} is not a positive number")
    return number


positiveFloat.coerceDoc = "A positive number of seconds."


def commandSeconds(value: str) -> float:
    number = positiveFloat(value)
    if not isSeconds(number, MAX_TIMEOUT):
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


class EnvironmentOptions(usage.Options):
    """
    Options that can also be set in the environment as C{DEVICEHUB_<OPTION>} (dashes as
    underscores), validated like the command line, which wins. The variable of a
    L{repeatable} option holds its values separated by spaces.
    """

    repeatable: tuple[str, ...] = ()

    def __init__(self, environ=None) -> None:
        super().__init__()
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
        for name in [name for name, *_ in self.optParameters] + list(self.repeatable):
            variable = environmentVariable(name)
            value = self.environ.get(variable)
            if value is None or name in given:
                continue
            values = value.split() if name in self.repeatable else [value]
            fromEnvironment += [f"--{name}={item}" for item in values]
            self.environment[variable] = value
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


class Options(EnvironmentOptions):
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
        ["frontend", None, DEFAULT_FRONTEND,
         "ZeroMQ address of the broker frontend, or a comma list of several brokers' (the api uses one and moves"
         " to another when it stops answering; a broker role binds the first)."],
        ["backend", None, DEFAULT_BACKEND,
         "ZeroMQ address of the broker backend, or a comma list of several brokers' (a node reports to each;"
         " a broker role binds the first)."],
        ["events", None, DEFAULT_EVENTS, "ZeroMQ address the broker publishes device events on."],
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
        ["job-inflight", None, 100,
         "(api) Commands one job to many devices (POST /commands) keeps in flight at most.", positiveInt],
        ["max-client-inflight", None, 10_000,
         "Commands one broker client may have in flight; more are refused as busy.", positiveInt],
        ["device-secret", None, None, "Devices must log in with token = hex HMAC-SHA256(secret, imei)."],
        ["api-token", None, None, "Every HTTP route but /health and the console's files needs 'Authorization: Bearer TOKEN'."],
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

    repeatable = ("listen",)

    def __init__(self, environ=None) -> None:
        super().__init__(environ)
        self["listen"] = []

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
            several = addresses(self[name]) if name != "events" else (self[name],)
            if not several:
                raise usage.UsageError(f"{self.label(name)} is empty: give a ZeroMQ address like {DEFAULT_FRONTEND}")
            for address in several:
                problem = address_problem(address)
                if problem is not None:
                    raise usage.UsageError(f"{self.label(name)}: {problem}")
            if name != "events":
                self[name] = ",".join(several)
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

    def brokerSettings(self) -> "BrokerSettings":
        """The broker role's settings."""
        from devicehub.broker.settings import BrokerSettings

        return BrokerSettings(
            frontend=addresses(self["frontend"])[0],  # a broker binds the first of a list
            backend=addresses(self["backend"])[0],
            events=self["events"],
            store=self["store"],
            nodeTtl=self["node-ttl"],
            maxClientInflight=self["max-client-inflight"],
            deliveryTimeout=self["command-timeout"],
            drainTimeout=self["drain-timeout"],
            curveKeys=self["curve-keys"],
        )

    def nodeSettings(self) -> "NodeSettings":
        """The node role's settings."""
        from devicehub.devices.session import DeviceSettings
        from devicehub.node.settings import NodeSettings

        secret = self["device-secret"]
        return NodeSettings(
            name=self["node-id"],
            devices=self["devices"],
            listen=tuple(self["listen"]),
            backend=self["backend"],
            commandTimeout=self["command-timeout"],
            device=DeviceSettings(
                loginTimeout=self["login-timeout"],
                idleTimeout=self["idle-timeout"],
                maxLine=self["max-line"],
                secret=None if secret is None else secret.encode(),
                maxDevices=self["max-devices"],
                maxLogins=self["max-logins"],
                maxPending=self["max-pending"],
            ),
            drainTimeout=self["drain-timeout"],
            curveKeys=self["curve-keys"],
            allow=self["allow"],
        )

    def apiSettings(self) -> "ApiSettings":
        """The api role's settings."""
        from devicehub.api.settings import ApiSettings

        return ApiSettings(
            http=self["http"],
            frontend=self["frontend"],
            events=self["events"],
            commandTimeout=self["command-timeout"],
            drainTimeout=self["drain-timeout"],
            token=self["api-token"],
            accessLog=self["access-log"],
            curveKeys=self["curve-keys"],
            jobInflight=self["job-inflight"],
        )



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
