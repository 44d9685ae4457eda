"""
The command line of C{devicehub}: its parser, the checks of each argument, the
C{DEVICEHUB_*} environment variables, and L{UsageError} for any mistake in them.
"""

import argparse
import os
import re
from typing import Any, Mapping, NoReturn

from twisted.internet.endpoints import clientFromString

from devicehub import __version__
from devicehub.common.addresses import DEFAULT_EVENTS, DEFAULT_FRONTEND, address_problem, addresses
from devicehub.common.imei import is_valid_imei
from devicehub.common.jsoncodec import BadJSON, loads
from devicehub.common.limits import DEFAULT_NUM, MAX_NUM, MAX_TIMEOUT, MAX_TTL, isSeconds
from devicehub.devices.simulate import MODELS
from devicehub.wire.curve import BROKER, MissingKeys, clientKeys

COMMAND_TIMEOUT = 10.0
QUERY_TIMEOUT = 2.0
_KEY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


class UsageError(Exception):
    """A usage or configuration mistake: C{devicehub} prints it as one line on stderr and exits 64."""

    def __init__(self, message: str, prog: str = "devicehub") -> None:
        super().__init__(message)
        self.prog = prog

    def __str__(self) -> str:
        return f"{self.prog}: {self.args[0]}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see: {self.prog} --help)", self.prog)


def _imei(value: str) -> str:
    if not is_valid_imei(value):
        raise argparse.ArgumentTypeError(f"invalid imei {value!r}")
    return value


def _instruct(value: str) -> str:
    if not value:
        raise argparse.ArgumentTypeError("INSTRUCT must not be empty")
    return value


def _json(value: str) -> Any:
    try:
        # The strict JSON of every devicehub wire: no NaN, no Infinity, no 1e400.
        return loads(value.encode("utf-8", "surrogatepass"))
    except BadJSON as e:
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise argparse.ArgumentTypeError(f"invalid DATA {shown!r}: {e}") from None


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None


def _timeout(value: str) -> float:
    seconds = _number(value)
    if not isSeconds(seconds, MAX_TIMEOUT):
        raise argparse.ArgumentTypeError(f"timeout must be in 0 < S <= {MAX_TIMEOUT:g} seconds, not {value!r}")
    return seconds


def _ttl(value: str) -> float:
    seconds = _number(value)
    if not isSeconds(seconds, MAX_TTL):
        raise argparse.ArgumentTypeError(f"ttl must be in 0 < S <= {MAX_TTL:g} seconds, not {value!r}")
    return seconds


def _whole(value: str, maximum: int | None) -> int:
    try:
        number = int(value, 10)
    except ValueError:
        number = -1
    if number < 0 or (maximum is not None and number > maximum):
        bounds = f"in 0..{maximum}" if maximum is not None else ">= 0"
        raise argparse.ArgumentTypeError(f"must be a whole number {bounds}, not {value!r}")
    return number


def _num(value: str) -> int:
    return _whole(value, MAX_NUM)


def _page(value: str) -> int:
    return _whole(value, None)


def _keyName(value: str) -> str:
    if not _KEY_NAME.fullmatch(value) or value == BROKER:
        raise argparse.ArgumentTypeError(f"{value!r} is not a key name (letters, digits, . _ -; not {BROKER!r})")
    return value


def _count(value: str) -> int:
    number = _whole(value, 100_000)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number in 1..100000, not {value!r}")
    return number


def _seconds(value: str) -> float:
    seconds = _number(value)
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {value!r}")
    return seconds


def _clientEndpoint(value: str) -> str:
    from twisted.internet import reactor

    try:
        clientFromString(reactor, value)
    except Exception as e:
        raise argparse.ArgumentTypeError(f"{value!r} is not a client endpoint string: {e}") from None
    return value


