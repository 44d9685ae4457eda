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
"""

import argparse
import select
import socket

import msgspec
import zmq

LOGIN = b'{"type":"login","imei":"'
LOGGED_IN = b'{"type":"login","status":200}\n'
ACK = b'{"type":"ack","ident":'


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

    def reply(caller: bytes, message: bytes) -> None:
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
                reply(caller, b"DH3 reply " + rid + b'\n{"result":"no","data":null}')
                continue
            ident += 1
            waiting[ident] = (caller, rid)
            device.send(b'{"type":"command","ident":%d,"instruct":"%s"}\n' % (ident, body["instruct"].encode()))

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
                        rest = line[len(ACK):]
                        end = rest.find(b",")
                        caller, rid = waiting.pop(int(rest[:end] if end >= 0 else rest[:-1]))
                        reply(caller, b"DH3 reply " + rid + b'\n{"result":"ok","data":null}')
                    elif line.startswith(LOGIN):
                        devices[line[len(LOGIN):line.index(b'"', len(LOGIN))].decode()] = connection
                        connection.send(LOGGED_IN)
        fromCallers()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--devices", type=int, required=True, help="the devices' TCP port (127.0.0.1)")
    parser.add_argument("--frontend", required=True, help="the callers' ZeroMQ address to bind")
    main(parser.parse_args())
