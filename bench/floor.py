"""
The transports' floor under one command at a time: `python bench/floor.py [--count 5000]` (prints JSON).

Round trips of one 60-byte message between two Python processes on this machine, over a
plain TCP connection (TCP_NODELAY) and over ZeroMQ (a DEALER to a ROUTER, over TCP), with
blocking calls and nothing else done: what a hop costs before any code of devicehub, its
peers or Twisted runs. One command at a time crosses one ZeroMQ round trip (caller and
broker) and one TCP round trip (node and device) in devicehub; two TCP round trips in
Mosquitto and NATS (caller and server, server and device). Scenario g reports these
beside its own figures (bench/peers.py).
"""

import argparse
import json
import socket
import subprocess
import sys
import time

import zmq

MESSAGE = b"x" * 60


def echo(kind: str, port: int) -> None:
    """Answer every message with itself, until the peer goes away (the other process)."""
    if kind == "zmq":
        router = zmq.Context.instance().socket(zmq.ROUTER)
        router.bind(f"tcp://127.0.0.1:{port}")
        print("ready", flush=True)
        while True:
            router.send_multipart(router.recv_multipart())
    listener = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)
    connection, _ = listener.accept()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := connection.recv(4096):
        connection.sendall(data)


def roundTrips(kind: str, count: int) -> dict:
    """The p50 and p99 round trip in ms, against an echoing process of its own."""
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    peer = subprocess.Popen([sys.executable, __file__, "--echo", kind, "--port", str(port)], stdout=subprocess.PIPE)
    try:
        assert peer.stdout.readline().strip() == b"ready"
        if kind == "zmq":
            dealer = zmq.Context.instance().socket(zmq.DEALER)
            dealer.connect(f"tcp://127.0.0.1:{port}")
            send, receive = dealer.send, dealer.recv
        else:
            client = socket.create_connection(("127.0.0.1", port))
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            send, receive = client.sendall, lambda: client.recv(4096)
        samples = []
        for i in range(count + count // 10):  # the first tenth warms up
            started = time.perf_counter()
            send(MESSAGE)
            receive()
            if i >= count // 10:
                samples.append(time.perf_counter() - started)
        samples.sort()
        return {"round_trips": count, "p50_ms": round(samples[len(samples) // 2] * 1e3, 3),
                "p99_ms": round(samples[int(len(samples) * 0.99)] * 1e3, 3)}
    finally:
        peer.kill()
        peer.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--echo", choices=["tcp", "zmq"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.echo:
        echo(options.echo, options.port)
        return
    tcp, zeromq = roundTrips("tcp", options.count), roundTrips("zmq", options.count)
    print(json.dumps({
        "tcp": tcp, "zmq": zeromq,
        # one command at a time, with no processing: devicehub's path over its peers'
        "devicehub_floor_ms": round(zeromq["p50_ms"] + tcp["p50_ms"], 3),
        "peers_floor_ms": round(2 * tcp["p50_ms"], 3),
        "floor_ratio": round((zeromq["p50_ms"] + tcp["p50_ms"]) / (2 * tcp["p50_ms"]), 3),
    }))


if __name__ == "__main__":
    main()
