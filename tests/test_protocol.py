"""The device protocol, on StringTransport with a task.Clock."""

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from devicehub.node.node import Node
from devicehub.devices.codecs.jsonl import LineError, parse_line
from devicehub.devices.session import MAX_IDENT, DeviceFactory, DeviceSettings
from devicehub.common.results import NO, OK, TIMEOUT, Reply
from devicehub.common.metrics import Metrics

LOGIN_TIMEOUT = 30.0
IDLE_TIMEOUT = 300.0


class RecordingNode(Node):
    def __init__(self, clock=None):
        super().__init__("test-node", commandTimeout=10.0, clock=clock or Clock(), metrics=Metrics())
        self.uplinks = []

    def uplink(self, imei, message):
        self.uplinks.append((imei, message))


def connection(node=None, clock=None, factory=None, **settings):
    clock = clock or Clock()
    node = node or RecordingNode(clock)
    if factory is None:
        settings = DeviceSettings(**{"loginTimeout": LOGIN_TIMEOUT, "idleTimeout": IDLE_TIMEOUT, **settings})
        factory = DeviceFactory(node, clock, settings)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, node, clock


def written(transport):
    """The lines written so far, decoded, and clear the transport."""
    lines = [json.loads(line) for line in transport.value().splitlines()]
    transport.clear()
    return lines


def feed(protocol, *messages):
    for message in messages:
        protocol.dataReceived(json.dumps(message).encode() + b"\n")


def loggedIn(imei="861234567890123", **kwargs):
    protocol, transport, node, clock = connection(**kwargs)
    feed(protocol, {"type": "login", "imei": imei})
    assert written(transport) == [{"type": "login", "status": 200}]
    return protocol, transport, node, clock


def test_login_ok_puts_device_online():
    protocol, transport, node, clock = loggedIn("861234567890123")
    assert node.devices == {"861234567890123": protocol}
    assert protocol.conn == 1
    assert not transport.disconnecting


def test_login_with_invalid_imei_is_refused_and_closed():
    for imei in ["", "has space", "x" * 65, 12345, None, "é"]:
        protocol, transport, node, clock = connection()
        feed(protocol, {"type": "login", "imei": imei})
        lines = written(transport)
        assert lines[0]["type"] == "login" and lines[0]["status"] == 400 and lines[0]["error"]
        assert lines[-1]["type"] == "error"
        assert transport.disconnecting
        assert node.devices == {}


def test_first_line_must_be_login():
    protocol, transport, node, clock = connection()
    feed(protocol, {"type": "ping"})
    assert written(transport) == [{"type": "error", "error": "login first"}]
    assert transport.disconnecting


def test_bad_line_before_login_closes():
    protocol, transport, node, clock = connection()
    protocol.dataReceived(b"not json\n")
    [line] = written(transport)
    assert line["type"] == "error"
    assert transport.disconnecting


def test_login_timeout_closes_with_error():
    protocol, transport, node, clock = connection()
    clock.advance(LOGIN_TIMEOUT - 0.1)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert written(transport) == [{"type": "error", "error": "login timeout"}]
    assert transport.disconnecting


def test_idle_timeout_is_reset_by_any_line():
    protocol, transport, node, clock = loggedIn()
    clock.advance(IDLE_TIMEOUT - 1)
    feed(protocol, {"type": "location", "lat": 1})
    clock.advance(IDLE_TIMEOUT - 1)
    assert not transport.disconnecting
    clock.advance(2)
    assert written(transport) == [{"type": "error", "error": "idle timeout"}]
    assert transport.disconnecting


def test_ping_pong():
    protocol, transport, node, clock = loggedIn()
    feed(protocol, {"type": "ping"})
    assert written(transport) == [{"type": "pong"}]


def test_crlf_is_tolerated():
    protocol, transport, node, clock = connection()
    protocol.dataReceived(b'{"type":"login","imei":"abc"}\r\n{"type":"ping"}\r\n')
    assert written(transport) == [{"type": "login", "status": 200}, {"type": "pong"}]


def test_the_connections_of_a_node_share_one_timer_for_their_idle_and_login_timeouts():
    clock = Clock()
    node = RecordingNode(clock)
    factory = DeviceFactory(node, clock, DeviceSettings(loginTimeout=LOGIN_TIMEOUT, idleTimeout=IDLE_TIMEOUT))
    sessions = [connection(node=node, clock=clock, factory=factory) for _ in range(3)]
    for i, (protocol, transport, _, _) in enumerate(sessions[:2]):
        feed(protocol, {"type": "login", "imei": f"86123456789012{i}"})
    assert len(clock.getDelayedCalls()) == 1  # not a DelayedCall per connection
    clock.advance(LOGIN_TIMEOUT + 0.1)
    assert [transport.disconnecting for _, transport, _, _ in sessions] == [False, False, True]
    feed(sessions[0][0], {"type": "ping"})
    clock.advance(IDLE_TIMEOUT - LOGIN_TIMEOUT)
    assert [transport.disconnecting for _, transport, _, _ in sessions[:2]] == [False, True]


