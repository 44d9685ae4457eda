"""The session shared by every codec, with a small serial codec of the tests' own."""

from typing import Any, Hashable

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from devicehub.devices.codec import Answer, BadFrame, Heartbeat, Identify, UnsupportedCommand, Uplink
from devicehub.devices.session import DeviceFactory, DeviceSettings
from devicehub.node.node import Node
from devicehub.common.results import OK, REJECTED, TIMEOUT, Reply
from devicehub.common.metrics import Metrics


class LineCodec:
    """
    A toy serial protocol, one text line per frame: C{HI imei}, C{BEAT}, C{POS lat lon},
    C{ANS key text} (key C{?}: an answer without a usable key), C{READY}, C{BAD}. A command
    is C{CMD number instruct}; its lane is the instruct's first word.
    """

    name = "lines"
    serial = True

    def __init__(self, maxFrame: int) -> None:
        self.buffer = b""
        self.ready = False

    def feed(self, data: bytes) -> list:
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        return [self.decode(line.decode().split(" ")) for line in lines]

    def decode(self, words: list[str]):
        match words:
            case ["HI", imei]:
                return Identify(imei, reply=b"WELCOME\n")
            case ["BEAT"]:
                return Heartbeat(b"BEAT\n", {"battery": 50})
            case ["POS", lat, lon]:
                return Uplink("location", {"lat": float(lat), "lon": float(lon)}, b"GOT\n")
            case ["READY"]:
                self.ready = True
                return Uplink("ready")
            case ["LATE", key, *text]:  # an answer naming its command, taken alone if it names none waiting
                return Answer(int(key), " ".join(text), fallback=True, unmatched=Uplink("raw", {"text": " ".join(words)}))
            case ["ANS", key, *text]:
                own = Uplink("raw", {"text": " ".join(words)})
                return Answer(None if key == "?" else int(key), " ".join(text), fallback=key == "?", unmatched=own)
        return BadFrame("decode", "what?")

    def lane(self, instruct: str) -> Hashable:
        return instruct.split(" ")[0]

    def encodeCommand(self, instruct: str, data: Any, number: int):
        if data is not None:
            raise UnsupportedCommand("no data in this protocol")
        return f"CMD {number} {instruct}\n".encode(), number

    def refused(self, status: int, error: str) -> bytes:
        return b"NO\n"

    def error(self, error: str) -> bytes:
        return b""


class Recording(Node):
    def __init__(self, clock):
        super().__init__("n", commandTimeout=10.0, clock=clock, metrics=Metrics())
        self.uplinks = []

    def uplink(self, imei, message):
        self.uplinks.append(message)


def session(**settings):
    clock = Clock()
    node = Recording(clock)
    factory = DeviceFactory(node, clock, DeviceSettings(**settings), LineCodec)
    device = factory.buildProtocol(None)
    transport = StringTransport()
    device.makeConnection(transport)
    device.dataReceived(b"HI dev1\n")
    assert transport.value() == b"WELCOME\n"
    transport.clear()
    return device, transport, node, clock


def sent(transport) -> list[str]:
    lines = transport.value().decode().splitlines()
    transport.clear()
    return lines


def test_a_serial_protocol_has_one_command_per_lane_waiting_for_its_answer():
    device, transport, node, clock = session()
    device.dataReceived(b"READY\n")
    first = device.sendCommand("relay 1", None, 5)
    second = device.sendCommand("relay 0", None, 5)
    other = device.sendCommand("find", None, 5)
    assert sent(transport) == ["CMD 1 relay 1", "CMD 3 find"]  # relay 0 waits its turn
    device.dataReceived(b"ANS 1 done\n")
    assert first.result == Reply(OK, "done") and sent(transport) == ["CMD 2 relay 0"]
    device.dataReceived(b"ANS 3 here\nANS 2 off\n")
    assert (other.result, second.result) == (Reply(OK, "here"), Reply(OK, "off"))
    assert device.unanswered == 0 and len(clock.getDelayedCalls()) == 1  # the idle timeout


def test_a_waiting_commands_timeout_runs_from_when_it_was_sent():
    device, transport, node, clock = session()
    device.dataReceived(b"READY\n")
    first = device.sendCommand("relay 1", None, 5)
    clock.advance(3)
    second = device.sendCommand("relay 0", None, 1)
    clock.advance(1)
    assert second.result == Reply(TIMEOUT) and not first.called  # never written
    clock.advance(1)
    assert first.result == Reply(TIMEOUT)
    assert sent(transport) == ["CMD 1 relay 1"]
    device.sendCommand("relay 1", None, 5)
    assert sent(transport) == ["CMD 3 relay 1"]  # the lane is free again