def _commonOptions(parser: argparse.ArgumentParser, top: bool) -> None:
    """The options every command takes, before or after its name (given after, they win)."""
    # Only the top parser sets defaults: a command's parser must not overwrite a value given before it.
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--frontend", default=default, metavar="ADDRESS",
        help=f"the broker frontend, or a comma list of several brokers' (default: $DEVICEHUB_FRONTEND or {DEFAULT_FRONTEND})",
    )
    parser.add_argument(
        "--events", default=default, metavar="ADDRESS",
        help=f"the broker's event publisher, for 'events' (default: $DEVICEHUB_EVENTS or {DEFAULT_EVENTS})",
    )
    parser.add_argument(
        "--curve-keys", default=default, metavar="DIR",
        help="key directory when the broker requires CURVE (default: $DEVICEHUB_CURVE_KEYS)",
    )
    parser.add_argument(
        "--timeout", type=_timeout, default=default, metavar="S",
        help=f"seconds to wait, 0 < S <= {MAX_TIMEOUT:g}: for an ack (default {COMMAND_TIMEOUT:g}) "
        f"or for the broker (default {QUERY_TIMEOUT:g})",
    )


def parser() -> argparse.ArgumentParser:
    """The command line of C{devicehub}."""
    top = _Parser(prog="devicehub", description="Send commands to devices through a devicehub broker.")
    top.add_argument("--version", action="version", version=f"devicehub {__version__}")
    _commonOptions(top, top=True)
    verbs = top.add_subparsers(dest="verb", required=True, metavar="COMMAND", parser_class=_Parser)
    send = verbs.add_parser(
        "send", usage="devicehub send [options] (IMEI | --all | --prefix P | --file F) INSTRUCT [DATA]",
        help="send a command; exit 0 acked, 1 offline, 2 not acked in time (to many: 0 all acked, 1 not all)",
    )
    send.add_argument("imei", metavar="IMEI", help="the device (not with --all, --prefix or --file)")
    send.add_argument("instruct", metavar="INSTRUCT", nargs="?")
    send.add_argument("data", metavar="DATA", nargs="?", help="JSON value sent as the command's data")
    many = send.add_mutually_exclusive_group()
    many.add_argument("--all", action="store_true", help="to every device online now")
    many.add_argument("--prefix", metavar="P", help="to every device online now whose imei starts with P")
    many.add_argument("--file", metavar="F", help="to every imei in file F (one a line; - for stdin)")
    send.add_argument(
        "--inflight", type=_count, default=100, metavar="N",
        help="with --all, --prefix or --file: commands in flight at most (default 100)",
    )
    send.add_argument("--nowait", action="store_true", help="do not wait for the ack")
    send.add_argument("--queue", action="store_true", help="queue it if the device is offline (exit 0, result queued)")
    send.add_argument(
        "--ttl", type=_ttl, metavar="S",
        help=f"seconds a queued command stays deliverable (default 86400, at most {MAX_TTL:g})",
    )
    send.add_argument("--coalesce", action="store_true", help="replace queued commands with the same instruct")
    find = verbs.add_parser("find", help="is a device online? exit 0 yes, 1 no")
    find.add_argument("imei", type=_imei)
    listing = verbs.add_parser("list", help="online devices, sorted, one page")
    listing.add_argument("--num", type=_num, default=DEFAULT_NUM, metavar="N", help=f"devices per page, 0..{MAX_NUM}")
    listing.add_argument("--page", type=_page, default=0, metavar="P", help="page number, 0 first")
    total = verbs.add_parser("total", help="number of online devices")
    events = verbs.add_parser("events", help="print device events as JSON lines until interrupted")
    events.add_argument("imei", nargs="?", type=_imei, help="only this device's events")
    keys = verbs.add_parser("keygen", help="make CURVE keys for the broker and a client in DIR")
    keys.add_argument("directory", metavar="DIR")
    keys.add_argument(
        "--client", type=_keyName, default="client", help="name of the client key pair to make and authorize"
    )
    simulate = verbs.add_parser(
        "simulate", help="run simulated devices of a protocol against a hub until interrupted (or --duration)"
    )
    simulate.add_argument("--protocol", choices=sorted(MODELS), default="jsonl", help="their protocol (default jsonl)")
    simulate.add_argument("--count", type=_count, default=1, metavar="N", help="how many devices (default 1)")
    simulate.add_argument(
        "--to", type=_clientEndpoint, default="tcp:127.0.0.1:7700", metavar="ENDPOINT",
        help="the hub's listener for that protocol, a client endpoint string (default tcp:127.0.0.1:7700)",
    )
    simulate.add_argument(
        "--interval", type=_seconds, default=30.0, metavar="S", help="seconds between heartbeats and positions (default 30)"
    )
    simulate.add_argument("--silent", action="store_true", help="never answer commands (they time out)")
    simulate.add_argument("--prefix", default="86000000", help="identities are PREFIX followed by digits to 15 characters")
    simulate.add_argument("--duration", type=_seconds, metavar="S", help="stop after S seconds")
    for verb in (send, find, listing, total, events, keys, simulate):
        _commonOptions(verb, top=False)
    return top


