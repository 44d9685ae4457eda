"""
A fleet of simulated devices for the peer brokers, in one process:
`python bench/peer_fleet.py --protocol mqtt|nats --port 1883 --count 1000 --source 127.0.0.2 --prefix m-`.

The same shape as bench/fleet.py, over MQTT 3.1.1 (to Mosquitto) or NATS (to nats-server)
instead of devicehub's JSON Lines: COUNT TCP connections from SOURCE, each device
PREFIX000000… subscribed to its own subject, answering every command at once with one
send() of its own (TCP_NODELAY: one ack per TCP segment). The client protocols are written
by hand, only what the bench uses:

  mqtt  CONNECT (clean session, no keepalive) and SUBSCRIBE devices/IMEI/cmd (QoS 0); each
        PUBLISH received (payload: the command's ident) is answered by a PUBLISH QoS 0 of
        the same payload to devices/IMEI/ack.
  nats  CONNECT {"verbose":false,"pedantic":false}, SUB devices.IMEI, then PING: ready at
        its PONG; each MSG is answered by a PUB of its payload to the MSG's reply subject;
        the server's PINGs are answered.

Prints one JSON line when all are connected and subscribed ({"ready": COUNT,
"connect_per_s": …}), then runs until SIGTERM.
"""

import argparse
import json
import sys

from twisted.internet import defer, task
from twisted.internet.protocol import Protocol

from devicehub.tap import tune_garbage_collector  # bench/run.py puts the repository on PYTHONPATH
from fleet import SimulatedDevice, connectInBatches  # bench/fleet.py


class PeerDevice(Protocol):
    """One device: C{ready} fires once it is subscribed."""

    writeNow = SimulatedDevice.writeNow  # one send() per ack, as bench/fleet.py --each-write

    def __init__(self, imei: str) -> None:
        self.imei = imei
        self.ready: defer.Deferred = defer.Deferred()
        self.buffer = b""

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.transport.write(self.greeting())

    def subscribed(self) -> None:
        if not self.ready.called:
            self.ready.callback(True)

    def connectionLost(self, reason) -> None:
        if not self.ready.called:
            self.ready.errback(reason)


def mqtt_string(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


def mqtt_length(length: int) -> bytes:
    """MQTT's Remaining Length: 7 bits a byte, the high bit set while more follow."""
    out = bytearray()
    while True:
        length, digit = length >> 7, length & 0x7F
        out.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(out)


class MqttDevice(PeerDevice):
    def greeting(self) -> bytes:
        imei = self.imei.encode()
        # CONNECT: protocol "MQTT" level 4 (3.1.1), flags 0x02 (clean session), keepalive 0
        connect = mqtt_string(b"MQTT") + b"\x04\x02\x00\x00" + mqtt_string(imei)
        subscribe = b"\x00\x01" + mqtt_string(b"devices/%s/cmd" % imei) + b"\x00"  # packet id 1, QoS 0
        self.ackTopic = mqtt_string(b"devices/%s/ack" % imei)
        return (b"\x10" + mqtt_length(len(connect)) + connect
                + b"\x82" + mqtt_length(len(subscribe)) + subscribe)

    def dataReceived(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        while len(buffer) >= 2:
            length, shift, at = 0, 0, 1
            while True:  # the Remaining Length
                if at >= len(buffer):
                    self.buffer = buffer
                    return
                byte = buffer[at]
                length |= (byte & 0x7F) << shift
                at += 1
                if not byte & 0x80:
                    break
                shift += 7
            end = at + length
            if end > len(buffer):
                break
            kind = buffer[0] >> 4
            if kind == 3:  # PUBLISH, QoS 0: topic, then the payload (no packet id)
                topic = int.from_bytes(buffer[at:at + 2], "big")
                ident = buffer[at + 2 + topic:end]
                body = self.ackTopic + ident
                self.writeNow(b"\x30" + mqtt_length(len(body)) + body)
            elif kind == 9:  # SUBACK
                if buffer[end - 1] == 0x80:
                    self.ready.errback(RuntimeError(f"{self.imei}: subscription refused"))
                else:
                    self.subscribed()
            elif kind == 2 and buffer[at + 1] != 0:  # CONNACK with an error code
                self.ready.errback(RuntimeError(f"{self.imei}: connection refused ({buffer[at + 1]})"))
            buffer = buffer[end:]
        self.buffer = buffer


class NatsDevice(PeerDevice):
    def greeting(self) -> bytes:
        return (b'CONNECT {"verbose":false,"pedantic":false}\r\n'
                b"SUB devices.%s 1\r\nPING\r\n" % self.imei.encode())

    def dataReceived(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        while True:
            eol = buffer.find(b"\r\n")
            if eol < 0:
                break
            if buffer.startswith(b"MSG "):
                # MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n
                words = buffer[4:eol].split(b" ")
                size = int(words[-1])
                end = eol + 2 + size
                if len(buffer) < end + 2:
                    break
                if len(words) == 4:
                    payload = buffer[eol + 2:end]
                    self.writeNow(b"PUB %s %d\r\n%s\r\n" % (words[2], size, payload))
                buffer = buffer[end + 2:]
                continue
            line, buffer = buffer[:eol], buffer[eol + 2:]
            if line == b"PING":
                self.writeNow(b"PONG\r\n")
            elif line == b"PONG":
                self.subscribed()
            elif line.startswith(b"-ERR"):
                if not self.ready.called:
                    self.ready.errback(RuntimeError(f"{self.imei}: {line.decode()}"))
            # INFO and +OK: nothing to do
        self.buffer = buffer


async def main(reactor, options) -> None:
    tune_garbage_collector()
    kind = {"mqtt": MqttDevice, "nats": NatsDevice}[options.protocol]
    started = reactor.seconds()
    devices = [kind(f"{options.prefix}{i:06}") for i in range(options.count)]
    await connectInBatches(reactor, devices, options, lambda device: device.ready)
    elapsed = reactor.seconds() - started
    print(json.dumps({"ready": len(devices), "connect_per_s": round(len(devices) / elapsed)}), flush=True)
    await defer.Deferred()  # until SIGTERM


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--protocol", choices=["mqtt", "nats"], required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--source", default="127.0.0.1", help="source address of the connections")
    parser.add_argument("--prefix", default="peer")
    parser.add_argument("--batch", type=int, default=500, help="connections opened at once")
    sys.exit(task.react(lambda reactor: defer.ensureDeferred(main(reactor, parser.parse_args()))))
