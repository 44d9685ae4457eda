"""
The Teltonika codec on bytes (sans-IO) and the simulated Teltonika device.

Packets are built here from Teltonika's protocol documents (Codec 8, 8 Extended, 16 and 12):
by hand with struct and a reference CRC-16/IBM written below, or with the simulator's
builders (which the hand-built ones check).
"""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devicehub.devices.codec import (
    Answer,
    BadFrame,
    Heartbeat,
    Identify,
    Reply,
    UnsupportedCommand,
    Uplink,
)
from devicehub.devices.codecs.teltonika import TeltonikaCodec
from devicehub.devices.codecs.teltonika.protocol import crc
from devicehub.devices.simulate.teltonika import TeltonikaDevice, avlPacket, encodeRecord

IMEI = "356307042441013"
MAX = 65536
HELLO = b"\x00\x0f" + IMEI.encode()
T0 = 1764088145000  # 2025-11-25T16:29:05Z, in ms


def crc16ibm(data: bytes) -> int:
    """CRC-16/IBM as Teltonika's documents define it: polynomial 0x8005 reflected (0xA001), start 0."""
    value = 0
    for byte in data:
        value ^= byte
        for _ in range(8):
            value = (value >> 1) ^ 0xA001 if value & 1 else value >> 1
    return value


def wrap(data: bytes, checksum: int | None = None) -> bytes:
    """A TCP data packet by hand: four zero bytes, data length (4), data, CRC (4)."""
    if checksum is None:
        checksum = crc16ibm(data)
    return b"\x00" * 4 + struct.pack(">I", len(data)) + data + struct.pack(">I", checksum)


def gps(ms=T0, priority=0, lon=25.2797, lat=54.6872, altitude=112, angle=270, satellites=11, speed=42):
    return struct.pack(
        ">QBiihHBH", ms, priority, round(lon * 1e7), round(lat * 1e7), altitude, angle, satellites, speed
    )


def codec8Record(**kw) -> bytes:
    """A Codec 8 record by hand: event 239, 1-byte 239=1 and 21=4, 2-byte 66, 4-byte 16, 8-byte 78."""
    return (
        gps(**kw)
        + bytes((239, 5))  # event id, total IO count
        + bytes((2, 239, 1, 21, 4))
        + bytes((1,)) + struct.pack(">BH", 66, 12600)
        + bytes((1,)) + struct.pack(">BI", 16, 123456)
        + bytes((1,)) + struct.pack(">BQ", 78, 0x0102030405060708)
    )


CODEC8_DATA = {
    "lat": 54.6872, "lon": 25.2797, "time": "2025-11-25T16:29:05Z", "valid": True, "speed": 42.0,
    "course": 270.0, "altitude": 112, "satellites": 11, "priority": 0, "event": 239,
    "io": {"239": 1, "21": 4, "66": 12600, "16": 123456, "78": 0x0102030405060708},
    "ignition": True, "gsm": 4, "power": 12.6, "odometer": 123456,
}


def avl(codec: int, records: list[bytes], count: int | None = None, count2: int | None = None) -> bytes:
    n = len(records) if count is None else count
    return wrap(bytes((codec, n)) + b"".join(records) + bytes((n if count2 is None else count2,)))


def response(text: bytes, kind: int = 0x06) -> bytes:
    """A Codec 12 message from the device by hand (0x06: a command response)."""
    return wrap(bytes((0x0C, 1, kind)) + struct.pack(">I", len(text)) + text + b"\x01")


def identified(maxFrame: int = MAX) -> TeltonikaCodec:
    codec = TeltonikaCodec(maxFrame)
    assert codec.feed(HELLO) == [Identify(IMEI, reply=b"\x01")]
    return codec


def test_reference_crc():
    """The test's CRC is CRC-16/IBM (check value of "123456789": 0xBB3D), and so is the codec's."""
    assert crc16ibm(b"123456789") == 0xBB3D
    assert crc(b"123456789") == 0xBB3D
    record = codec8Record()
    assert crc(record) == crc16ibm(record)


