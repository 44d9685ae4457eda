"""
The GT06 codec on bytes (sans-IO), and the simulated GT06 tracker talking to it.

Frames and acks are built here from the Concox GT06 protocol document, with a CRC written
out from the document's definition (CRC-ITU: reflected 0x1021, initial and final 0xFFFF).
"""

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devicehub.devices.codec import Answer, BadFrame, Heartbeat, Identify, Reply, UnsupportedCommand, Uplink
from devicehub.devices.codecs.gt06 import Gt06Codec
from devicehub.devices.simulate.gt06 import Gt06Device

IMEI = "356307042441013"
MAX = 4096


def crcItu(data: bytes) -> int:
    """CRC-16/X-25 bit by bit, as the document defines it."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def build(proto: int, content: bytes, serial: int, long: bool = False, length: int | None = None) -> bytes:
    """A frame as the document draws it; C{length} overrides LEN (as some firmware gets it wrong)."""
    size = len(content) + 5 if length is None else length
    body = (size.to_bytes(2, "big") if long else bytes((size,))) + bytes((proto,)) + content + serial.to_bytes(2, "big")
    return (b"\x79\x79" if long else b"\x78\x78") + body + crcItu(body).to_bytes(2, "big") + b"\r\n"


def ackOf(proto: int, serial: int) -> bytes:
    """The hub's ack: 78 78 05 PROTO SERIAL CRC 0D 0A."""
    body = bytes((0x05, proto)) + serial.to_bytes(2, "big")
    return b"\x78\x78" + body + crcItu(body).to_bytes(2, "big") + b"\r\n"


def gps(y=26, mo=11, d=25, h=16, mi=29, s=5, sats=9, lat=0, lon=0, speed=0, flags=0x1400) -> bytes:
    """The 18-byte GPS block; C{lat}/C{lon} in the document's units (minutes x 30000)."""
    return (bytes((y, mo, d, h, mi, s, 0xC0 | sats)) + lat.to_bytes(4, "big") + lon.to_bytes(4, "big")
            + bytes((speed,)) + flags.to_bytes(2, "big"))


CELL = (460).to_bytes(2, "big") + b"\x00" + (0x287D).to_bytes(2, "big") + (0x1F71).to_bytes(3, "big")
CELL_DATA = {"mcc": 460, "mnc": 0, "lac": 0x287D, "cid": 0x1F71}


def codec(maxFrame: int = MAX) -> Gt06Codec:
    return Gt06Codec(maxFrame)


def loggedIn(maxFrame: int = MAX) -> Gt06Codec:
    c = codec(maxFrame)
    assert c.feed(build(0x01, bytes.fromhex("0" + IMEI), 1)) == [Identify(IMEI, reply=ackOf(0x01, 1))]
    return c


# -- checksums


def test_reference_crc_is_crc_x25():
    # The catalogue check value of CRC-16/X-25.
    assert crcItu(b"123456789") == 0x906E
    device = Gt06Device(IMEI)
    for frame in [device.hello(), device.heartbeat(), device.position(1.5, 2.5), device.alarm("sos")]:
        assert int.from_bytes(frame[-4:-2], "big") == crcItu(frame[2:-4])
        assert frame[:2] == b"\x78\x78" and frame[-2:] == b"\r\n" and frame[2] == len(frame) - 5


# -- login


def test_login_identifies_with_the_fifteen_digits_and_is_acked():
    c = codec()
    login = build(0x01, bytes.fromhex("0" + IMEI), 0x0102)
    assert c.feed(login) == [Identify(IMEI, reply=ackOf(0x01, 0x0102))]
    assert c.imei == IMEI


def test_login_with_type_and_time_zone_reads_later_times_as_local():
    # Type 0x100B, GMT+8:00 (800 << 4, bit 3 clear: east).
    c = codec()
    messages = c.feed(build(0x01, bytes.fromhex("0" + IMEI) + b"\x10\x0b" + (800 << 4).to_bytes(2, "big"), 1))
    assert messages == [Identify(IMEI, reply=ackOf(0x01, 1))]
    [uplink] = c.feed(build(0x12, gps(26, 3, 1, 8, 0, 0) + CELL, 2))
    assert uplink.data["time"] == "2026-03-01T00:00:00Z"
    # GMT-4:30: bit 3 set (west).
    c = codec()
    c.feed(build(0x01, bytes.fromhex("0" + IMEI) + b"\x10\x0b" + ((430 << 4) | 0x08).to_bytes(2, "big"), 1))
    [uplink] = c.feed(build(0x12, gps(26, 3, 1, 20, 0, 0) + CELL, 2))
    assert uplink.data["time"] == "2026-03-02T00:30:00Z"