def test_a_session_gets_no_attribute_after_it_was_built():
    """Every attribute is set in __init__, in one order, so that every session's share the class's
    keys: one added later (at login, by the node) gave each session a dict of its own, 1.4 KiB."""
    clock = Clock()
    factory = DeviceFactory(RecordingNode(clock), clock, DeviceSettings())
    protocol, transport, node, clock = connection(factory=factory, clock=clock)
    built = list(vars(factory.buildProtocol(None)))
    feed(protocol, {"type": "login", "imei": "861234567890123"})
    protocol.sendCommand("0x10", None, 10)
    feed(protocol, {"type": "ack", "ident": 1}, {"type": "ping"})
    protocol.sendCommand("0x11", None, 10)
    protocol.close("bye")
    protocol.connectionLost(None)
    assert list(vars(protocol)) == built


def test_acks_are_matched_by_ident_with_and_without_data():
    protocol, transport, node, clock = loggedIn()
    results = []
    protocol.sendCommand("0x10", {"interval": 5}, 10).addCallback(lambda r: results.append(("first", r)))
    protocol.sendCommand("0x11", None, 10).addCallback(lambda r: results.append(("second", r)))
    first, second = written(transport)
    assert first == {"type": "command", "ident": 1, "instruct": "0x10", "data": {"interval": 5}}
    assert second == {"type": "command", "ident": 2, "instruct": "0x11", "data": None}
    feed(protocol, {"type": "ack", "ident": 2, "data": [1, 2]})
    feed(protocol, {"type": "ack", "ident": 1})
    assert results == [("second", Reply(OK, [1, 2])), ("first", Reply(OK))]
    # The commands' timeouts went with their acks: when they would have come nothing
    # happens (the shared timer just moves on to the idle timeout, all that is left).
    clock.advance(10)
    assert len(results) == 2 and written(transport) == [] and not transport.disconnecting
    assert [call.getTime() for call in clock.getDelayedCalls()] == [IDLE_TIMEOUT]
    clock.advance(IDLE_TIMEOUT - 10)
    assert written(transport) == [{"type": "error", "error": "idle timeout"}]


def test_ack_data_with_lone_surrogate_is_handed_back_intact():
    protocol, transport, node, clock = loggedIn()
    done = []
    protocol.sendCommand("0x10", "\udcad", 10).addCallback(done.append)
    assert transport.value().decode("utf-8")  # the command line is valid UTF-8
    protocol.dataReceived(b'{"type":"ack","ident":1,"data":"\\ud800!"}\n')
    assert done == [Reply(OK, "\ud800!")]


def test_unknown_ident_is_ignored():
    protocol, transport, node, clock = loggedIn()
    done = []
    protocol.sendCommand("0x10", None, 10).addCallback(done.append)
    transport.clear()
    feed(protocol, {"type": "ack", "ident": 999})
    assert written(transport) == []
    assert done == []
    feed(protocol, {"type": "ack", "ident": 1})
    assert done == [Reply(OK)]


def test_invalid_ident_gets_error_line_and_keeps_connection():
    protocol, transport, node, clock = loggedIn()
    for ident in ["1", None, 1.5, True]:
        feed(protocol, {"type": "ack", "ident": ident})
        assert written(transport) == [{"type": "error", "error": "invalid ident"}]
    assert not transport.disconnecting


def test_command_times_out():
    protocol, transport, node, clock = loggedIn()
    done = []
    protocol.sendCommand("0x10", None, 5).addCallback(done.append)
    clock.advance(4.9)
    assert done == []
    clock.advance(0.2)
    assert done == [Reply(TIMEOUT)]
    feed(protocol, {"type": "ack", "ident": 1})  # too late: ignored
    assert done == [Reply(TIMEOUT)]


def test_pending_commands_resolve_as_timeout_when_connection_closes():
    protocol, transport, node, clock = loggedIn()
    done = []
    for _ in range(3):
        protocol.sendCommand("0x10", None, 60).addCallback(done.append)
    protocol.connectionLost(None)
    assert done == [Reply(TIMEOUT)] * 3
    assert node.devices == {}
    assert clock.getDelayedCalls() == []