def test_class_attributes():
    codec = TeltonikaCodec(MAX)
    assert codec.name == "teltonika"
    assert codec.serial is True
    assert codec.lane("getinfo") is None and codec.lane("setdigout 1") is None
    assert codec.refused(401, "not allowed") == b"\x00"
    assert codec.error("whatever") == b""


def test_identification_answered_01():
    codec = TeltonikaCodec(MAX)
    assert codec.feed(HELLO) == [Identify(IMEI, token=None, reply=b"\x01")]
    assert codec.imei == IMEI


def test_identification_split_byte_by_byte():
    codec = TeltonikaCodec(MAX)
    out = []
    for i in range(len(HELLO)):
        out += codec.feed(HELLO[i:i + 1])
    assert out == [Identify(IMEI, reply=b"\x01")]


def test_identify_once_then_same_imei_answered_again():
    codec = identified()
    assert codec.feed(HELLO) == [Reply(b"\x01")]


def test_another_imei_later_is_an_identity_error():
    codec = identified()
    [bad] = codec.feed(b"\x00\x0f356307042441099")
    assert bad.kind == "identity" and not bad.fatal
    # The connection goes on.
    assert codec.feed(b"\xff") == [Heartbeat()]


@pytest.mark.parametrize("hello", [
    b"\x00\x05ab cd",          # a space: not an identity
    b"\x00\x03\xc3\xa9x",      # not ASCII
    b"\x00\x41" + b"1" * 65,   # longer than an identity may be
    b"\x12\x34",               # no identification at all
])
def test_invalid_identification_is_fatal(hello):
    codec = TeltonikaCodec(MAX)
    [bad] = codec.feed(hello)
    assert bad.kind == "identity" and bad.fatal
    assert codec.feed(HELLO + b"\xff") == []
    assert codec.imei is None


def test_keepalive_ff_is_a_heartbeat_without_reply():
    codec = identified()
    assert codec.feed(b"\xff") == [Heartbeat()]
    assert codec.feed(b"\xff\xff\xff") == [Heartbeat()] * 3
    [beat] = codec.feed(b"\xff")
    assert beat.reply == b"" and beat.status is None


def test_hand_built_record_matches_the_simulator_builder():
    io = {239: 1, 21: 4, 66: 12600, 16: 123456, 78: 0x0102030405060708}
    built = encodeRecord(
        0x08, T0, 54.6872, 25.2797, altitude=112, angle=270, satellites=11, speed=42, event=239, io=io
    )
    assert built == codec8Record()
    assert avlPacket(0x08, [built]) == avl(0x08, [codec8Record()])


def test_codec8_record_decoded_and_acked():
    codec = identified()
    assert codec.feed(avl(0x08, [codec8Record()])) == [
        Uplink("location", CODEC8_DATA),
        Reply(b"\x00\x00\x00\x01"),
    ]


def test_codec8_packet_of_several_records_acked_with_its_count():
    codec = identified()
    records = [codec8Record(ms=T0 + i * 1000, speed=i) for i in range(3)]
    out = codec.feed(avl(0x08, records))
    assert [m.type for m in out[:3]] == ["location"] * 3
    assert [m.data["speed"] for m in out[:3]] == [0.0, 1.0, 2.0]
    assert [m.data["time"] for m in out[:3]] == [
        "2025-11-25T16:29:05Z", "2025-11-25T16:29:06Z", "2025-11-25T16:29:07Z"
    ]
    assert out[3] == Reply(b"\x00\x00\x00\x03")
    assert len(out) == 4


def test_ack_of_many_records_is_four_bytes_big_endian():
    codec = identified()
    records = [gps(ms=T0 + i) + bytes(6) for i in range(200)]  # no IO elements
    out = codec.feed(avl(0x08, records))
    assert len(out) == 201
    assert out[-1] == Reply(bytes((0, 0, 0, 200)))


def test_packet_without_records_acked_zero():
    codec = identified()
    assert codec.feed(avl(0x08, [])) == [Reply(b"\x00\x00\x00\x00")]
    assert codec.ready