def test_login_with_type_only_keeps_utc():
    c = codec()
    assert c.feed(build(0x01, bytes.fromhex("0" + IMEI) + b"\x36\x05", 7)) == [Identify(IMEI, reply=ackOf(0x01, 7))]
    [uplink] = c.feed(build(0x12, gps(26, 3, 1, 8, 0, 0) + CELL, 8))
    assert uplink.data["time"] == "2026-03-01T08:00:00Z"


def test_identify_once_then_a_repeated_login_is_only_acked():
    c = loggedIn()
    assert c.feed(build(0x01, bytes.fromhex("0" + IMEI), 9)) == [Reply(ackOf(0x01, 9))]


def test_a_login_as_another_device_is_fatal():
    c = loggedIn()
    [bad] = c.feed(build(0x01, bytes.fromhex("0123456789012345"), 2))
    assert isinstance(bad, BadFrame) and bad.kind == "identity" and bad.fatal


def test_a_login_too_short_is_a_decode_error():
    [bad] = codec().feed(build(0x01, bytes.fromhex("0123456789"), 1))
    assert isinstance(bad, BadFrame) and bad.kind == "decode" and not bad.fatal


def test_frames_before_the_login_are_emitted_for_the_session_to_refuse():
    c = codec()
    [beat] = c.feed(build(0x13, bytes((0x46, 4, 3, 0, 2)), 1))
    assert isinstance(beat, Heartbeat) and beat.reply == ackOf(0x13, 1)
    [login] = c.feed(build(0x01, bytes.fromhex("0" + IMEI), 2))
    assert isinstance(login, Identify)


# -- heartbeats and status


def test_status_packet_is_a_heartbeat_with_the_terminal_information():
    c = loggedIn()
    # Defense on, ACC on, charging, GPS on, oil/electricity connected; level 4; GSM 3; no alarm; English.
    assert c.feed(build(0x13, bytes((0b0100_0111, 4, 3, 0x00, 0x02)), 0x0A0B)) == [Heartbeat(
        ackOf(0x13, 0x0A0B),
        {"defense": True, "acc": True, "charging": True, "gps": True, "blocked": False,
         "voltageLevel": 4, "battery": 66, "gsm": 3},
    )]


def test_status_alarm_bits_and_alarm_byte():
    c = loggedIn()
    # Bits 3-5 = 100: SOS; oil and electricity cut (bit 7); level 6, GSM 0.
    [beat] = c.feed(build(0x13, bytes((0b1010_0000, 6, 0, 0x00, 0x02)), 2))
    assert beat.status == {"defense": False, "acc": False, "charging": False, "gps": False, "blocked": True,
                           "alarm": "sos", "voltageLevel": 6, "battery": 100, "gsm": 0}
    # The alarm byte (0x02 power cut) names the alarm; bits 3-5 = 011 (low battery) give way to it.
    [beat] = c.feed(build(0x13, bytes((0b0001_1000, 1, 2, 0x02, 0x02)), 3))
    assert beat.status["alarm"] == "powerCut" and beat.status["alarmCode"] == 2 and beat.status["battery"] == 16


def test_status_packet_of_another_layout_is_published_as_hex():
    c = loggedIn()
    content = bytes(range(1, 15))
    [beat] = c.feed(build(0x13, content, 4))
    assert beat == Heartbeat(ackOf(0x13, 4), {"hex": content.hex()})


def test_heartbeat_0x23_has_voltage_and_gsm():
    c = loggedIn()
    # Terminal information, voltage 4.05 V, GSM 4, language.
    [beat] = c.feed(build(0x23, bytes((0x46,)) + (405).to_bytes(2, "big") + bytes((4, 0x00, 0x02)), 0x0033))
    assert beat == Heartbeat(ackOf(0x23, 0x0033), {"defense": False, "acc": True, "charging": True, "gps": True,
                                                  "blocked": False, "voltage": 4.05, "gsm": 4})


