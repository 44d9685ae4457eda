"""The parts of a device session, each on its own: task.Clock, StringTransport and small fakes
(and one real loopback connection, for how L{Outgoing} writes to TCP)."""

import hashlib
import hmac
import socket
from types import SimpleNamespace
from typing import Any, Hashable

import pytest
from pytest_twisted import ensureDeferred
from twisted.internet import defer, protocol, tcp
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport

from devicehub.common.listening import LeanServer
from devicehub.common.results import OK, TIMEOUT, Reply
from devicehub.devices import session
from devicehub.devices.budget import BAD_LINE_WINDOW, BadFrameBudget
from devicehub.devices.codec import Heartbeat, Identify, Uplink
from devicehub.devices.commands import MAX_IDENT, PendingCommands
from devicehub.devices.intake import FEED_BYTES, LINES_PER_TURN, Intake
from devicehub.devices.login import device_token, login_refusal
from devicehub.devices.outgoing import Outgoing
from devicehub.devices.settings import DeviceSettings


class Codec:
    """Commands as C{instruct:number} bytes, keyed by number (or by C{key} when given); lanes by first letter."""

    name = "fake"

    def __init__(self, serial: bool = False) -> None:
        self.serial = serial
        self.ready = True
        self.key: Hashable | None = None

    def encodeCommand(self, instruct: str, data: Any, number: int) -> tuple[bytes, Hashable]:
        return f"{instruct}:{number}".encode(), number if self.key is None else self.key

    def lane(self, instruct: str) -> Hashable:
        return instruct[0]


class Commands:
    def __init__(self, serial: bool = False) -> None:
        self.clock = Clock()
        self.codec = Codec(serial)
        self.sent: list[bytes] = []
        self.ready = True
        self.failed: list[tuple[int, str, str]] = []  # the commands not acked
        self.pending = PendingCommands(self.codec, self.clock, self)

    # -- what PendingCommands tells its session

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def mayWriteNext(self) -> bool:
        return self.ready

    def notAcked(self, *failed) -> None:
        self.failed.append(failed)

    def send(self, instruct: str, timeout: float = 10.0) -> list[Reply]:
        results: list[Reply] = []
        self.pending.send(instruct, None, timeout).addCallback(results.append)
        return results


# -- PendingCommands


def test_commands_are_numbered_and_answered_by_their_key():
    commands = Commands()
    first, second = commands.send("a"), commands.send("b")
    assert commands.sent == [b"a:1", b"b:2"] and len(commands.pending) == 2
    assert commands.pending.answer(2, False, "two")
    assert (first, second) == ([], [Reply(OK, "two")])
    assert not commands.pending.answer(2, False, "again")  # answered already
    assert not commands.pending.answer(7, False, "who?")
    assert len(commands.pending) == 1 and commands.failed == []


def test_numbers_wrap_and_skip_the_unanswered():
    commands = Commands()
    commands.pending.lastNumber = MAX_IDENT - 1
    commands.send("a"), commands.send("b")
    commands.pending.lastNumber = 0
    commands.send("c")
    assert commands.sent == [f"a:{MAX_IDENT}".encode(), b"b:1", b"c:2"]
    assert commands.pending.lastNumber == 2


def test_a_command_times_out_and_is_forgotten():
    commands = Commands()
    result = commands.send("a", timeout=5.0)
    commands.clock.advance(4.9)
    assert result == []
    commands.clock.advance(0.1)
    assert result == [Reply(TIMEOUT)]
    assert len(commands.pending) == 0 and commands.pending.results() == []
    assert commands.failed == [(1, "a", TIMEOUT)]
    assert commands.clock.getDelayedCalls() == []
    assert not commands.pending.answer(1, False, "late")