def test_southern_western_no_fix_milliseconds():
    codec = identified()
    record = gps(ms=T0 + 250, lon=-58.3816, lat=-34.6037, altitude=-12, satellites=0, speed=0) + bytes(6)
    [up, ack] = codec.feed(avl(0x08, [record]))
    assert up.data == {
        "lat": -34.6037, "lon": -58.3816, "time": "2025-11-25T16:29:05.250Z", "valid": False,
        "speed": 0.0, "course": 270.0, "altitude": -12, "satellites": 0, "priority": 0, "event": 0, "io": {},
    }
    assert ack == Reply(b"\x00\x00\x00\x01")


def test_codec8_extended_two_byte_ids_and_variable_group():
    record = (
        gps(priority=2)
        + struct.pack(">HH", 385, 4)  # event id, total
        + struct.pack(">H", 1) + struct.pack(">HB", 240, 1)
        + struct.pack(">H", 1) + struct.pack(">HH", 67, 4012)
        + struct.pack(">H", 0)
        + struct.pack(">H", 1) + struct.pack(">HQ", 11, 893700123456)
        + struct.pack(">H", 1) + struct.pack(">HH", 256, 3) + b"VIN"
    )
    assert record == encodeRecord(
        0x8E, T0, 54.6872, 25.2797, altitude=112, angle=270, satellites=11, speed=42, priority=2,
        event=385, io={240: 1, 67: 4012, 11: 893700123456, 256: b"VIN"},
    )
    codec = identified()
    [up, ack] = codec.feed(avl(0x8E, [record]))
    assert up.data["event"] == 385
    assert up.data["priority"] == 2
    assert up.data["io"] == {"240": 1, "67": 4012, "11": 893700123456, "256": "56494e"}
    assert up.data["motion"] is True and up.data["batteryVoltage"] == 4.012
    assert ack == Reply(b"\x00\x00\x00\x01")


def test_codec16_two_byte_ids_generation_type():
    record = (
        gps()
        + struct.pack(">HBB", 1001, 2, 2)  # event id (2 bytes), generation type, total
        + bytes((1,)) + struct.pack(">HB", 239, 0)
        + bytes((1,)) + struct.pack(">HH", 1001, 700)
        + bytes((0, 0))
    )
    assert record == encodeRecord(
        0x10, T0, 54.6872, 25.2797, altitude=112, angle=270, satellites=11, speed=42,
        event=1001, generation=2, io={239: 0, 1001: 700},
    )
    codec = identified()
    [first, second, ack] = codec.feed(avl(0x10, [record, record]))
    assert first == second
    assert first.data["event"] == 1001
    assert first.data["io"] == {"239": 0, "1001": 700}
    assert first.data["ignition"] is False
    assert ack == Reply(b"\x00\x00\x00\x02")


def test_sixteen_byte_group_some_firmware_sends():
    """A record with a count of 16-byte values after the 8-byte group is decoded too (kept as hex)."""
    record = gps() + bytes((0, 1, 0, 0, 0, 0)) + bytes((1, 203)) + bytes(range(16))
    codec = identified()
    [up, ack] = codec.feed(avl(0x08, [record]))
    assert up.data["io"] == {"203": bytes(range(16)).hex()}
    assert ack == Reply(b"\x00\x00\x00\x01")


def test_ready_only_after_the_first_data_packet_was_acked():
    codec = TeltonikaCodec(MAX)
    assert not codec.ready
    codec.feed(HELLO)
    assert not codec.ready
    codec.feed(b"\xff")
    assert not codec.ready
    codec.feed(response(b"late answer"))
    assert not codec.ready
    codec.feed(avl(0x08, [codec8Record()])[:-1])
    assert not codec.ready
    out = codec.feed(avl(0x08, [codec8Record()])[-1:])
    assert out[-1] == Reply(b"\x00\x00\x00\x01")
    assert codec.ready
    codec.feed(b"\xff")
    assert codec.ready


def test_data_before_identification_is_decoded_anyway():
    """The session refuses such a device; the codec says what came."""
    codec = TeltonikaCodec(MAX)
    assert codec.feed(avl(0x08, [codec8Record()])) == [
        Uplink("location", CODEC8_DATA), Reply(b"\x00\x00\x00\x01")
    ]
    assert codec.feed(HELLO) == [Identify(IMEI, reply=b"\x01")]