def test_bare_heartbeat_0x08_is_not_acked():
    c = loggedIn()
    assert c.feed(b"\x78\x78\x01\x08\r\n") == [Heartbeat()]


# -- positions and alarms


def test_position_0x12_is_a_location_and_is_acked():
    c = loggedIn()
    # 22.5 N, 114.25 E, 60 km/h, course 271, positioned, real-time.
    lat, lon = round(22.5 * 1_800_000), round(114.25 * 1_800_000)
    frame = build(0x12, gps(26, 11, 25, 16, 29, 5, 7, lat, lon, 60, 0x1400 | 271) + CELL, 0x1234)
    assert c.feed(frame) == [Uplink("location", {
        "lat": 22.5, "lon": 114.25, "time": "2026-11-25T16:29:05Z", "valid": True, "speed": 60,
        "course": 271, "satellites": 7, **CELL_DATA,
    }, ackOf(0x12, 0x1234))]


@pytest.mark.parametrize("flags, lat, lon", [
    (0x1400, 45.0, 7.5),     # north, east
    (0x1000, -45.0, 7.5),    # south (bit 10 clear)
    (0x1C00, 45.0, -7.5),    # north, west (bit 11)
    (0x1800, -45.0, -7.5),   # south, west
])
def test_position_hemispheres(flags, lat, lon):
    c = loggedIn()
    frame = build(0x12, gps(lat=45 * 1_800_000, lon=round(7.5 * 1_800_000), flags=flags) + CELL, 3)
    [uplink] = c.feed(frame)
    assert (uplink.data["lat"], uplink.data["lon"], uplink.data["valid"]) == (lat, lon, True)


def test_position_at_zero_has_no_negative_zero():
    [uplink] = loggedIn().feed(build(0x12, gps(lat=0, lon=0, flags=0x0800) + CELL, 3))
    assert json.dumps([uplink.data["lat"], uplink.data["lon"]]) == "[0.0, 0.0]"


def test_position_without_fix_and_with_acc_flags():
    c = loggedIn()
    # Not positioned (bit 12 clear); bits 14-15: ACC state given, ACC on.
    [uplink] = c.feed(build(0x12, gps(flags=0xC400 | 90) + CELL, 4))
    assert uplink.data["valid"] is False and uplink.data["acc"] is True and uplink.data["course"] == 90


def test_position_0x10_is_gps_only():
    c = loggedIn()
    [uplink] = c.feed(build(0x10, gps(lat=1_800_000, lon=3_600_000, speed=5, flags=0x1400 | 10), 5))
    assert uplink == Uplink("location", {"lat": 1.0, "lon": 2.0, "time": "2026-11-25T16:29:05Z", "valid": True,
                                         "speed": 5, "course": 10, "satellites": 9}, ackOf(0x10, 5))


def test_position_0x11_has_two_byte_mnc_and_four_byte_cell():
    c = loggedIn()
    cell = (302).to_bytes(2, "big") + (720).to_bytes(2, "big") + (0x75DF).to_bytes(2, "big")
    cell += (0x84890C).to_bytes(4, "big")
    [uplink] = c.feed(build(0x11, gps() + cell, 6))
    assert uplink.type == "location" and uplink.reply == ackOf(0x11, 6)
    cellData = {k: uplink.data[k] for k in ("mcc", "mnc", "lac", "cid")}
    assert cellData == {"mcc": 302, "mnc": 720, "lac": 0x75DF, "cid": 0x84890C}


def test_position_0x22_has_acc_upload_mode_and_mileage():
    c = loggedIn()
    # ACC on, upload mode 0x05, re-upload 1, mileage 4 bytes.
    [uplink] = c.feed(build(0x22, gps() + CELL + bytes((1, 5, 1)) + (123456).to_bytes(4, "big"), 0x0213))
    assert uplink.reply == ackOf(0x22, 0x0213)
    assert uplink.type == "location"
    assert {k: uplink.data[k] for k in ("acc", "uploadMode", "reupload", "mileage")} == {
        "acc": True, "uploadMode": 5, "reupload": True, "mileage": 123456}


def alarmContent(code: int, info: int = 0x46, level: int = 5, gsm: int = 4) -> bytes:
    return gps(lat=1_800_000, lon=1_800_000) + bytes((len(CELL) + 1,)) + CELL + bytes((info, level, gsm, code, 0x02))


