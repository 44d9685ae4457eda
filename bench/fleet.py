"""
A fleet of simulated devices in one process:
`python bench/fleet.py --port 7700 --count 5000 --source 127.0.0.2 --prefix f1-`.

Opens COUNT real TCP connections to a node from SOURCE (so that several fleets on
several 127.0.0.x addresses get past one address's ~28 000 ports), logs each in as
PREFIX000000…, acks every command (with --reply data, after --delay seconds, or never
with --silent; with --each-write each ack is one send() of its own, one TCP segment), and
pings every --ping seconds. Prints one JSON line when all are logged in ({"ready": COUNT,
"login_per_s": …}), then runs until SIGTERM.
"""

import argparse
import json
import sys

from twisted.internet import defer, task
from twisted.internet.protocol import ClientFactory
from twisted.protocols.basic import LineOnlyReceiver

from devicehub.tap import tune_garbage_collector  # bench/run.py puts the repository on PYTHONPATH


COMMAND = b'{"type":"command","ident":'


class SimulatedDevice(LineOnlyReceiver):
    delimiter = b"\n"

    def __init__(self, imei: str, options) -> None:
        self.imei = imei
        self.options = options
        self.loggedIn: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.sendLine(b'{"type":"login","imei":"%s"}' % self.imei.encode())

    def lineReceived(self, line: bytes) -> None:
        if line.startswith(b'{"type":"command"'):
            if self.options.silent:
                return
            # The hub writes "ident" right after "type": reading it needs no JSON parser
            # (the fleet shares the CPUs it measures).
            if line.startswith(COMMAND):
                ident = int(line[len(COMMAND):line.index(b",", len(COMMAND))])
            else:
                ident = json.loads(line)["ident"]
            ack = b'{"type":"ack","ident":%d%s}' % (ident, self.options.replyJson)
            if self.options.delay:
                self.clock.callLater(self.options.delay, self.sendLine, ack)
            elif self.options.each_write:
                self.writeNow(ack + b"\n")
            else:
                self.sendLine(ack)
        elif line.startswith(b'{"type":"login"') and not self.loggedIn.called:
            self.loggedIn.callback(b'"status":200' in line)

    def writeNow(self, data: bytes) -> None:
        """
        One send() (one TCP segment, with TCP_NODELAY) for this ack alone, as a device's
        firmware answers: Twisted's write would wait for the next reactor turn and join
        the acks written in the meantime.
        """
        transport = self.transport
        if transport.dataBuffer or transport._tempDataBuffer:  # keep order behind what waits
            transport.write(data)
            return
        try:
            sent = transport.socket.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            transport.write(data[sent:])

    def ping(self) -> None:
        self.sendLine(b'{"type":"ping"}')

    def connectionLost(self, reason) -> None:
        if not self.loggedIn.called:
            self.loggedIn.errback(reason)


class OneDevice(ClientFactory):
    """Connects one simulated device (lighter than an endpoint: the fleet shares the CPUs it measures)."""

    def __init__(self, device, ready: defer.Deferred) -> None:
        self.device = device
        self.ready = ready

    def buildProtocol(self, addr):
        return self.device

    def clientConnectionFailed(self, connector, reason) -> None:
        self.ready.errback(reason)


async def connectInBatches(reactor, devices: list, options, ready) -> list:
    """
    Connect C{devices} to C{options.host}:C{options.port} from C{options.source},
    C{options.batch} at a time, each batch once every C{ready(device)} Deferred of the one
    before fired; what they fired with, in order.
    """
    results = []
    for start in range(0, len(devices), options.batch):
        batch = devices[start:start + options.batch]
        for device in batch:
            reactor.connectTCP(options.host, options.port, OneDevice(device, ready(device)), timeout=30,
                               bindAddress=(options.source, 0))
        results += await defer.gatherResults([ready(device) for device in batch], consumeErrors=True)
    return results


async def main(reactor, options) -> None:
    tune_garbage_collector()  # as twistd devicehub does: the fleet shares the CPUs it measures
    options.replyJson = b"" if options.reply is None else b',"data":' + options.reply.encode()
    started = reactor.seconds()
    devices = [SimulatedDevice(f"{options.prefix}{i:06}", options) for i in range(options.count)]
    for device in devices:
        device.clock = reactor
    if not all(await connectInBatches(reactor, devices, options, lambda device: device.loggedIn)):
        raise SystemExit("a login was refused")
    elapsed = reactor.seconds() - started
    print(json.dumps({"ready": len(devices), "login_per_s": round(len(devices) / elapsed)}), flush=True)
    if options.ping:
        task.LoopingCall(lambda: [device.ping() for device in devices]).start(options.ping, now=False)
    await defer.Deferred()  # until SIGTERM


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--source", default="127.0.0.1", help="source address of the connections")
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--batch", type=int, default=500, help="connections opened at once")
    parser.add_argument("--reply", help="JSON put as data in every ack")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each ack")
    parser.add_argument("--silent", action="store_true", help="never ack")
    parser.add_argument("--each-write", action="store_true",
                        help="write every ack with a send() of its own at once (one ack per TCP segment)")
    parser.add_argument("--ping", type=float, default=0.0, help="seconds between pings (0: none)")
    sys.exit(task.react(lambda reactor: defer.ensureDeferred(main(reactor, parser.parse_args()))))