def test_encode_command_codec12_byte_for_byte():
    codec = identified()
    frame, key = codec.encodeCommand("getinfo", None, 7)
    data = b"\x0c\x01\x05" + b"\x00\x00\x00\x07" + b"getinfo" + b"\x01"
    assert frame == b"\x00\x00\x00\x00" + b"\x00\x00\x00\x0f" + data + struct.pack(">I", crc16ibm(data))
    assert key is None
    frame, key = codec.encodeCommand("setdigout 1", None, 8)
    assert frame == wrap(b"\x0c\x01\x05" + struct.pack(">I", 11) + b"setdigout 1" + b"\x01")
    assert key is None


@pytest.mark.parametrize("data", ["1", 1, [], {}, ["a"], False])
def test_command_with_data_is_unsupported(data):
    with pytest.raises(UnsupportedCommand):
        TeltonikaCodec(MAX).encodeCommand("setdigout", data, 1)


def test_command_not_ascii_is_unsupported():
    with pytest.raises(UnsupportedCommand):
        TeltonikaCodec(MAX).encodeCommand("getinfo é", None, 1)


def test_codec12_response_is_the_answer_text():
    codec = identified()
    assert codec.feed(response(b"DOUT1:1 Timeout:INFINITY\r\n")) == [
        Answer(None, "DOUT1:1 Timeout:INFINITY", reply=b"", fallback=False)
    ]


def test_codec12_binary_response_is_hex():
    codec = identified()
    assert codec.feed(response(b"\x01\x03\x00\x01\x00\x15")) == [Answer(None, "010300010015")]


def test_codec12_other_kinds_are_raw_and_not_acked():
    codec = identified()
    frame = response(b"\x00", kind=0x0D)  # camera
    assert codec.feed(frame) == [Uplink("raw", {"hex": frame.hex(), "codec": 0x0C})]
    frame = wrap(b"\x0c\x00\x00")
    assert codec.feed(frame) == [Uplink("raw", {"hex": frame.hex(), "codec": 0x0C})]
    assert not codec.ready


def test_codec13_is_raw_and_not_acked():
    codec = identified()
    frame = wrap(b"\x0d\x01\x06" + struct.pack(">II", 11, 1764088145) + b"getinfo" + b"\x01")
    assert codec.feed(frame) == [Uplink("raw", {"hex": frame.hex(), "codec": 0x0D})]


def test_gh3000_records_are_raw_but_acked():
    """Codec 7 (GH3000) records are not decoded; the packet is acked so the device moves on."""
    codec = identified()
    frame = wrap(b"\x07\x02" + bytes(range(40)) + b"\x02")
    assert codec.feed(frame) == [
        Uplink("raw", {"hex": frame.hex(), "codec": 0x07}), Reply(b"\x00\x00\x00\x02")
    ]
    assert codec.ready


def test_checksum_failure_dropped_not_acked():
    codec = identified()
    good = avl(0x08, [codec8Record()])
    data = good[8:-4]
    [bad] = codec.feed(wrap(data, checksum=crc16ibm(data) ^ 1))
    assert bad.kind == "checksum" and not bad.fatal
    assert not codec.ready
    corrupted = bytearray(good)
    corrupted[20] ^= 0x40  # a bit of the longitude
    [bad] = codec.feed(bytes(corrupted))
    assert bad.kind == "checksum"
    # The CRC is in the low two bytes of its field: the high two must be zero.
    [bad] = codec.feed(wrap(data, checksum=crc16ibm(data) | 0x10000))
    assert bad.kind == "checksum"
    # The connection goes on with the next packet.
    assert codec.feed(good) == [Uplink("location", CODEC8_DATA), Reply(b"\x00\x00\x00\x01")]


def test_checksum_failure_of_a_response():
    codec = identified()
    frame = bytearray(response(b"DOUT1:1"))
    frame[-1] ^= 0xFF
    [bad] = codec.feed(bytes(frame))
    assert bad.kind == "checksum"


def test_record_counts_that_differ():
    codec = identified()
    [bad] = codec.feed(avl(0x08, [codec8Record()], count=1, count2=2))
    assert bad.kind == "decode" and not bad.fatal
    assert not codec.ready