@pytest.mark.parametrize("code, name", [(0x01, "sos"), (0x02, "powerCut"), (0x03, "vibration"),
                                        (0x04, "geofenceEnter"), (0x05, "geofenceExit"), (0x06, "overspeed")])
def test_alarm_packet_0x16_is_an_alarm_with_the_position(code, name):
    c = loggedIn()
    [uplink] = c.feed(build(0x16, alarmContent(code), 0x0040))
    assert uplink == Uplink("alarm", {
        "lat": 1.0, "lon": 1.0, "time": "2026-11-25T16:29:05Z", "valid": True, "speed": 0, "course": 0,
        "satellites": 9, **CELL_DATA, "defense": False, "acc": True, "charging": True, "gps": True,
        "blocked": False, "voltageLevel": 5, "battery": 83, "gsm": 4, "alarmCode": code, "alarm": name,
    }, ackOf(0x16, 0x0040))


def test_alarm_packet_without_an_alarm_is_a_location():
    c = loggedIn()
    [uplink] = c.feed(build(0x16, alarmContent(0x00), 1))
    assert uplink.type == "location" and "alarm" not in uplink.data and uplink.reply == ackOf(0x16, 1)
    # An alarm code the document's list does not name: kept as a number.
    [uplink] = c.feed(build(0x16, alarmContent(0x7A), 2))
    assert uplink.type == "location" and uplink.data["alarmCode"] == 0x7A
    # 0xFE / 0xFF are ACC on / off events.
    [uplink] = c.feed(build(0x16, alarmContent(0xFF), 3))
    assert uplink.type == "location" and uplink.data["acc"] is False and "alarmCode" not in uplink.data


def test_alarm_from_the_information_bits():
    c = loggedIn()
    # Bits 3-5 = 010: power cut; alarm byte 0.
    [uplink] = c.feed(build(0x16, alarmContent(0x00, info=0b0101_0000), 4))
    assert uplink.type == "alarm" and uplink.data["alarm"] == "powerCut"


def test_alarm_packets_0x26_and_0x27():
    c = loggedIn()
    [uplink] = c.feed(build(0x26, alarmContent(0x13), 5))
    assert uplink.type == "alarm" and uplink.data["alarm"] == "tampering" and uplink.reply == ackOf(0x26, 5)
    # 0x27: alarm, language (2 bytes), then the geofence number.
    content = gps() + bytes((9,)) + CELL + bytes((0x46, 6, 4, 0x05, 0x00, 0x02, 3))
    [uplink] = c.feed(build(0x27, content, 6))
    assert uplink.type == "alarm" and uplink.data["alarm"] == "geofenceExit" and uplink.data["geofence"] == 3
    assert uplink.reply == ackOf(0x27, 6)


def test_alarm_packet_without_a_cell():
    c = loggedIn()
    content = gps() + b"\x00" + bytes((0x46, 6, 4, 0x01, 0x02))
    [uplink] = c.feed(build(0x16, content, 7))
    assert uplink.type == "alarm" and uplink.data["alarm"] == "sos" and "mcc" not in uplink.data


def test_position_with_an_impossible_date_has_no_time():
    c = loggedIn()
    [uplink] = c.feed(build(0x12, gps(0, 0, 0, 0, 0, 0) + CELL, 8))
    assert uplink.type == "location" and "time" not in uplink.data


def test_position_that_does_not_fit_the_layout_is_raw_but_acked():
    c = loggedIn()
    # A latitude beyond 90 degrees, and a packet cut short: both still owed their ack.
    bad = build(0x12, gps(lat=91 * 1_800_000) + CELL, 9)
    short = build(0x12, b"", 10)
    assert c.feed(bad + short) == [Uplink("raw", {"hex": bad.hex()}, ackOf(0x12, 9)),
                                   Uplink("raw", {"hex": short.hex()}, ackOf(0x12, 10))]


def test_other_packets_are_raw_and_not_acked():
    c = loggedIn()
    info = build(0x94, bytes((0x00, 0x01, 0x95)), 0x22, long=True)  # 79 79 information packet
    time = build(0x8A, b"", 0x06)                                   # time request
    query = build(0x81, b"\x05\x00\x00\x00\x00A", 0x07)             # a device-sent 0x81
    assert c.feed(info + time + query) == [Uplink("raw", {"hex": info.hex()}), Uplink("raw", {"hex": time.hex()}),
                                           Uplink("raw", {"hex": query.hex()})]


