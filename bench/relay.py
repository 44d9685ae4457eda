"""
The least CPU a Python hub can spend per command in scenario g's shape: `python bench/relay.py
--devices PORT --frontend tcp://127.0.0.1:PORT` (a process of its own; `bench/profile.py
--relay` drives it as it drives the hub).

A relay with none of devicehub: one epoll loop (no Twisted), a ZeroMQ ROUTER for the
callers and a TCP listener for the devices. A device's login line is answered at once; a
caller's `send` (frames version 3) becomes one JSON line and one `send()` to the device; the
device's ack line becomes a `reply` to the caller. It checks nothing, keeps no deadline,
logs nothing and knows one device per connection: what is left is what any hub in Python
pays for the same work, the system calls (a `recv` and a `send` per device per command),
ZeroMQ (its calls and its I/O thread) and the least parsing (msgspec for the caller's JSON,
the ack's ident read by hand), each done in the fewest calls this author found. Scenario g's
fleet and `Demand` drive it unchanged; docs/performance.md compares it with the hub.

With `--twisted` the same relay runs on what devicehub is built on instead of a bare epoll
loop: devicehub's reactor (`LeanEPollReactor`), its txZMQ socket (`ZmqSocket`) for the
callers and a Twisted `Protocol` per device from an endpoint string (a command written with
one `send()` when nothing waits, as devicehub's own devices are). With `--twisted
--deferred` each command also gets what the project's idioms give every wait: a `Deferred`
that fires with the ack and a deadline (`common.deadlines.Deadlines`, one reactor timer for
all), at one role. So the three relays measure the floor of a Python hub, of one on Twisted
and txZMQ, and of one that also keeps a `Deferred` and a deadline per command.
"""

import argparse
import select
import socket

import msgspec
import zmq

LOGIN = b'{"type":"login","imei":"'
LOGGED_IN = b'{"type":"login","status":200}\n'
ACK = b'{"type":"ack","ident":'


def commandLine(ident: int, body: dict) -> bytes:
    """The JSON line of command C{ident} for a caller's C{send} body (its instruct only)."""
    return b'{"type":"command","ident":%d,"instruct":"%s"}\n' % (ident, body["instruct"].encode())


def ackIdent(line: bytes) -> int:
    """The ident of an ack line (C{ACK} followed by the number, then C{,} or C{}})."""
    rest = line[len(ACK):]
    end = rest.find(b",")
    return int(rest[:end] if end >= 0 else rest[:-1])


def loginImei(line: bytes) -> str:
    """The imei of a login line (C{LOGIN} followed by the imei and its closing quote)."""
    return line[len(LOGIN):line.index(b'"', len(LOGIN))].decode()


def reply(rid: bytes, result: bytes) -> bytes:
    """A C{reply} frame (frames version 3) of C{result} for request C{rid}."""
    return b"DH3 reply " + rid + b'\n{"result":"' + result + b'","data":null}'


def main(options) -> None:
    decode = msgspec.json.Decoder().decode
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.bind(options.frontend)
    listener = socket.create_server(("127.0.0.1", options.devices), backlog=1024)
    listener.setblocking(False)
    poller = select.epoll()
    zmqFd = router.getsockopt(zmq.FD)
    poller.register(zmqFd, select.EPOLLIN | select.EPOLLET)
    poller.register(listener.fileno(), select.EPOLLIN)
    devices: dict[str, socket.socket] = {}  # imei -> connection
    sockets: dict[int, socket.socket] = {}  # fd -> connection
    buffers: dict[int, bytes] = {}
    waiting: dict[int, tuple[bytes, bytes]] = {}  # ident -> (caller's identity, request id)
    ident = 0

    def send(caller: bytes, message: bytes) -> None:
        router.send(caller, zmq.SNDMORE)
        router.send(message)

    def fromCallers() -> None:
        """Every message ZeroMQ holds (its FD is edge-triggered, and a send may take the edge)."""
        nonlocal ident
        if not router.getsockopt(zmq.EVENTS) & zmq.POLLIN:  # cheaper than a recv raising Again
            return
        while True:
            try:
                caller = router.recv(zmq.NOBLOCK)
            except zmq.Again:  # also re-arms the FD
                return
            frame = router.recv()  # the rest of a message is there with its first part
            header, _, payload = frame.partition(b"\n")
            _, kind, rid = header.split(b" ", 2)
            body = decode(payload)
            device = devices.get(body.get("imei")) if kind == b"send" else None
            if device is None:
                send(caller, reply(rid, b"no"))
                continue
            ident += 1
            waiting[ident] = (caller, rid)
            device.send(commandLine(ident, body))

    print("Listening for devices", flush=True)
    while True:
        for fd, _ in poller.poll():
            if fd == listener.fileno():
                try:
                    while True:
                        connection, _ = listener.accept()
                        connection.setblocking(False)
                        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        sockets[connection.fileno()] = connection
                        buffers[connection.fileno()] = b""
                        poller.register(connection.fileno(), select.EPOLLIN)
                except BlockingIOError:
                    pass
            elif fd != zmqFd:
                connection = sockets[fd]
                data = connection.recv(65536)
                if not data:
                    poller.unregister(fd)
                    del sockets[fd], buffers[fd]
                    connection.close()
                    continue
                *lines, buffers[fd] = (buffers[fd] + data).split(b"\n")
                for line in lines:
                    if line.startswith(ACK):
                        caller, rid = waiting.pop(ackIdent(line))
                        send(caller, reply(rid, b"ok"))
                    elif line.startswith(LOGIN):
                        devices[loginImei(line)] = connection
                        connection.send(LOGGED_IN)
        fromCallers()