@pytest.mark.parametrize("frame", [
    avl(0x08, [codec8Record()], count=2),                    # says 2 records, carries 1
    avl(0x08, [codec8Record() + b"\x07"]),                   # a byte after the records
    avl(0x08, [codec8Record()[:-3]]),                        # a record cut short
    avl(0x8E, [codec8Record()]),                             # Codec 8 record in an 8E packet
    wrap(b"\x0c\x01\x06" + struct.pack(">I", 50) + b"short" + b"\x01"),  # response longer than its packet
    avl(0x08, [gps(ms=1 << 62) + bytes(6)]),                 # a time beyond year 9999
])
def test_wrong_lengths_are_decode_errors(frame):
    codec = identified()
    [bad] = codec.feed(frame)
    assert bad.kind == "decode" and not bad.fatal
    assert not codec.ready
    assert codec.feed(b"\xff") == [Heartbeat()]


def test_garbage_between_frames_is_skipped():
    codec = identified()
    good = avl(0x08, [codec8Record()])
    out = codec.feed(good + b"GET / HTTP/1.1\r\n\x01\x02" + b"\xff" + b"\x00\x00\x00" + good)
    expected = [Uplink("location", CODEC8_DATA), Reply(b"\x00\x00\x00\x01")]
    assert out[:2] == expected
    assert [type(m) for m in out[2:4]] == [BadFrame, Heartbeat]
    assert out[2].kind == "decode" and not out[2].fatal
    assert out[3:] == [Heartbeat(), BadFrame("decode", out[4].error)] + expected
    assert len(codec._buf) == 0


def test_zeros_before_a_frame():
    codec = identified()
    good = avl(0x08, [codec8Record()])
    out = codec.feed(bytes(21) + good)
    assert [m.kind for m in out[:-2]] == ["decode"]
    assert out[-2:] == [Uplink("location", CODEC8_DATA), Reply(b"\x00\x00\x00\x01")]


def test_unknown_codec_id_is_garbage():
    codec = identified()
    [bad] = codec.feed(wrap(b"\x42\x01\x01"))
    assert bad.kind == "decode"


def test_oversized_packet_is_fatal_and_never_buffered():
    codec = identified(maxFrame=200)
    header = b"\x00\x00\x00\x00" + struct.pack(">I", 189) + b"\x08"  # 189 + 12 bytes: one too many
    [bad] = codec.feed(header)
    assert bad == BadFrame("too long", bad.error, True)
    assert len(codec._buf) == 0
    assert codec.feed(b"\x01" * 500 + b"\xff") == []
    assert len(codec._buf) == 0


def test_identification_longer_than_the_limit_is_fatal():
    codec = TeltonikaCodec(16)
    [bad] = codec.feed(HELLO[:2])
    assert bad.kind == "too long" and bad.fatal


def test_largest_packet_accepted_and_buffer_bounded():
    records = [gps(ms=T0 + i) + bytes(6) for i in range(12)]  # 12 * 30 + 3 + 12 = 375 bytes
    frame = avl(0x08, records)
    codec = identified(maxFrame=len(frame))
    out = []
    for i in range(0, len(frame), 7):
        out += codec.feed(frame[i:i + 7])
        assert len(codec._buf) <= len(frame)
    assert out[-1] == Reply(b"\x00\x00\x00\x0c")
    assert len(out) == 13


# A stream of every kind of packet a device sends, built by the simulator and by hand.

fixes = st.tuples(
    st.floats(-90, 90), st.floats(-180, 180), st.integers(0, 300), st.integers(0, 359),
    st.integers(T0 - 10**10, T0 + 10**10), st.integers(0, 30),
    st.dictionaries(st.integers(1, 255), st.integers(0, 2**31), max_size=8),
)


@st.composite
def packets(draw):
    kind = draw(st.sampled_from(["8", "8E", "16", "ff", "response"]))
    if kind == "ff":
        return b"\xff"
    if kind == "response":
        return response(draw(st.binary(max_size=60)))
    lat, lon, speed, course, ms, satellites, io = draw(fixes)
    codec = {"8": 0x08, "8E": 0x8E, "16": 0x10}[kind]
    count = draw(st.integers(1, 3))
    records = [
        encodeRecord(codec, ms, lat, lon, angle=course, speed=speed, satellites=satellites, io=io)
        for _ in range(count)
    ]
    return avlPacket(codec, records)