# -- commands and replies


def commandFrame(text: bytes, flag: int, serial: int) -> bytes:
    """The document's server command: LEN 80 CMDLEN SERVERFLAG(4) COMMAND SERIAL CRC."""
    return build(0x80, bytes((len(text) + 4,)) + flag.to_bytes(4, "big") + text, serial)


def test_command_bytes_and_key():
    c = loggedIn()
    assert c.encodeCommand("Relay,1#", None, 0x01020304) == (commandFrame(b"Relay,1#", 0x01020304, 0), 0x01020304)
    # The hub's serial counts this connection's commands.
    top = 2_147_483_647
    assert c.encodeCommand("DYD,000000#", None, top) == (commandFrame(b"DYD,000000#", top, 1), top)
    assert codec().encodeCommand("WHERE#", None, 5)[0] == commandFrame(b"WHERE#", 5, 0)


def test_longest_command():
    text = "A" * 245
    data, key = codec().encodeCommand(text, None, 1)
    assert data == commandFrame(text.encode(), 1, 0) and data[2] == 255


@pytest.mark.parametrize("instruct, data", [
    ("Relay,1#", "x"), ("Relay,1#", ["a"]), ("Relay,1#", {}), ("Relay,1#", 0),
    ("Relé,1#", None), ("", None), ("A" * 246, None),
])
def test_unsupported_commands(instruct, data):
    with pytest.raises(UnsupportedCommand):
        codec().encodeCommand(instruct, data, 1)


def test_reply_0x15_answers_by_server_flag_and_is_acked():
    c = loggedIn()
    text = b"Cut off the fuel supply: Success!"
    frame = build(0x15, bytes((len(text) + 4,)) + (77).to_bytes(4, "big") + text + b"\x00\x02", 0x013B)
    assert c.feed(frame) == [Answer(77, text.decode(), ackOf(0x15, 0x013B), fallback=True)]


def test_reply_0x15_with_no_command_length_and_padding():
    # Some firmware sends 0 as the command length and pads the text with NULs.
    c = loggedIn()
    content = b"\x00" + bytes(4) + b"DYD=Success!" + bytes(20) + b"\x00\x01"
    assert c.feed(build(0x15, content, 9)) == [Answer(0, "DYD=Success!", ackOf(0x15, 9), fallback=True)]


def test_reply_0x15_without_flag_is_a_decode_error():
    [bad] = loggedIn().feed(build(0x15, b"\x04\x00", 9))
    assert isinstance(bad, BadFrame) and bad.kind == "decode"


@pytest.mark.parametrize("encoding, data", [
    (1, "Battery:4.05V,NORMAL;".encode("ascii")),
    (2, "Relé: OK ✓".encode("utf-16-be")),
])
def test_reply_0x21_ascii_and_utf16_is_not_acked(encoding, data):
    c = loggedIn()
    frame = build(0x21, (0xCAFE).to_bytes(4, "big") + bytes((encoding,)) + data, 0x23, long=True)
    assert c.feed(frame) == [Answer(0xCAFE, data.decode("ascii" if encoding == 1 else "utf-16-be"), b"", fallback=True)]


def test_interface_constants():
    c = codec()
    assert Gt06Codec.name == "gt06" and Gt06Codec.serial is True
    assert c.lane("Relay,1#") is None and c.lane("WHERE#") is None
    assert c.ready is True
    assert c.refused(401, "not allowed") == b"" and c.error("bad") == b""


# -- framing


def test_checksum_failure_is_dropped_and_the_next_frame_decodes():
    c = loggedIn()
    good = build(0x13, bytes((0x46, 4, 3, 0, 2)), 5)
    broken = bytearray(good)
    broken[-3] ^= 0xFF
    messages = c.feed(bytes(broken) + good)
    assert isinstance(messages[0], BadFrame) and messages[0].kind == "checksum" and not messages[0].fatal
    assert isinstance(messages[1], Heartbeat) and messages[1].reply == ackOf(0x13, 5)
    assert len(messages) == 2
    # A flipped content byte too.
    broken = bytearray(good)
    broken[5] ^= 0x01
    [bad] = c.feed(bytes(broken))
    assert bad.kind == "checksum"