def test_fallback_takes_the_only_written_command_unless_the_key_ended_already():
    commands = Commands()
    first = commands.send("a", timeout=1.0)
    commands.clock.advance(1.0)  # command 1 timed out
    second = commands.send("b")
    assert not commands.pending.answer(1, True, "late")  # names the timed-out one: not command 2's
    assert commands.pending.answer(None, True, "yes")
    assert first == [Reply(TIMEOUT)] and second == [Reply(OK, "yes")]
    third, fourth = commands.send("c"), commands.send("d")
    assert not commands.pending.answer(None, True, "which?")  # two written: no guess
    assert third == fourth == []
    commands.pending.close()


def test_a_command_with_the_key_of_a_written_one_waits_for_it():
    commands = Commands()
    commands.codec.key = "same"
    first, second = commands.send("a"), commands.send("b")
    assert commands.sent == [b"a:1"]
    commands.pending.answer("same", False, 1)
    assert commands.sent == [b"a:1", b"b:2"]
    commands.pending.answer("same", False, 2)
    assert first == [Reply(OK, 1)] and second == [Reply(OK, 2)]


def test_serial_commands_wait_for_their_lane_and_for_ready():
    commands = Commands(serial=True)
    a1, a2, b1 = commands.send("a1"), commands.send("a2"), commands.send("b1")
    assert commands.sent == [b"a1:1", b"b1:3"]  # a2 waits behind a1, in lane "a"
    assert len(commands.pending) == 3 and len(commands.pending.waiting["a"]) == 1
    commands.ready = False
    commands.pending.answer(1, False, "one")
    assert commands.sent == [b"a1:1", b"b1:3"]  # lane free, codec not ready
    commands.ready = True
    commands.pending.pump()
    assert commands.sent == [b"a1:1", b"b1:3", b"a2:2"] and commands.pending.waiting == {}
    assert a1 == [Reply(OK, "one")] and a2 == b1 == []
    commands.pending.close()


def test_a_waiting_command_that_times_out_leaves_its_lane():
    commands = Commands(serial=True)
    commands.send("a1", timeout=10.0)
    waiting = commands.send("a2", timeout=1.0)
    commands.clock.advance(1.0)
    assert waiting == [Reply(TIMEOUT)] and commands.pending.waiting == {}
    commands.send("a3")
    commands.pending.answer(1, False, None)
    assert commands.sent == [b"a1:1", b"a3:3"]  # a2 was never written
    commands.pending.close()


def test_close_times_out_every_command_and_writes_no_more():
    commands = Commands(serial=True)
    results = [commands.send(instruct) for instruct in ["a1", "a2", "b1"]]
    commands.pending.close()
    assert results == [[Reply(TIMEOUT)]] * 3
    assert commands.sent == [b"a1:1", b"b1:3"] and len(commands.pending) == 0
    assert commands.clock.getDelayedCalls() == []
    assert [number for number, _, _ in commands.failed] == [1, 2, 3]


# -- BadFrameBudget


def test_the_budget_allows_limit_bad_frames_per_window():
    clock = Clock()
    budget = BadFrameBudget(clock, 3)
    clock.advance(100.0)
    assert [budget.spend() for _ in range(4)] == [True, True, True, False]
    clock.advance(BAD_LINE_WINDOW)
    assert not budget.spend()  # still the window that opened at 100
    clock.advance(0.5)
    assert [budget.spend() for _ in range(4)] == [True, True, True, False]


def test_the_budget_window_is_its_own():
    clock = Clock()
    budget = BadFrameBudget(clock, 1, window=5.0)
    assert budget.spend() and not budget.spend()
    clock.advance(5.5)
    assert budget.spend()


# -- login


def test_device_token_is_the_hmac_of_the_imei():
    expected = hmac.new(b"s3cret", b"861234567890123", hashlib.sha256).hexdigest()
    assert device_token(b"s3cret", "861234567890123") == expected
    assert device_token("s3cret", "861234567890123") == expected


