"""
One hot path of devicehub, N times, in one process and without I/O: `python bench/micro.py
CASE N` (prints the µs per round). Run it under callgrind to count instructions, which,
unlike seconds, do not move with what else the machine does:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/micro.py demand 2000
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/micro.py demand 22000

and take the difference of the two totals over 20 000 (what starting Python costs cancels out).

  decode-send   frames.decode of a Demand's send, as the broker reads it
  decode-reply  frames.decode of the broker's reply to a command, as a Demand reads it
  demand        a Demand's send and its answer: the call, its message, its deadline, the
                reply read back through its link and its Deferred fired (ZeroMQ's send
                stubbed out; the reactor never runs)
  demand-window the same with 200 calls in flight, the replies read in batches of 20 (the
                issue's shape: the calls' timer stays set, the calls made while a batch is
                handled leave after it)
  device        a node's command to a JSON Lines device and its ack: Node.execute, the
                session's pending command and its deadline, the codec's line written, the
                ack line read back through the session's intake and the reply fired
                (a StringTransport in place of the socket; the reactor never runs; another
                device's command waits meanwhile, so the node's timer stays set)
  broker        the broker's part of a command to a node of its own process (the fused
                path), 200 in flight, the requests read in batches of 20: the request
                decoded, routed with its id, slot and deadline, executed as a call on the
                next turn (the node stubbed: its reply ready at once), answered on the turn
                after and the reply encoded (the sockets stubbed; a task.Clock's turns)
  dispatch-epoll, dispatch-lean
                200 loopback TCP connections (devicehub's LeanServer) each read one byte
                a round, dispatched by Twisted's epoll reactor or by devicehub's
                (devicehub.common.reactor); a round is one event
"""

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.epollreactor import EPollReactor  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402

from devicehub import Demand  # noqa: E402
from devicehub.common.listening import LeanServer  # noqa: E402
from devicehub.common.reactor import LeanEPollReactor  # noqa: E402
from devicehub.common.results import OK  # noqa: E402
from devicehub.wire import frames  # noqa: E402

SEND = frames.encode(b"send", b"c1:123456", {"imei": "861234567890123", "instruct": "0x10", "data": 1,
                                              "timeout": 30, "wait": True})
REPLY = frames.encode(b"reply", b"c1:123456", {"result": "ok", "data": {"ack": 1}})


def decode(raw: list[bytes], rounds: int) -> None:
    for _ in range(rounds):
        frames.decode(raw)


IMEIS = [f"g-{i:06}" for i in range(1000)]


def stubbedDemand():
    """A Demand whose ZeroMQ sends are kept in a list instead; its link, to answer through."""
    demand = Demand("tcp://127.0.0.1:1", timeout=30, reactor=reactor, clock=task.Clock())
    link = demand._calls.brokers.links[0]
    sent: list[list[bytes]] = []
    link._socket.sendFrames = sent.append
    return demand, link, sent


def demand(rounds: int) -> None:
    demand, link, sent = stubbedDemand()
    acked = []
    for i in range(rounds):
        demand.send(IMEIS[i % 1000], "0x10", i).addCallback(acked.append)
        rid = sent.pop()[0].partition(b"\n")[0].split(b" ")[2]  # inline, not a helper: the rounds count it
        link.received([b"DH3 reply " + rid + b'\n{"result":"ok","data":null}'])
        link._sendHeld()  # what the end of a batch of ZeroMQ messages does
    assert acked == [OK] * rounds
    demand.close()


def demandWindow(rounds: int, window: int = 200, batch: int = 20) -> None:
    demand, link, sent = stubbedDemand()
    issued = acked = 0

    def call() -> None:
        nonlocal issued
        demand.send(IMEIS[issued % 1000], "0x10", issued).addCallback(answered)
        issued += 1

    def answered(result: str) -> None:
        nonlocal acked
        acked += result == OK
        if issued < rounds:
            call()

    for _ in range(window):
        call()
    while sent:
        replies, sent[:] = sent[:batch], sent[batch:]
        for raw in replies:
            rid = raw[0].partition(b"\n")[0].split(b" ")[2]
            link.received([b"DH3 reply " + rid + b'\n{"result":"ok","data":null}'])
        link._sendHeld()  # what the end of a batch of ZeroMQ messages does
    assert acked == rounds
    demand.close()