def test_length_not_counting_the_crc():
    # LEN two short: the frame ends two bytes after where LEN says.
    c = loggedIn()
    frame = build(0x13, bytes((0x46, 4, 3, 0, 2)), 6, length=8)
    assert c.feed(frame) == [Heartbeat(ackOf(0x13, 6), {"defense": False, "acc": True, "charging": True, "gps": True,
                                                        "blocked": False, "voltageLevel": 4, "battery": 66, "gsm": 3})]


def test_length_too_long_with_a_right_crc_is_split_at_once():
    # The device waits for its ack: the hub can't wait for bytes LEN promises.
    c = codec()
    frame = build(0x01, bytes.fromhex("0" + IMEI), 1, length=40)
    assert c.feed(frame) == [Identify(IMEI, reply=ackOf(0x01, 1))]
    assert c.buffered == 0


def test_length_too_short_splits_on_0d0a():
    c = loggedIn()
    position = build(0x12, gps() + CELL, 7, length=0)
    heartbeat = build(0x13, bytes((0x46, 4, 3, 0, 2)), 8, length=3)
    messages = c.feed(position + heartbeat)
    assert [type(m) for m in messages] == [Uplink, Heartbeat]
    assert messages[0].reply == ackOf(0x12, 7) and messages[1].reply == ackOf(0x13, 8)


def test_length_too_long_with_a_bad_crc_is_dropped_when_the_next_frame_comes():
    c = loggedIn()
    broken = bytearray(build(0x13, bytes((0x46, 4, 3, 0, 2)), 9, length=60))
    broken[-3] ^= 0xFF
    assert c.feed(bytes(broken)) == []
    assert c.buffered == len(broken)
    good = build(0x12, gps() + CELL, 10)
    messages = c.feed(good * 3)
    assert messages[0].kind == "checksum"
    assert [m.reply for m in messages[1:]] == [ackOf(0x12, 10)] * 3


def test_garbage_between_frames_is_skipped():
    c = loggedIn()
    a = build(0x13, bytes((0x46, 4, 3, 0, 2)), 11)
    b = build(0x12, gps() + CELL, 12)
    messages = c.feed(b"\x00\x01junk" + a + b"\r\n\x78" + b + b"more junk\x78")
    assert [type(m) for m in messages] == [BadFrame, Heartbeat, BadFrame, Uplink, BadFrame]
    assert all(m.kind == "decode" and not m.fatal for m in messages if isinstance(m, BadFrame))
    assert c.buffered == 1  # the last 0x78 may start a frame
    assert c.feed(b"\x78\x01\x08\r\n") == [Heartbeat()]


def test_torn_frame_before_a_whole_one_is_skipped_at_once():
    # A frame cut short (its LEN promises more) then a whole one: the whole one is not held back.
    c = loggedIn()
    torn = build(0x12, gps() + CELL, 15)[:14]
    whole = build(0x13, bytes((0x46, 4, 3, 0, 2)), 16)
    messages = c.feed(torn + whole)
    assert [type(m) for m in messages] == [BadFrame, Heartbeat]
    assert messages[0].kind == "decode" and messages[1].reply == ackOf(0x13, 16)
    assert c.buffered == 0


def test_searching_a_frame_end_is_bounded_however_bytes_trickle(monkeypatch):
    # A frame whose LEN promises 60 000 bytes, full of 0D 0A, sent a byte at a time:
    # a bounded number of CRCs are tried, not one per 0D 0A per read.
    from devicehub.devices.codecs.gt06 import framing as gt06

    calls = []
    original = gt06.crcX25

    def counting(data):
        calls.append(len(data))
        return original(data)

    monkeypatch.setattr(gt06, "crcX25", counting)
    c = loggedIn(maxFrame=65536)
    stream = b"\x79\x79" + (60000 - 6).to_bytes(2, "big") + b"\x94" + b"\r\n" * 3000
    for i in range(len(stream)):
        assert c.feed(stream[i:i + 1]) == []
    assert len(calls) <= 2 * gt06.MAX_CHECKS
    assert c.buffered == len(stream)


def test_frames_split_across_reads():
    c = loggedIn()
    stream = build(0x13, bytes((0x46, 4, 3, 0, 2)), 13) + build(0x12, gps() + CELL, 14)
    messages = []
    for i in range(len(stream)):
        messages += c.feed(stream[i:i + 1])
    assert [m.reply for m in messages] == [ackOf(0x13, 13), ackOf(0x12, 14)]