def test_login_refusal_checks_the_imei_then_the_token():
    imei = "861234567890123"
    assert login_refusal(Identify(imei), None, True) is None
    assert login_refusal(Identify("no spaces"), None, False) == (400, "invalid imei")
    assert login_refusal(Identify(42), None, False) == (400, "invalid imei")  # type: ignore[arg-type]
    assert login_refusal(Identify("no spaces"), b"k", True) == (400, "invalid imei")
    assert login_refusal(Identify(imei), b"k", True) == (401, "invalid token")
    assert login_refusal(Identify(imei, token=device_token(b"other", imei)), b"k", True) == (401, "invalid token")
    assert login_refusal(Identify(imei, token=7), b"k", True) == (401, "invalid token")  # type: ignore[arg-type]
    assert login_refusal(Identify(imei, token="\udcff"), b"k", True) == (401, "invalid token")
    assert login_refusal(Identify(imei, token=device_token(b"k", imei)), b"k", True) is None
    assert login_refusal(Identify(imei), b"k", False) is None  # the protocol carries no tokens


def test_the_old_names_stay_importable_from_the_session_module():
    assert session.DeviceSettings is DeviceSettings and session.device_token is device_token
    assert (session.MAX_IDENT, session.LINES_PER_TURN, session.FEED_BYTES) == (MAX_IDENT, LINES_PER_TURN, FEED_BYTES)
    assert session.BAD_LINE_WINDOW == BAD_LINE_WINDOW


# -- Outgoing


def test_outgoing_writes_through_while_the_device_reads():
    transport, stopped = StringTransport(), []
    outgoing = Outgoing(10, SimpleNamespace(stoppedReading=lambda: stopped.append(True)))
    outgoing.transport = transport
    outgoing.write(b"x" * 50)
    outgoing.write(b"")
    assert transport.value() == b"x" * 50 and stopped == []


def test_outgoing_cuts_off_past_the_limit_only_while_paused():
    transport, stopped = StringTransport(), []
    outgoing = Outgoing(10, SimpleNamespace(stoppedReading=lambda: stopped.append(True)))
    outgoing.transport = transport
    outgoing.pause()
    outgoing.write(b"123456")
    outgoing.write(b"7890")
    assert transport.value() == b"1234567890" and stopped == []  # 10 bytes: at the limit
    outgoing.write(b"!")
    assert transport.value() == b"1234567890" and stopped == [True]
    outgoing.resume()
    outgoing.write(b"abc")
    outgoing.pause()
    outgoing.write(b"x" * 10)
    assert transport.value() == b"1234567890abc" + b"x" * 10 and stopped == [True]