def test_idents_skip_unanswered_and_wrap():
    protocol, transport, node, clock = loggedIn()
    protocol._lastIdent = MAX_IDENT - 1
    protocol.sendCommand("a", None, 60)
    protocol.sendCommand("b", None, 60)
    protocol._lastIdent = 0
    protocol.sendCommand("c", None, 60)
    idents = [line["ident"] for line in written(transport)]
    assert idents == [MAX_IDENT, 1, 2]


def test_second_login_with_same_imei_replaces_older_connection():
    node = RecordingNode()
    old, oldTransport, _, _ = loggedIn("dev1", node=node)
    waiting = []
    old.sendCommand("0x10", None, 60).addCallback(waiting.append)
    oldTransport.clear()
    new, newTransport, _, _ = loggedIn("dev1", node=node)
    assert written(oldTransport) == [{"type": "error", "error": "replaced"}]
    assert oldTransport.disconnecting
    old.connectionLost(None)
    assert waiting == [Reply(TIMEOUT)]
    assert node.devices == {"dev1": new}
    assert new.conn == 2


def test_a_burst_is_handled_a_bounded_number_of_lines_per_turn():
    from devicehub.devices.session import LINES_PER_TURN

    protocol, transport, node, clock = loggedIn()
    protocol.dataReceived(b'{"type":"ping"}\n' * (2 * LINES_PER_TURN + 10))
    assert len(written(transport)) == LINES_PER_TURN
    assert transport.producerState == "paused"  # not reading while the backlog waits
    protocol.dataReceived(b'{"type":"ping"}\n')  # what the socket still delivers is queued
    assert written(transport) == []
    assert 0 in [call.getTime() for call in clock.getDelayedCalls()]  # the next turn
    # (task.Clock runs chained zero-delay calls in one advance; the reactor gives each its own turn)
    clock.advance(0)
    assert len(written(transport)) == LINES_PER_TURN + 11
    assert transport.producerState == "producing"
    assert [call.getTime() for call in clock.getDelayedCalls()] == [IDLE_TIMEOUT]


def test_lines_received_before_a_close_are_handled_even_past_the_turns_budget():
    """Issue 12.20: an ack still buffered when the connection closes is an answer, not a timeout."""
    from devicehub.devices.session import LINES_PER_TURN

    protocol, transport, node, clock = loggedIn()
    commands = [protocol.sendCommand("0x10", None, 5.0) for _ in range(2)]
    idents = [line["ident"] for line in written(transport)]
    burst = b'{"type":"ping"}\n' * LINES_PER_TURN + b'{"type":"location","n":1}\n'
    acks = b"".join(b'{"type":"ack","ident":%d,"data":%d}\n' % (ident, ident) for ident in idents)
    protocol.dataReceived(burst + acks + b'{"type":"ack","ident":')  # the last one cut off by the close
    assert not any(command.called for command in commands)
    protocol.connectionLost(None)
    assert [command.result for command in commands] == [Reply(OK, ident) for ident in idents]
    assert node.uplinks == [("861234567890123", {"type": "location", "n": 1})]
    assert node.devices == {} and clock.getDelayedCalls() == []


def test_line_too_long_closes_with_error():
    protocol, transport, node, clock = loggedIn(maxLine=100)
    protocol.dataReceived(b'{"type":"x","pad":"' + b"a" * 200)
    assert written(transport) == [{"type": "error", "error": "line too long"}]
    assert transport.disconnecting


def test_bad_lines_after_login_get_error_and_keep_connection():
    protocol, transport, node, clock = loggedIn()
    for line in [b"[1,2]", b"{}", b'{"type":7}', b'{"type":""}', b"\xff\xfe", b"{bad", b'{"type":"x","n":NaN}']:
        protocol.dataReceived(line + b"\n")
        [reply] = written(transport)
        assert reply["type"] == "error" and reply["error"]
    assert not transport.disconnecting


def test_uplink_messages_go_to_the_node():
    protocol, transport, node, clock = loggedIn("dev9")
    feed(protocol, {"type": "location", "lat": 52.1, "lon": 4.3})
    assert node.uplinks == [("dev9", {"type": "location", "lat": 52.1, "lon": 4.3})]
    assert written(transport) == []


def test_node_execute():
    node = RecordingNode()
    results = []
    node.execute("nobody", "0x10", None, 5, True).addCallback(results.append)
    protocol, transport, _, clock = loggedIn("dev1", node=node)
    node.execute("dev1", "0x10", None, 5, False).addCallback(results.append)
    node.execute("dev1", "0x11", None, None, True).addCallback(results.append)
    assert results == [Reply(NO), Reply(OK)]
    commands = written(transport)
    assert [c["instruct"] for c in commands] == ["0x10", "0x11"]
    clock.advance(10)  # the node's default command timeout
    assert results == [Reply(NO), Reply(OK), Reply(TIMEOUT)]