@settings(max_examples=150, deadline=None)
@given(st.lists(packets(), max_size=8), st.data())
def test_split_anywhere_decodes_the_same(frames, data):
    stream = HELLO + b"".join(frames)
    whole = TeltonikaCodec(MAX).feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    codec = TeltonikaCodec(MAX)
    pieces = []
    last = 0
    for cut in cuts + [len(stream)]:
        pieces += codec.feed(stream[last:cut])
        last = cut
    assert pieces == whole
    assert not any(isinstance(m, BadFrame) for m in whole)
    assert len([m for m in whole if isinstance(m, Reply)]) == len([f for f in frames if len(f) > 1 and f[8] != 0x0C])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(packets(), st.binary(max_size=20).map(lambda b: b.translate(_NO_START))), max_size=6))
def test_garbage_between_frames_changes_nothing_else(items):
    clean = TeltonikaCodec(MAX)
    dirty = TeltonikaCodec(MAX)
    expected = clean.feed(HELLO + b"".join(frame for frame, _ in items))
    got = dirty.feed(HELLO)
    for frame, junk in items:
        got += dirty.feed(junk)
        got += dirty.feed(frame)
    assert [m for m in got if not isinstance(m, BadFrame)] == expected
    bad = [m for m in got if isinstance(m, BadFrame)]
    assert all(m.kind == "decode" and not m.fatal for m in bad)
    assert len(bad) == len([junk for _, junk in items if junk])


# Junk that cannot begin a packet: no 0x00 (preamble) and no 0xFF (keep-alive).
_NO_START = bytes.maketrans(b"\x00\xff", b"\x01\xfe")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=10), st.booleans(), st.integers(17, 300))
def test_random_bytes_never_raise(chunks, hello, maxFrame):
    codec = TeltonikaCodec(maxFrame)
    if hello:
        codec.feed(HELLO)
    for chunk in chunks:
        out = codec.feed(chunk)
        assert all(isinstance(m, (Identify, Heartbeat, Answer, Uplink, Reply, BadFrame)) for m in out)
        assert len(codec._buf) <= maxFrame


@settings(max_examples=200, deadline=None)
@given(st.lists(packets(), min_size=1, max_size=5), st.data())
def test_corrupted_stream_never_raises(frames, data):
    """Valid packets with bytes changed, cut or repeated: only messages, the buffer bounded."""
    stream = bytearray(HELLO + b"".join(frames))
    for _ in range(data.draw(st.integers(1, 4))):
        if not stream:  # everything was cut
            break
        i = data.draw(st.integers(0, len(stream) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "repeat"]))
        if action == "flip":
            stream[i] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del stream[i:i + data.draw(st.integers(1, 20))]
        else:
            stream[i:i] = stream[i:i + data.draw(st.integers(1, 20))]
    codec = TeltonikaCodec(2048)
    out = []
    for i in range(0, len(stream), 50):
        out += codec.feed(bytes(stream[i:i + 50]))
        assert len(codec._buf) <= 2048
    assert all(isinstance(m, (Identify, Heartbeat, Answer, Uplink, Reply, BadFrame)) for m in out)


# The simulated device talking to the codec.


def test_simulator_identifies_and_is_accepted():
    device = TeltonikaDevice(IMEI)
    codec = TeltonikaCodec(MAX)
    assert codec.feed(device.hello()) == [Identify(IMEI, reply=b"\x01")]
    assert device.accepted is None
    assert device.feed(b"\x01") == []
    assert device.accepted is True
    assert codec.feed(device.heartbeat()) == [Heartbeat()]


def test_simulator_refused():
    device = TeltonikaDevice(IMEI)
    codec = TeltonikaCodec(MAX)
    codec.feed(device.hello())
    device.feed(codec.refused(401, "not on the allow-list"))
    assert device.accepted is False