def twistedMain(options) -> None:
    """The same relay on devicehub's reactor, its txZMQ socket and a Twisted protocol per device."""
    from devicehub.common import reactor as reactors

    reactors.install()
    from twisted.internet import defer, endpoints, protocol, reactor

    from devicehub.common.deadlines import Deadlines
    from devicehub.wire.zmqsocket import ZmqSocket

    decode = msgspec.json.Decoder().decode
    devices: dict[str, Device] = {}
    waiting: dict[int, tuple[bytes, bytes] | tuple[defer.Deferred, object]] = {}
    deadlines = Deadlines(reactor)
    ident = 0

    def fromCaller(frames: list[bytes]) -> None:
        nonlocal ident
        caller, frame = frames
        header, _, payload = frame.partition(b"\n")
        _, kind, rid = header.split(b" ", 2)
        body = decode(payload)
        device = devices.get(body.get("imei")) if kind == b"send" else None
        if device is None:
            router.sendFrames([caller, reply(rid, b"no")])
            return
        ident += 1
        if options.deferred:
            answer: defer.Deferred = defer.Deferred()
            answer.addCallback(lambda result: router.sendFrames([caller, reply(rid, result)]))
            waiting[ident] = answer, deadlines.callLater(body["timeout"], expire, ident)
        else:
            waiting[ident] = caller, rid
        device.write(commandLine(ident, body))

    def expire(ident: int) -> None:
        waiting.pop(ident)[0].callback(b"timeout")

    class Device(protocol.Protocol):
        buffer = b""

        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)

        def write(self, line: bytes) -> None:
            # One send() when nothing waits to be written, as devicehub's devices/outgoing.py.
            transport = self.transport
            if not transport.dataBuffer and not transport._tempDataBuffer:
                try:
                    sent = transport.socket.send(line)
                except BlockingIOError:
                    sent = 0
                line = line[sent:]
            if line:
                transport.write(line)

        def dataReceived(self, data: bytes) -> None:
            *lines, self.buffer = (self.buffer + data).split(b"\n")
            for line in lines:
                if line.startswith(ACK):
                    one = waiting.pop(ackIdent(line), None)
                    if one is None:  # after its deadline
                        continue
                    if options.deferred:
                        answer, timer = one
                        timer.cancel()
                        answer.callback(b"ok")
                    else:
                        router.sendFrames([one[0], reply(one[1], b"ok")])
                elif line.startswith(LOGIN):
                    devices[loginImei(line)] = self
                    self.write(LOGGED_IN)

    router = ZmqSocket(reactor, zmq.ROUTER, fromCaller, bind=[options.frontend])
    listening = endpoints.serverFromString(reactor, f"tcp:{options.devices}:interface=127.0.0.1:backlog=1024")
    listening.listen(protocol.Factory.forProtocol(Device)).addCallback(
        lambda _: print("Listening for devices", flush=True))
    reactor.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--devices", type=int, required=True, help="the devices' TCP port (127.0.0.1)")
    parser.add_argument("--frontend", required=True, help="the callers' ZeroMQ address to bind")
    parser.add_argument("--twisted", action="store_true",
                        help="on devicehub's reactor, its txZMQ socket and Twisted protocols instead of a bare epoll loop")
    parser.add_argument("--deferred", action="store_true",
                        help="(with --twisted) a Deferred and a deadline per command")
    options = parser.parse_args()
    (twistedMain if options.twisted else main)(options)