@given(st.binary(max_size=300))
def test_parse_line_accepts_only_objects_with_a_type(line):
    try:
        message = parse_line(line)
    except LineError as e:
        assert str(e)
    else:
        assert isinstance(message, dict)
        assert isinstance(message["type"], str) and message["type"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(
    st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=3), max_size=8),
    st.lists(st.integers(min_value=1, max_value=50), max_size=10),
)
def test_any_split_of_the_stream_gives_the_same_answers(uplinks, cuts):
    """Lines arriving in arbitrary chunks are handled exactly as when whole."""
    stream = b'{"type":"login","imei":"dev1"}\n' + b"".join(
        json.dumps({**message, "type": "u"}).encode() + b"\n" + b'{"type":"ping"}\n' for message in uplinks
    )
    whole, wholeTransport, wholeNode, _ = connection()
    whole.dataReceived(stream)
    split, splitTransport, splitNode, _ = connection()
    position = 0
    for cut in cuts:
        split.dataReceived(stream[position : position + cut])
        position += cut
    split.dataReceived(stream[position:])
    assert splitTransport.value() == wholeTransport.value()
    assert splitNode.uplinks == wholeNode.uplinks
    assert len(wholeNode.uplinks) == len(uplinks)


@given(st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), max_size=DeviceSettings.maxBadLines))
def test_garbage_within_the_budget_never_breaks_the_connection(lines):
    protocol, transport, node, clock = loggedIn(maxLine=1000)
    for line in lines:
        protocol.dataReceived(line + b"\n")
    assert not transport.disconnecting
    feed(protocol, {"type": "ping"})
    assert written(transport)[-1] == {"type": "pong"}


def test_endless_errors_are_cut_off():
    protocol, transport, node, clock = loggedIn(maxBadLines=3)
    for _ in range(3):
        protocol.dataReceived(b"junk\n")
        clock.advance(1)
    assert not transport.disconnecting
    protocol.dataReceived(b"junk\n")
    assert written(transport)[-1] == {"type": "error", "error": "too many errors"}
    assert transport.disconnecting


def test_error_budget_renews_each_minute():
    protocol, transport, node, clock = loggedIn(maxBadLines=3)
    for _ in range(10):
        protocol.dataReceived(b"junk\n" * 3)
        clock.advance(61)
        feed(protocol, {"type": "ping"})  # keeps the idle timer happy
    assert not transport.disconnecting


SECRET = b"factory-secret"


def test_login_needs_the_hmac_token_when_a_secret_is_set():
    from devicehub.devices.session import device_token

    token = device_token(SECRET, "dev1")
    assert token == __import__("hmac").new(SECRET, b"dev1", "sha256").hexdigest()
    assert device_token(SECRET.decode(), "dev1") == token  # the secret as given on the command line
    # "\ud800": a lone surrogate, legal as a JSON escape, with no UTF-8 form (issue 12.5)
    for bad in [None, "", "00" * 32, token.upper(), device_token(SECRET, "dev2"), 42, "\ud800", "\udcff" * 64]:
        protocol, transport, node, clock = connection(secret=SECRET)
        feed(protocol, {"type": "login", "imei": "dev1", "token": bad})
        lines = written(transport)
        assert lines[0] == {"type": "login", "status": 401, "error": "invalid token"}
        assert lines[-1]["type"] == "error" and transport.disconnecting
        assert node.devices == {}
    protocol, transport, node, clock = connection(secret=SECRET)
    feed(protocol, {"type": "login", "imei": "dev1", "token": token})
    assert written(transport) == [{"type": "login", "status": 200}]


