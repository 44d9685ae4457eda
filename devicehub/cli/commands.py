"""
The subcommands of C{devicehub} once their command line is parsed: send, find, list
and total (L{run}), events (L{follow}), simulate (L{runSimulation}) and keygen (L{makeKeys}).
"""

import argparse
import sys
from typing import Any

import zmq
from twisted.internet.defer import Deferred

from devicehub.cli.arguments import COMMAND_TIMEOUT, QUERY_TIMEOUT, UsageError
from devicehub.cli.bulk import sendMany
from devicehub.client.demand import Demand
from devicehub.client.events import Events
from devicehub.common.errors import BrokerUnavailable, Busy, RequestRejected
from devicehub.common.jsoncodec import dumps
from devicehub.common.results import NO, OK, QUEUED, TIMEOUT
from devicehub.devices.simulate.fleet import simulate
from devicehub.wire.curve import keygen
from devicehub.wire.handshake import HandshakeWatch

EXIT = {OK: 0, NO: 1, TIMEOUT: 2}
EXIT_UNAVAILABLE = 3
EXIT_BUSY = 4


def _configuration(arguments: argparse.Namespace, address: str, error: Exception) -> UsageError:
    return UsageError(f"{arguments.sources[address] or '--' + address}: {error}")


async def run(reactor, arguments: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Execute a parsed send, find, list or total; return its exit code and output, or raise L{UsageError}."""
    default = COMMAND_TIMEOUT if arguments.verb == "send" else QUERY_TIMEOUT
    try:
        demand = Demand(
            arguments.frontend, timeout=arguments.timeout or default, reactor=reactor, curve_keys=arguments.curve_keys
        )
    except (zmq.ZMQError, ValueError, OSError) as e:
        raise _configuration(arguments, "frontend", e) from None
    try:
        if arguments.verb == "send" and arguments.many:
            return await sendMany(reactor, demand, arguments, arguments.timeout or default)
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
    except RequestRejected as e:
        raise UsageError(f"the broker refused the request: {e}") from None
    finally:
        demand.close()


def follow(reactor, arguments: argparse.Namespace) -> Deferred:
    """
    Print every event as one JSON line until the process is interrupted. Fails with
    L{UsageError} when the broker refuses the handshake (CURVE keys missing, or not
    its); says on stderr, and keeps waiting, when nothing answers for a few seconds.
    """

    def show(event: dict[str, Any]) -> None:
        sys.stdout.write(dumps(event).decode() + "\n")
        sys.stdout.flush()

    try:
        subscription = Events(
            arguments.events, arguments.imei, callback=show, reactor=reactor, curve_keys=arguments.curve_keys
        )
    except (zmq.ZMQError, ValueError, OSError) as e:
        raise _configuration(arguments, "events", e) from None
    ended: Deferred = Deferred()

    def refused(reason: str) -> None:
        subscription.close()
        ended.errback(UsageError(reason))

    def silent(reason: str) -> None:
        sys.stderr.write(f"devicehub: {reason}\n")
        sys.stderr.flush()

    watch = HandshakeWatch(
        reactor, arguments.events, curve=arguments.curve_keys is not None, refused=refused, silent=silent
    )
    watch.attach(reactor, subscription._socket.socket)  # Events has no monitor of its own
    return ended  # fires only when refused: Ctrl-C or SIGTERM stops the reactor


async def runSimulation(reactor, arguments: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """C{devicehub simulate}: exit 0 when every device connected, 1 otherwise; a summary for stdout."""
    stop: Deferred[None] = Deferred()
    if arguments.duration is not None:
        reactor.callLater(arguments.duration, lambda: stop.called or stop.callback(None))
    fleet = Deferred.fromCoroutine(simulate(
        reactor, arguments.protocol, arguments.count, arguments.to, arguments.interval, arguments.silent,
        arguments.prefix, stop,
    ))

    def interrupted() -> Deferred:  # Ctrl-C: close the devices, then print the summary
        if not stop.called:
            stop.callback(None)
        return fleet

    reactor.addSystemEventTrigger("before", "shutdown", interrupted)
    sys.stderr.write(f"devicehub: {arguments.count} simulated {arguments.protocol} devices to {arguments.to}\n")
    tally = await fleet
    summary = {"protocol": arguments.protocol, "connected": tally.connected, "failed": tally.failed,
               "commands": tally.commands, "errors": tally.errors}
    return (0 if tally.failed == 0 else 1), summary


def makeKeys(arguments: argparse.Namespace) -> dict[str, Any]:
    """C{devicehub keygen}: make the keys in C{arguments.directory}; what was made, for stdout."""
    try:
        made = keygen(arguments.directory, arguments.client)
    except OSError as e:
        raise UsageError(f"keygen {arguments.directory}: {e.strerror or e}: {e.filename or ''}".rstrip(": "))
    return {"made": [str(path) for path in made]}