def device(rounds: int) -> None:
    from twisted.internet.testing import StringTransport

    from devicehub.common.metrics import Metrics
    from devicehub.devices.session import DeviceFactory, DeviceSettings
    from devicehub.node.node import Node

    clock = task.Clock()
    node = Node("micro", commandTimeout=30.0, clock=clock, metrics=Metrics())
    factory = DeviceFactory(node, clock, DeviceSettings())
    connected = []
    for imei in ("861234567890123", "861234567890124"):
        session, transport = factory.buildProtocol(None), StringTransport()
        session.makeConnection(transport)
        session.dataReceived(b'{"type":"login","imei":"%s"}\n' % imei.encode())
        transport.clear()
        connected.append((session, transport))
    session, transport = connected[0]
    # Another device's command, never acked: the node's timer stays set, as with a window.
    node.execute("861234567890124", "0x10", None, 30.0, True)
    replies = []
    for i in range(rounds):
        node.execute("861234567890123", "0x10", i, 30.0, True).addCallback(replies.append)
        ident = transport.value().partition(b'"ident":')[2].partition(b",")[0]
        transport.clear()
        session.dataReceived(b'{"type":"ack","ident":' + ident + b"}\n")
    assert len(replies) == rounds and all(reply.result == OK for reply in replies)


def broker(rounds: int, window: int = 200, batch: int = 20) -> None:
    from twisted.internet.defer import succeed

    from devicehub.broker.broker import Broker
    from devicehub.broker.settings import BrokerSettings
    from devicehub.common.metrics import Metrics
    from devicehub.common.results import Reply

    clock = task.Clock()
    answered: list[list[bytes]] = []
    hub = Broker(clock, lambda peer, message: answered.append(message.frames()) or True,
                 lambda peer, message: bool(message.frames()), BrokerSettings(warmup=0), Metrics())
    ok = Reply(OK)
    hub.routes.local[b"N1"] = lambda body: succeed(ok)
    imeis = [f"86123456789{i:04}" for i in range(1000)]
    hub.fromNode([b"N1", *frames.encode(b"hello", b"", {"node": "node-1", "instance": "N1",
                                                          "devices": [[imei, i, 0.0] for i, imei in enumerate(imeis)]})])
    while len(hub.directory) < len(imeis):  # the snapshot is loaded in parts, a part a turn
        clock.advance(0)
    bodies = [frames.encode(b"send", b"", {"imei": imei, "instruct": "0x10", "data": 1, "timeout": 30.0,
                                           "wait": True})[0].partition(b"\n")[2] for imei in imeis]
    issued, replies, waiting = 0, 0, []
    while replies < rounds:
        while issued < rounds and issued - replies < window:
            waiting.append(b"DH3 send %x\n%s" % (issued, bodies[issued % 1000]))
            issued += 1
        for request in waiting[:batch]:
            hub.fromClient([b"C", request])
        del waiting[:batch]
        clock.advance(0)  # executed
        clock.advance(0)  # answered
        replies += len(answered)
        assert all(b'"result":"ok"' in reply[0] for reply in answered)
        answered.clear()


class _Counted(Protocol):
    received = 0

    def dataReceived(self, data: bytes) -> None:
        _Counted.received += len(data)


def dispatch(poller: type[EPollReactor], rounds: int, connections: int = 200) -> None:
    own = poller()  # not installed: the global reactor stays untouched
    port = own.listenTCP(0, Factory.forProtocol(_Counted), backlog=1024, interface="127.0.0.1")
    port.transport = LeanServer
    clients = [socket.create_connection(("127.0.0.1", port.getHost().port)) for _ in range(connections)]
    while len(own.getReaders()) < connections + 2:  # the listener, the waker and each connection
        own.doIteration(0.1)
    for done in range(0, rounds, connections):
        for client in clients[:rounds - done]:
            client.send(b"x")
        while _Counted.received < min(rounds, done + connections):
            own.doIteration(0.1)
    assert _Counted.received == rounds
    for client in clients:
        client.close()
    port.stopListening()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("case", choices=["decode-send", "decode-reply", "demand", "demand-window", "device", "broker",
                                           "dispatch-epoll", "dispatch-lean"])
    parser.add_argument("rounds", type=int)
    options = parser.parse_args()
    started = time.perf_counter()
    if options.case == "demand":
        demand(options.rounds)
    elif options.case == "demand-window":
        demandWindow(options.rounds)
    elif options.case == "device":
        device(options.rounds)
    elif options.case == "broker":
        broker(options.rounds)
    elif options.case.startswith("dispatch-"):
        dispatch(EPollReactor if options.case == "dispatch-epoll" else LeanEPollReactor, options.rounds)
    else:
        decode(SEND if options.case == "decode-send" else REPLY, options.rounds)
    print(f"{(time.perf_counter() - started) / options.rounds * 1e6:.2f} us per round")
