"""
The transports' own limits, for comparison: `python bench/echo.py zmq|lines PORT`.

`zmq`: a bare pyzmq ROUTER that sends every message back. `lines`: a bare Twisted
LineOnlyReceiver server that writes every line back. Each prints "ready PORT".
"""

import sys

import zmq
from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver


class Echo(LineOnlyReceiver):
    delimiter = b"\n"

    def lineReceived(self, line):
        self.sendLine(line)


def zmq_echo(port: int) -> None:
    router = zmq.Context.instance().socket(zmq.ROUTER)
    bound = router.bind_to_random_port("tcp://127.0.0.1") if port == 0 else router.bind(f"tcp://127.0.0.1:{port}")
    print(f"ready {bound or port}", flush=True)
    while True:
        router.send_multipart(router.recv_multipart())


def line_echo(port: int) -> None:
    listening = reactor.listenTCP(port, Factory.forProtocol(Echo), interface="127.0.0.1")
    print(f"ready {listening.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    (zmq_echo if sys.argv[1] == "zmq" else line_echo)(int(sys.argv[2]))