def test_frames_of_the_devices_own_never_answer_a_command():
    device, transport, node, clock = session()
    device.dataReceived(b"READY\n")
    command = device.sendCommand("find", None, 5)
    sent(transport)
    device.dataReceived(b"BEAT\nPOS 52.1 4.3\nANS 7 stale\n")
    assert not command.called
    assert sent(transport) == ["BEAT", "GOT"]
    assert node.uplinks[1:] == [
        {"type": "status", "battery": 50}, {"type": "location", "lat": 52.1, "lon": 4.3},
        {"type": "raw", "text": "ANS 7 stale"},
    ]
    device.dataReceived(b"ANS ? found\n")  # no key: taken by the only command waiting
    assert command.result == Reply(OK, "found")


def test_an_answer_without_a_key_is_not_guessed_between_two_commands():
    device, transport, node, clock = session()
    device.dataReceived(b"READY\n")
    commands = [device.sendCommand("a", None, 5), device.sendCommand("b", None, 5)]
    device.dataReceived(b"ANS ? which\n")
    assert not any(c.called for c in commands) and node.uplinks[-1] == {"type": "raw", "text": "ANS ? which"}


def test_commands_wait_until_the_protocol_is_ready_and_closing_answers_them_all():
    device, transport, node, clock = session()
    waiting = [device.sendCommand("a", None, 5), device.sendCommand("b", None, 5)]
    assert sent(transport) == []
    device.dataReceived(b"READY\n")
    assert sent(transport) == ["CMD 1 a", "CMD 2 b"]
    device.connectionLost(None)
    assert [c.result for c in waiting] == [Reply(TIMEOUT)] * 2


def test_a_command_the_protocol_cannot_carry_is_rejected_with_the_reason():
    device, transport, node, clock = session()
    with pytest.raises(UnsupportedCommand):
        device.sendCommand("a", {"x": 1}, 5)
    assert device.unanswered == 0
    answer = node.execute("dev1", "a", {"x": 1}, None, True)
    assert answer.result == Reply(REJECTED, "no data in this protocol")


def test_bad_frames_are_counted_and_dropped_within_the_budget():
    device, transport, node, clock = session(maxBadLines=2)
    device.dataReceived(b"??\n??\n")
    assert not transport.disconnecting
    device.dataReceived(b"??\n")
    assert transport.disconnecting and device.closeReason == "too many errors"


def test_a_refused_login_gets_the_protocols_refusal():
    clock = Clock()
    node = Recording(clock)
    factory = DeviceFactory(node, clock, DeviceSettings(maxDevices=1), LineCodec)
    first, second = factory.buildProtocol(None), factory.buildProtocol(None)
    transports = [StringTransport(), StringTransport()]
    for device, transport in zip((first, second), transports):
        device.makeConnection(transport)
    first.dataReceived(b"HI a\n")
    second.dataReceived(b"HI b\n")
    assert transports[1].value() == b"" and transports[1].disconnecting  # node full: no welcome
    second.dataReceived(b"")
    third = factory.buildProtocol(None)
    third.makeConnection(StringTransport())
    third.dataReceived(b"HI bad!\n")
    assert third.transport.value() == b"NO\n" and third.transport.disconnecting


def test_a_late_answer_to_a_command_that_timed_out_is_not_taken_for_the_next():
    device, transport, node, clock = session()
    device.dataReceived(b"READY\n")
    first = device.sendCommand("relay 1", None, 1)
    clock.advance(1)
    assert first.result == Reply(TIMEOUT)
    second = device.sendCommand("relay 0", None, 5)
    device.dataReceived(b"LATE 1 on\n")  # names command 1: not the answer to command 2
    assert not second.called and node.uplinks[-1] == {"type": "raw", "text": "LATE 1 on"}
    device.dataReceived(b"LATE 99 off\n")  # names nothing this connection sent: the only one waiting
    assert second.result == Reply(OK, "off")


def test_commands_wait_until_what_made_the_codec_ready_has_been_handled():
    """E.g. Teltonika: a command must follow the ack of the device's first data packet, never precede it."""
    from devicehub.devices.session import LINES_PER_TURN

    device, transport, node, clock = session()
    device.dataReceived(b"BEAT\n" * (LINES_PER_TURN + 50) + b"READY\n")
    assert device.codec.ready  # decoded, but not all handled yet
    command = device.sendCommand("find", None, 5)
    clock.advance(0)
    lines = sent(transport)
    assert lines == ["BEAT"] * (LINES_PER_TURN + 50) + ["CMD 1 find"] and not command.called