def test_simulator_position_decoded_and_acked():
    device = TeltonikaDevice(IMEI)
    codec = TeltonikaCodec(MAX)
    device.feed(codec.feed(device.hello())[0].reply)
    frame = device.position(-33.8688, 151.2093, speed=61.6, course=359.6, time=T0 / 1000)
    assert frame[8] == 0x08
    [up, ack] = codec.feed(frame)
    assert up.type == "location"
    assert {k: up.data[k] for k in ("lat", "lon", "time", "valid", "speed", "course")} == {
        "lat": -33.8688, "lon": 151.2093, "time": "2025-11-25T16:29:05Z", "valid": True,
        "speed": 62.0, "course": 0.0,
    }
    assert up.data["ignition"] is True and up.data["motion"] is True
    assert device.feed(ack.reply) == []
    assert device.acks == [1]


def test_simulator_codec8e():
    device = TeltonikaDevice(IMEI, codec8e=True)
    frame = device.position(1.5, 2.5, io={239: 0, 256: b"WVWZZZ1JZXW000001"})
    assert frame[8] == 0x8E
    [up, ack] = identified().feed(frame)
    assert up.data["io"] == {"239": 0, "256": b"WVWZZZ1JZXW000001".hex()}
    assert ack == Reply(b"\x00\x00\x00\x01")
    assert TeltonikaDevice(IMEI).position(1, 2, codec8e=True)[8] == 0x8E


def converse(device: TeltonikaDevice, codec: TeltonikaCodec, instruct: str) -> list:
    frame, key = codec.encodeCommand(instruct, None, 1)
    assert key is None
    out = []
    for answer in device.feed(frame):
        out += codec.feed(answer)
    return out


def test_simulator_answers_commands():
    device = TeltonikaDevice(IMEI)
    codec = identified()
    codec.feed(device.position(54.6872, 25.2797, speed=10))
    assert codec.ready
    [info] = converse(device, codec, "getinfo")
    assert isinstance(info, Answer) and info.key is None
    assert info.data.startswith("RTC:") and "SAT:9" in info.data and "REC:1" in info.data
    assert converse(device, codec, "setdigout 10") == [
        Answer(None, "DOUT1:1 Timeout:INFINITY DOUT2:0 Timeout:INFINITY")
    ]
    assert converse(device, codec, "getio") == [Answer(None, "DI1:0 DI2:0 DI3:0 AIN1:0 AIN2:0 DO1:1 DO2:0")]
    [ver] = converse(device, codec, "getver")
    assert f"IMEI:{IMEI}" in ver.data
    assert converse(device, codec, "cpureset") == [Answer(None, "cpureset")]
    assert device.commands == ["getinfo", "setdigout 10", "getio", "getver", "cpureset"]


def test_simulator_replies_override():
    device = TeltonikaDevice(IMEI, replies={"getgps": "GPS:0"})
    assert converse(device, identified(), "getgps") == [Answer(None, "GPS:0")]


def test_silent_simulator_records_but_never_answers():
    device = TeltonikaDevice(IMEI, silent=True)
    assert converse(device, identified(), "getinfo") == []
    assert device.commands == ["getinfo"]


def test_simulator_ignores_a_command_with_a_bad_crc():
    device = TeltonikaDevice(IMEI)
    frame, _ = TeltonikaCodec(MAX).encodeCommand("getinfo", None, 1)
    assert device.feed(frame[:-1] + bytes((frame[-1] ^ 1,))) == []
    assert device.commands == []


def test_simulator_takes_acks_and_commands_in_one_read():
    device = TeltonikaDevice(IMEI)
    codec = TeltonikaCodec(MAX)
    hub = codec.feed(device.hello())[0].reply
    hub += codec.feed(device.position(1.0, 2.0))[-1].reply
    hub += codec.encodeCommand("getio", None, 1)[0]
    answers = []
    for i in range(len(hub)):
        answers += device.feed(hub[i:i + 1])
    assert device.accepted is True and device.acks == [1]
    assert [m for a in answers for m in codec.feed(a)] == [Answer(None, "DI1:0 DI2:0 DI3:0 AIN1:0 AIN2:0 DO1:0 DO2:0")]