class Accepted(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.connected.callback(self)


async def _acceptedConnection(transport: type = tcp.Server):
    """A real loopback TCP connection: (the server side's protocol, a raw client socket, the port)."""
    from twisted.internet import reactor

    factory = protocol.Factory.forProtocol(Accepted)
    factory.connected = defer.Deferred()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    port.transport = transport
    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    client.setblocking(False)
    return await factory.connected, client, port


async def _drain(client: socket.socket, size: int) -> bytes:
    """Read C{size} bytes from C{client} while the reactor runs (it sends what the transport buffered)."""
    from twisted.internet import reactor

    received = b""
    for _ in range(5000):
        try:
            received += client.recv(1 << 20)
        except BlockingIOError:
            await deferLater(reactor, 0.001, lambda: None)
        if len(received) >= size:
            break
    return received


@pytest.mark.parametrize("transport", [tcp.Server, LeanServer])
@ensureDeferred
async def test_outgoing_sends_at_once_on_an_idle_tcp_connection_and_in_order_behind_a_backlog(transport):
    """Over loopback (Twisted's connections and the device listeners' lean ones): with nothing buffered, the
    bytes are on the wire before the reactor turns; behind a write the socket could not take, every later
    write waits in the transport, in order."""
    server, client, port = await _acceptedConnection(transport)
    assert type(server.transport) is transport
    try:
        outgoing = Outgoing(1 << 30, SimpleNamespace(stoppedReading=lambda: None))
        outgoing.transport = server.transport
        outgoing.write(b"first\n")
        assert not server.transport.dataBuffer and not server.transport._tempDataBuffer
        assert client.recv(100) == b"first\n"  # no reactor turn in between
        big = bytes(range(256)) * 40_000  # 10 MB: more than the socket buffers take at once
        outgoing.write(big)
        outgoing.write(b"tail")
        assert server.transport._tempDataBuffer or server.transport.dataBuffer  # the rest waits
        assert await _drain(client, len(big) + 4) == big + b"tail"
    finally:
        client.close()
        server.transport.abortConnection()
        await port.stopListening()


# -- Intake


class Lines:
    """Decodes C{beat} lines to Heartbeats and anything else to Uplinks; records what it was fed."""

    def __init__(self) -> None:
        self.buffer, self.fed = b"", []

    def feed(self, data: bytes) -> list:
        self.fed.append(len(data))
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        return [Heartbeat() if line == b"beat" else Uplink(line.decode()) for line in lines]


class Intakes:
    def __init__(self) -> None:
        self.clock, self.codec, self.transport = Clock(), Lines(), StringTransport()
        self.seen: list[Any] = []
        self.resets = 0
        self.batches: list[int] = []
        handlers = {Heartbeat: self.seen.append, Uplink: lambda message: self.seen.append(message.type)}
        self._handlers = handlers
        self.intake = Intake(self.codec, self.clock, self)
        self.intake.transport = self.transport

    # -- what an Intake tells its session

    def resetTimeout(self) -> None:
        self.resets += 1

    def messageReceived(self, message) -> None:
        self._handlers[type(message)](message)

    def messagesHandled(self, count: int) -> None:
        self.batches.append(count)


def test_intake_hands_each_message_to_its_handler_in_order():
    intakes = Intakes()
    intakes.intake.receive(b"beat\nhel")
    intakes.intake.receive(b"lo\n")
    assert intakes.seen == [Heartbeat(), "hello"]
    assert intakes.resets == 2 and intakes.batches == [1, 1]
    assert intakes.clock.getDelayedCalls() == []


def test_intake_handles_a_bounded_number_per_turn_and_pauses_reading():
    intakes = Intakes()
    intakes.intake.receive(b"beat\n" * (LINES_PER_TURN + 5))
    assert len(intakes.seen) == LINES_PER_TURN and intakes.transport.producerState == "paused"
    intakes.intake.receive(b"last\n")  # queued behind the waiting ones
    assert len(intakes.seen) == LINES_PER_TURN
    intakes.clock.advance(0)
    assert len(intakes.seen) == LINES_PER_TURN + 6 and intakes.seen[-1] == "last"
    assert intakes.transport.producerState == "producing"
    assert intakes.batches == [LINES_PER_TURN, 6] and intakes.clock.getDelayedCalls() == []


def test_intake_feeds_the_codec_a_bounded_number_of_bytes_at_a_time():
    intakes = Intakes()
    data = b"x" * (2 * FEED_BYTES + 10) + b"\n"
    intakes.intake.receive(data)
    assert intakes.codec.fed == [FEED_BYTES, FEED_BYTES, 11] and intakes.seen == ["x" * (2 * FEED_BYTES + 10)]


def test_intake_handles_nothing_once_stopped_or_disconnecting():
    intakes = Intakes()
    intakes.intake.stop()
    intakes.intake.receive(b"beat\nbeat\n")
    assert intakes.seen == [] and intakes.batches == [0]
    intakes = Intakes()
    intakes.transport.loseConnection()
    intakes.intake.receive(b"beat\n")
    assert intakes.seen == [] and intakes.clock.getDelayedCalls() == []


def test_intake_close_cancels_the_next_turn_and_handle_drains_the_rest():
    intakes = Intakes()
    intakes.intake.receive(b"beat\n" * (LINES_PER_TURN + 3))
    intakes.intake.close()
    assert intakes.clock.getDelayedCalls() == []
    intakes.intake.handle(None)
    assert len(intakes.seen) == LINES_PER_TURN + 3