def test_frame_declaring_more_than_max_frame_is_fatal():
    c = loggedIn(maxFrame=64)
    frame = build(0x94, bytes(100), 1, long=True)
    messages = c.feed(frame[:10])
    assert messages == [BadFrame("too long", messages[0].error, fatal=True)]
    assert c.buffered == 0
    assert c.feed(build(0x13, bytes((0x46, 4, 3, 0, 2)), 2)) == []  # nothing after a fatal frame


def test_no_frame_end_within_max_frame_is_fatal():
    c = loggedIn(maxFrame=64)
    # LEN says 10 bytes; nothing ends it: at most 64 bytes are held, then it's fatal.
    head = b"\x78\x78\x05\x12"
    assert c.feed(head) == []
    for _ in range(59):
        assert c.feed(b"\x00") == []
        assert c.buffered <= 64
    [fatal] = c.feed(b"\x00")
    assert fatal.kind == "too long" and fatal.fatal


def test_frame_of_exactly_max_frame_bytes():
    content = bytes(64 - 10)
    frame = build(0x94, content, 1)
    assert len(frame) == 64
    assert codec(64).feed(frame) == [Uplink("raw", {"hex": frame.hex()})]


# -- Hypothesis


texts = st.text(st.characters(codec="ascii", exclude_characters="\x00"), min_size=1, max_size=200)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(timezone.utc))


@st.composite
def streams(draw):
    """A stream of valid device frames (after the login) and the messages they must give."""
    device = Gt06Device(IMEI, positionProtocol=draw(st.sampled_from([0x12, 0x22])))
    device.serial = draw(st.integers(0, 0xFFFF))
    frames = [device.hello()]
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["heartbeat", "position", "alarm", "reply", "raw"]))
        if kind == "heartbeat":
            frames.append(device.heartbeat())
        elif kind == "position":
            frames.append(device.position(
                draw(st.floats(-90, 90)), draw(st.floats(-180, 180)), draw(st.floats(0, 255)),
                draw(st.floats(0, 359)), draw(times), valid=draw(st.booleans())))
        elif kind == "alarm":
            frames.append(device.alarm(draw(st.sampled_from(["sos", "powerCut", "vibration", "overspeed"])),
                                       draw(st.floats(-90, 90)), draw(st.floats(-180, 180)), time=draw(times)))
        elif kind == "reply":
            device.utf16 = draw(st.booleans())
            frames.append(device.reply(draw(st.integers(0, 0xFFFFFFFF)), draw(texts)))
        else:
            frames.append(build(0x94, draw(st.binary(max_size=300)), draw(st.integers(0, 0xFFFF)), long=True))
    return frames


@settings(max_examples=150, deadline=None)
@given(streams(), st.data())
def test_stream_split_anywhere_decodes_the_same(frames, data):
    stream = b"".join(frames)
    whole = codec().feed(stream)
    assert len(whole) == len(frames)
    assert not any(isinstance(m, BadFrame) for m in whole)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    c = codec()
    pieces = []
    last = 0
    for cut in cuts + [len(stream)]:
        pieces += c.feed(stream[last:cut])
        last = cut
    assert pieces == whole
    assert c.buffered == 0


# Noise rich in what framing looks for: starts, stops, plausible headers.
pieces = st.one_of(st.binary(max_size=40), st.sampled_from([
    b"\x78\x78", b"\x79\x79", b"\r\n", b"\x78", b"\x79", b"\x78\x78\x05\x12", b"\x79\x79\x00\x10\x94", b"\x78\x78\x00",
    b"\x78\x78\xff", b"\x79\x79\xff\xff",
]))
noises = st.one_of(st.binary(max_size=600), st.lists(pieces, max_size=40).map(b"".join))


@settings(max_examples=400, deadline=None)
@given(noises, st.integers(16, 300), st.data())
def test_random_bytes_never_raise(noise, maxFrame, data):
    c = codec(maxFrame)
    messages = []
    last = 0
    for cut in sorted(data.draw(st.lists(st.integers(0, len(noise)), max_size=8))) + [len(noise)]:
        messages += c.feed(noise[last:cut])
        last = cut
        assert c.buffered <= maxFrame
    for m in messages:
        # Only a bare heartbeat (6 bytes, no CRC) can come out of noise by chance.
        assert isinstance(m, BadFrame) or (m == Heartbeat() and b"\x78\x78\x01\x08\r\n" in noise)
    assert sum(isinstance(m, BadFrame) and m.fatal for m in messages) <= 1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(noises, st.binary(max_size=60)), max_size=6), st.integers(16, 400), st.data())
