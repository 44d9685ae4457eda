"""
C{devicehub}: the operators' command-line client of the broker frontend.

Prints one JSON line and exits with a code scripts can branch on:
0 ok, 1 no (not online), 2 timeout, 3 broker unavailable, 4 busy, 64 usage.
"""

import argparse
import json
import os
import sys
from typing import Any, NoReturn

from twisted.internet import task
from twisted.internet.defer import Deferred

from .client import BrokerUnavailable, Busy, Demand
from .events import DEFAULT_EVENTS, Events
from .curve import MissingKeys, keygen
from .frames import dumps
from .imei import is_valid_imei
from .results import NO, OK, QUEUED, TIMEOUT

EXIT = {OK: 0, NO: 1, TIMEOUT: 2}
EXIT_UNAVAILABLE = 3
EXIT_BUSY = 4
EXIT_USAGE = 64
DEFAULT_FRONTEND = "tcp://127.0.0.1:5555"
COMMAND_TIMEOUT = 10.0
QUERY_TIMEOUT = 2.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _imei(value: str) -> str:
    if not is_valid_imei(value):
        raise argparse.ArgumentTypeError(f"invalid imei {value!r}")
    return value


def _json(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"DATA is not JSON: {value!r}") from None


def _seconds(value: str) -> float:
    seconds = float(value)
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError("timeout must be a positive number of seconds")
    return seconds


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be a whole number >= 0")
    return number


def parser() -> argparse.ArgumentParser:
    """The command line of C{devicehub}."""
    top = _Parser(prog="devicehub", description="Send commands to devices through a devicehub broker.")
    top.add_argument(
        "--frontend",
        default=os.environ.get("DEVICEHUB_FRONTEND", DEFAULT_FRONTEND),
        help="the broker frontend (default: $DEVICEHUB_FRONTEND or %(default)s)",
    )
    top.add_argument(
        "--events",
        default=os.environ.get("DEVICEHUB_EVENTS", DEFAULT_EVENTS),
        help="the broker's event publisher, for 'events' (default: $DEVICEHUB_EVENTS or %(default)s)",
    )
    top.add_argument(
        "--curve-keys",
        default=os.environ.get("DEVICEHUB_CURVE_KEYS"),
        help="key directory when the broker requires CURVE (default: $DEVICEHUB_CURVE_KEYS)",
    )
    top.add_argument(
        "--timeout",
        type=_seconds,
        help=f"seconds to wait: for an ack (default {COMMAND_TIMEOUT:g}) or the broker (default {QUERY_TIMEOUT:g})",
    )
    verbs = top.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    send = verbs.add_parser("send", help="send a command; exit 0 acked, 1 offline, 2 not acked in time")
    send.add_argument("imei", type=_imei)
    send.add_argument("instruct")
    send.add_argument("data", nargs="?", type=_json, default=None, help="JSON value sent as the command's data")
    send.add_argument("--nowait", action="store_true", help="do not wait for the ack")
    send.add_argument("--queue", action="store_true", help="queue it if the device is offline (exit 0, result queued)")
    send.add_argument("--ttl", type=_seconds, help="seconds a queued command stays deliverable (default 86400)")
    send.add_argument("--coalesce", action="store_true", help="replace queued commands with the same instruct")
    find = verbs.add_parser("find", help="is a device online? exit 0 yes, 1 no")
    find.add_argument("imei", type=_imei)
    listing = verbs.add_parser("list", help="online devices, sorted, one page")
    listing.add_argument("--num", type=_count, default=50)
    listing.add_argument("--page", type=_count, default=0)
    verbs.add_parser("total", help="number of online devices")
    events = verbs.add_parser("events", help="print device events as JSON lines until interrupted")
    events.add_argument("imei", nargs="?", type=_imei, help="only this device's events")
    keys = verbs.add_parser("keygen", help="make CURVE keys for the broker and a client in DIR")
    keys.add_argument("directory", metavar="DIR")
    keys.add_argument("--client", default="client", help="name of the client key pair to make and authorize")
    # --timeout is also accepted after the verb
    for verb in (send, find, listing, verbs.choices["total"]):
        verb.add_argument("--timeout", type=_seconds, default=argparse.SUPPRESS)
    return top


async def run(reactor, arguments: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Execute one parsed command line; return its exit code and output."""
    default = COMMAND_TIMEOUT if arguments.verb == "send" else QUERY_TIMEOUT
    try:
        demand = Demand(
            arguments.frontend, timeout=arguments.timeout or default, reactor=reactor, curve_keys=arguments.curve_keys
        )
    except MissingKeys as e:
        return EXIT_USAGE, {"error": str(e)}
    try:
        if arguments.verb == "send":
            queueing = {"queue": arguments.queue, "ttl": arguments.ttl, "coalesce": arguments.coalesce}
            if arguments.nowait:
                reply = await demand.request_nowait(arguments.imei, arguments.instruct, arguments.data, **queueing)
            else:
                reply = await demand.request(arguments.imei, arguments.instruct, arguments.data, **queueing)
            if reply.result == QUEUED:
                return 0, {"result": QUEUED, "id": reply.id}
            output = {"result": reply.result}
            if reply.result == OK and not arguments.nowait:
                output["reply"] = reply.data
            return EXIT[reply.result], output
        if arguments.verb == "find":
            result = await demand.find(arguments.imei)
            return EXIT[result], {"imei": arguments.imei, "online": result == OK}
        if arguments.verb == "list":
            found = await demand.getpage(arguments.num, arguments.page)
            return 0, {"total": found.total, "num": arguments.num, "page": arguments.page, "devices": found.devices}
        return 0, {"total": await demand.gettotal()}
    except BrokerUnavailable as e:
        return EXIT_UNAVAILABLE, {"error": f"broker unavailable: {e}"}
    except Busy as e:
        return EXIT_BUSY, {"error": f"busy: {e}"}
    finally:
        demand.close()


def follow(reactor, arguments: argparse.Namespace) -> Deferred:
    """Print every event as one JSON line; runs until the process is interrupted."""

    def show(event: dict[str, Any]) -> None:
        sys.stdout.write(dumps(event).decode() + "\n")
        sys.stdout.flush()

    try:
        Events(arguments.events, arguments.imei, callback=show, reactor=reactor, curve_keys=arguments.curve_keys)
    except MissingKeys as e:
        sys.stderr.write(f"devicehub: {e}\n")
        raise SystemExit(EXIT_USAGE)
    return Deferred()  # never fires: Ctrl-C or SIGTERM stops the reactor


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of the C{devicehub} console script."""
    arguments = parser().parse_args(argv)
    if arguments.verb == "keygen":
        made = keygen(arguments.directory, arguments.client)
        sys.stdout.write(dumps({"made": [str(path) for path in made]}).decode() + "\n")
        raise SystemExit(0)
    if arguments.verb == "events":
        task.react(lambda reactor: follow(reactor, arguments))

    async def react(reactor) -> None:
        code, output = await run(reactor, arguments)
        sys.stdout.write(dumps(output).decode() + "\n")
        sys.stdout.flush()
        raise SystemExit(code)

    task.react(lambda reactor: Deferred.fromCoroutine(react(reactor)))


if __name__ == "__main__":
    main()