def test_connections_that_never_log_in_cannot_lock_devices_out():
    """Issue 12.17: sockets that have not logged in have a budget of their own."""
    node = RecordingNode()
    idle = [connection(node=node, maxDevices=2, maxLogins=3)]
    factory = idle[0][0].factory
    idle += [connection(node=node, factory=factory) for _ in range(2)]
    refused, refusedTransport, _, _ = connection(node=node, factory=factory)
    assert written(refusedTransport) == [{"type": "error", "error": "too many connections logging in"}]
    assert refusedTransport.disconnecting and not any(t.disconnecting for _, t, _, _ in idle)
    # a real device still gets in once a slot is free, and logging in frees its slot
    idle.pop()[0].connectionLost(None)
    first, firstTransport, _, _ = connection(node=node, factory=factory)
    feed(first, {"type": "login", "imei": "d1"})
    second, secondTransport, _, _ = connection(node=node, factory=factory)
    feed(second, {"type": "login", "imei": "d2"})
    assert written(firstTransport) == written(secondTransport) == [{"type": "login", "status": 200}]
    assert len(factory.loggingIn) == 2
    # the devices logged in are capped by maxDevices; a device logging in again is not a new one
    third, thirdTransport, _, _ = connection(node=node, factory=factory)
    feed(third, {"type": "login", "imei": "d3"})
    assert written(thirdTransport) == [{"type": "error", "error": "node full"}] and thirdTransport.disconnecting
    third.connectionLost(None)
    again, againTransport, _, _ = connection(node=node, factory=factory)
    feed(again, {"type": "login", "imei": "d1"})
    assert written(againTransport) == [{"type": "login", "status": 200}]
    assert node.devices == {"d1": again, "d2": second} and firstTransport.disconnecting


def test_the_login_budget_defaults_to_a_tenth_of_the_devices():
    assert DeviceSettings(maxDevices=200).loginBudget == 20
    assert DeviceSettings(maxDevices=20).loginBudget == 16
    assert DeviceSettings(maxDevices=200, maxLogins=5).loginBudget == 5


def test_device_that_stops_reading_is_cut_off_at_the_outgoing_cap():
    protocol, transport, node, clock = loggedIn(maxOutgoing=1000)
    assert transport.producer is protocol
    protocol.pauseProducing()  # the transport's buffer is full: the device is not reading
    for _ in range(9):
        protocol.sendCommand("0x10", "x" * 50, 60)  # about 90 bytes each
    assert not transport.disconnected
    protocol.sendCommand("0x10", "x" * 200, 60)
    assert transport.disconnected  # aborted: nobody reads an error line
    protocol.resumeProducing()


def test_cap_counts_only_while_the_device_is_not_reading():
    protocol, transport, node, clock = loggedIn(maxOutgoing=1000)
    for _ in range(3):
        protocol.pauseProducing()
        for _ in range(9):
            protocol.sendCommand("0x10", "x" * 50, 60)
        protocol.resumeProducing()
    assert not transport.disconnected
    protocol.connectionLost(None)


def test_too_many_unanswered_commands_are_refused_as_busy():
    from devicehub.common.results import BUSY

    protocol, transport, node, clock = loggedIn("dev1", maxPending=2)
    results = []
    for _ in range(3):
        node.execute("dev1", "0x10", None, 5, True).addCallback(results.append)
    assert results == [Reply(BUSY)]
    feed(protocol, {"type": "ack", "ident": 1})
    node.execute("dev1", "0x10", None, 5, False).addCallback(results.append)
    assert results == [Reply(BUSY), Reply(OK), Reply(OK)]
    protocol.connectionLost(None)


def nested(depth, leaf=1):
    """An array C{depth} levels deep."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def test_nesting_is_limited_at_the_parser_and_what_passes_can_travel_on():
    """Issue 12.4: data that parses on the node can always be sent on to the broker."""
    from devicehub.common import jsoncodec
    from devicehub.wire import frames

    protocol, transport, node, clock = loggedIn()
    acked = protocol.sendCommand("0x10", None, 5.0)
    ident = written(transport)[0]["ident"]
    feed(protocol, {"type": "location", "data": nested(jsoncodec.MAX_DEPTH - 1)})
    for depth in (jsoncodec.MAX_DEPTH + 1, 970):  # an object holding an array depth - 1 deep
        data = b"[" * (depth - 1) + b"]" * (depth - 1)
        protocol.dataReceived(b'{"type":"location","data":%s}\n' % data)
        protocol.dataReceived(b'{"type":"ack","ident":%d,"data":%s}\n' % (ident, data))
    assert written(transport) == [{"type": "error", "error": f"nested deeper than {jsoncodec.MAX_DEPTH} levels"}] * 4
    assert not transport.disconnecting
    [(imei, uplink)] = node.uplinks
    # what the node sends on for it, the broker and event subscribers read back
    for kind, body in [(b"uplink", {"imei": imei, "message": uplink, "ts": 0.0}),
                       (b"result", {"imei": imei, "result": "ok", "data": uplink["data"]})]:
        assert frames.decode(frames.encode(kind, b"1", body)).body == body
    feed(protocol, {"type": "ack", "ident": ident, "data": nested(jsoncodec.MAX_DEPTH - 1)})
    assert acked.result == Reply(OK, nested(jsoncodec.MAX_DEPTH - 1))