def _setting(arguments: argparse.Namespace, environ: Mapping[str, str], name: str, default: str | None):
    """The value of option C{name} and where it came from: the option, its environment variable, or the default."""
    value = getattr(arguments, name.replace("-", "_"))
    if value is not None:
        return value, f"--{name}"
    variable = "DEVICEHUB_" + name.upper().replace("-", "_")
    if environ.get(variable) is not None:
        return environ[variable], variable
    return default, None


def _checkSend(arguments: argparse.Namespace) -> None:
    """The positional arguments of send, checked: IMEI INSTRUCT [DATA], or INSTRUCT [DATA] to many."""
    arguments.many = arguments.all or arguments.prefix is not None or arguments.file is not None
    words = [arguments.imei, arguments.instruct, arguments.data]
    if arguments.many:
        words = [None] + words[:2]
        if arguments.data is not None:
            raise UsageError("with --all, --prefix or --file give INSTRUCT [DATA], no IMEI (see: devicehub send --help)")
        for name in ("nowait", "ttl", "coalesce"):
            if getattr(arguments, name):
                raise UsageError(f"--{name} is for one device (see: devicehub send --help)")
    elif arguments.instruct is None:
        raise UsageError("send needs IMEI INSTRUCT [DATA] (see: devicehub send --help)")
    checks = (("IMEI", _imei), ("INSTRUCT", _instruct), ("DATA", _json))
    for index, (name, check) in enumerate(checks):
        if words[index] is not None:
            try:
                words[index] = check(words[index])
            except argparse.ArgumentTypeError as e:
                raise UsageError(f"argument {name}: {e} (see: devicehub send --help)") from None
    arguments.imei, arguments.instruct, arguments.data = words
    if arguments.prefix is not None and not is_valid_imei(arguments.prefix):
        raise UsageError(f"--prefix: invalid imei prefix {arguments.prefix!r}")


def parse(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """
    Parse and check a command line, with C{DEVICEHUB_*} from C{environ} for the options
    not given; raise L{UsageError} for any mistake, naming the option or variable at fault.
    """
    environ = os.environ if environ is None else environ
    arguments = parser().parse_args(argv)
    if arguments.verb == "send":
        _checkSend(arguments)
    if arguments.verb == "send" and not arguments.queue:
        for name in ("ttl", "coalesce"):
            if getattr(arguments, name):
                raise UsageError(f"--{name} needs --queue (see: devicehub send --help)")
    arguments.frontend, frontendSource = _setting(arguments, environ, "frontend", DEFAULT_FRONTEND)
    arguments.events, eventsSource = _setting(arguments, environ, "events", DEFAULT_EVENTS)
    arguments.curve_keys, keysSource = _setting(arguments, environ, "curve-keys", None)
    arguments.sources = {"frontend": frontendSource, "events": eventsSource, "curve-keys": keysSource}
    if arguments.verb in ("keygen", "simulate"):
        return arguments
    address = "events" if arguments.verb == "events" else "frontend"
    value = getattr(arguments, address)
    for item in (addresses(value) or (value,)) if address == "frontend" else (value,):
        problem = address_problem(item, connect=True)
        if problem is not None:
            raise UsageError(f"{arguments.sources[address]}: {problem}")
    if arguments.curve_keys is not None:
        try:
            clientKeys(arguments.curve_keys)
        except (MissingKeys, ValueError, OSError) as e:
            raise UsageError(f"{keysSource}: {e}") from None
    return arguments