def test_noise_mixed_with_frames_never_raises(chunks, maxFrame, data):
    device = Gt06Device(IMEI)
    stream = b"".join(noise + device.position(1.0, 2.0)[:data.draw(st.integers(0, 60))] + extra
                      for noise, extra in chunks)
    c = codec(maxFrame)
    for i in range(0, len(stream), 7):
        for m in c.feed(stream[i:i + 7]):
            assert isinstance(m, (BadFrame, Heartbeat, Uplink, Identify, Answer, Reply))
        assert c.buffered <= maxFrame


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), streams())
def test_garbage_before_valid_frames_is_resynchronised(noise, frames):
    # After noise without frame starts, every valid frame still decodes.
    noise = noise.replace(b"\x78", b"").replace(b"\x79", b"")
    messages = codec().feed(noise + b"".join(frames))
    good = [m for m in messages if not isinstance(m, BadFrame)]
    assert len(good) == len(frames)


# -- the simulator and the codec


def test_simulator_logs_in_and_answers_a_command():
    device = Gt06Device(IMEI)
    c = codec()
    [identify] = c.feed(device.hello())
    assert identify.imei == IMEI
    assert device.feed(identify.reply) == [] and device.acks == [(0x01, 1)]
    data, key = c.encodeCommand("Relay,1#", None, 42)
    [answer] = device.feed(data)
    assert device.commands == ["Relay,1#"] and device.flags == [42]
    assert c.feed(answer) == [Answer(key, "Cut off the fuel supply: Success!", ackOf(0x15, 2), fallback=True)]


def test_simulator_heartbeat_position_and_alarm():
    device = Gt06Device(IMEI, positionProtocol=0x22)
    c = codec()
    c.feed(device.hello())
    [beat] = c.feed(device.heartbeat())
    assert isinstance(beat, Heartbeat) and beat.status["battery"] == 100 and beat.status["gsm"] == 4
    when = datetime(2026, 11, 25, 16, 29, 5, tzinfo=timezone.utc)
    [position] = c.feed(device.position(48.858370, 2.294481, speed=42.4, course=180.0, time=when))
    assert position.type == "location" and position.reply == ackOf(0x22, 3)
    assert position.data["lat"] == pytest.approx(48.858370, abs=1e-6)
    assert position.data["lon"] == pytest.approx(2.294481, abs=1e-6)
    assert (position.data["time"], position.data["speed"], position.data["course"]) == ("2026-11-25T16:29:05Z", 42, 180)
    [alarm] = c.feed(device.alarm("powerCut", -33.8568, 151.2153, time=when))
    assert alarm.type == "alarm" and alarm.data["alarm"] == "powerCut" and alarm.data["lat"] == pytest.approx(-33.8568)


def test_simulator_with_time_zone_round_trips_the_time():
    device = Gt06Device(IMEI, typeId=0x100B, timezoneMinutes=-270)
    c = codec()
    c.feed(device.hello())
    [position] = c.feed(device.position(1.0, 1.0, time=datetime(2026, 1, 1, 0, 0, 0)))
    assert position.data["time"] == "2026-01-01T00:00:00Z"


def test_simulator_utf16_and_silent():
    c = loggedIn()
    device = Gt06Device(IMEI, utf16=True)
    data, key = c.encodeCommand("DYD,000000#", None, 7)
    assert device.feed(data[:5]) == []  # a command split across reads
    [answer] = device.feed(data[5:])
    assert c.feed(answer) == [Answer(7, "DYD=Success!", b"", fallback=True)]
    silent = Gt06Device(IMEI, silent=True)
    assert silent.feed(c.encodeCommand("Relay,0#", None, 8)[0]) == []
    assert silent.commands == ["Relay,0#"]


def test_simulator_answers_unknown_commands_with_their_text():
    device = Gt06Device(IMEI)
    [answer] = device.feed(codec().encodeCommand("TIMER,30#", None, 3)[0])
    assert codec().feed(answer) == [Answer(3, "TIMER,30 OK", ackOf(0x15, 1), fallback=True)]
