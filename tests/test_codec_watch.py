"""
The watch codec on bytes: framing, every frame kind, acks byte for byte, commands, answers.

Frames are built from the manufacturer's protocol document ([MF*ID*LEN*CONTENT], LEN in
4 hex digits, 7D 01..05 escapes) with the simulator's builders; expected acks are written
out by hand.
"""

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devicehub.devices.codec import Answer, BadFrame, Heartbeat, Identify, UnsupportedCommand, Uplink
from devicehub.devices.codecs.watch import WatchCodec
from devicehub.devices.simulate.watch import WatchDevice, buildFrame, content

ID = "5500000042"
WHEN = datetime(2026, 11, 25, 16, 29, 5, tzinfo=timezone.utc)


def codec(maxFrame: int = 4096) -> WatchCodec:
    return WatchCodec(maxFrame)


def identified(device: WatchDevice, maxFrame: int = 4096) -> WatchCodec:
    c = codec(maxFrame)
    assert c.feed(device.hello())[0] == Identify(device.imei)
    return c


def frame(body: bytes, mf: str = "SG", ident: str = ID, index: int | None = None, length=None) -> bytes:
    return buildFrame(mf, ident, body, index, length)


# -- identification and heartbeats


def test_the_first_frame_identifies_and_lk_is_answered_with_lk():
    device = WatchDevice(ID, battery=87, steps=1200)
    assert device.hello() == b"[SG*5500000042*000C*LK,1200,0,87]"
    assert codec().feed(device.hello()) == [
        Identify(ID),
        Heartbeat(b"[SG*5500000042*0002*LK]", {"steps": 1200, "rolls": 0, "battery": 87}),
    ]


def test_identify_is_emitted_once_and_a_bare_lk_has_no_status():
    c = codec()
    messages = c.feed(frame(b"LK") + frame(b"LK"))
    assert messages == [Identify(ID), Heartbeat(b"[SG*5500000042*0002*LK]"), Heartbeat(b"[SG*5500000042*0002*LK]")]
    assert c.imei == ID


def test_acks_echo_the_manufacturer_and_the_index():
    device = WatchDevice("357000000000042", manufacturer="ZJ", index=0x34)
    c = codec()
    assert c.feed(device.hello())[1].reply == b"[ZJ*357000000000042*0034*0002*LK]"
    assert c.feed(device.alarm(1.0, 2.0, time=WHEN))[0].reply == b"[ZJ*357000000000042*0035*0002*AL]"
    c3g = codec()
    assert c3g.feed(frame(b"LK", mf="3G"))[1].reply == b"[3G*5500000042*0002*LK]"


@pytest.mark.parametrize("keyword", [b"TKQ", b"TKQ2"])
def test_tkq_is_answered_with_its_keyword(keyword):
    assert codec().feed(frame(keyword))[1] == Heartbeat(b"[SG*5500000042*%04X*%s]" % (len(keyword), keyword))


def test_init_is_answered_init_1_and_published_raw():
    messages = codec().feed(frame(content("INIT", "13800000000", "1", "V1.0")))
    assert messages[1] == Uplink("raw", {"text": "INIT,13800000000,1,V1.0"}, b"[SG*5500000042*0006*INIT,1]")


def test_health_frames_are_status():
    c = codec()
    assert c.feed(frame(content("PULSE", "72")))[1] == Heartbeat(status={"heartRate": 72})
    assert c.feed(frame(content("bphrt", "120", "79", "73", "", "")))[0] == Heartbeat(
        status={"pressureHigh": 120, "pressureLow": 79, "heartRate": 73}
    )
    assert c.feed(frame(content("TEMP", "36.6")))[0] == Heartbeat(status={"temperature": 36.6})
    assert c.feed(frame(content("btemp2", "1", "36.9")))[0] == Heartbeat(status={"temperature": 36.9})
    assert c.feed(frame(content("oxygen", "0", "97")))[0] == Heartbeat(status={"bloodOxygen": 97})


# -- positions and alarms


def test_a_position_is_a_location_uplink_without_an_ack():
    device = WatchDevice(ID, battery=64, steps=321)
    c = identified(device)
    raw = device.position(-33.4803, -70.7630, speed=18.5, course=43.8, time=WHEN)
    assert raw.startswith(b"[SG*5500000042*")
    (message,) = c.feed(raw)
    assert message.type == "location" and message.reply == b""
    assert message.data == {
        "lat": -33.4803, "lon": -70.763, "valid": True, "time": "2026-11-25T16:29:05Z", "speed": 18.5,
        "course": 43.8, "altitude": 0.0, "satellites": 8, "gsm": 100, "battery": 64, "steps": 321,
        "rolls": 0, "status": 0, "cells": [{"mcc": 244, "mnc": 5, "lac": 1001, "cid": 20002, "rssi": 130}],
        "keyword": "UD",
    }


@pytest.mark.parametrize("keyword", ["UD", "UD2", "UD3", "UD_LTE", "UD_WCDMA", "WT"])
def test_every_position_keyword_is_decoded(keyword):
    device = WatchDevice(ID)
    c = identified(device)
    (message,) = c.feed(device.position(48.5, 9.25, time=WHEN, valid=False, keyword=keyword))
    assert message.type == "location"
    assert (message.data["lat"], message.data["lon"], message.data["valid"]) == (48.5, 9.25, False)
    assert message.data["keyword"] == keyword


def test_wifi_names_with_escaped_and_bracketed_characters():
    device = WatchDevice(ID)
    c = identified(device)
    wifi = [("Home, [5G]*", "aa:bb:cc:dd:ee:01", -60), ("Café}", "aa:bb:cc:dd:ee:02", -70)]
    raw = device.position(1.5, 2.5, time=WHEN, wifi=wifi)
    assert b"Home}\x04 }\x025G}\x03}\x05" in raw
    (message,) = c.feed(raw)
    assert message.data["wifi"] == [
        {"name": "Home, [5G]*", "mac": "aa:bb:cc:dd:ee:01", "rssi": -60},
        {"name": "Café}", "mac": "aa:bb:cc:dd:ee:02", "rssi": -70},
    ]


def test_unescaped_brackets_in_a_wifi_name_do_not_split_the_frame():
    body = b"UD,251126,162905,A,1.000000,N,2.000000,E,0.00,0.0,0.0,8,100,50,0,0,00000000,0,1,[x]y,aa:bb:cc:dd:ee:ff,-50"
    (message,) = identified(WatchDevice(ID)).feed(frame(body))
    assert message.data["wifi"] == [{"name": "[x]y", "mac": "aa:bb:cc:dd:ee:ff", "rssi": -50}]


def test_an_unbalanced_bracket_in_a_wifi_name_does_not_swallow_the_next_frame():
    body = b"UD,251126,162905,A,1.000000,N,2.000000,E,0.00,0.0,0.0,8,100,50,0,0,00000000,0,1,x[y,aa:bb:cc:dd:ee:ff,-50"
    c = identified(WatchDevice(ID))
    first = c.feed(frame(body))
    assert first == []  # undecided: the frame could go on
    messages = c.feed(frame(b"LK"))
    assert [type(m) for m in messages] == [Uplink, Heartbeat]
    assert messages[0].data["wifi"][0]["name"] == "x[y"
    stream = frame(body) + frame(b"LK")
    byByte = identified(WatchDevice(ID))
    assert [m for i in range(len(stream)) for m in byByte.feed(stream[i : i + 1])] == messages


@pytest.mark.parametrize(
    "kind, status", [("sos", 0x10000), ("lowBattery", 0x20000), ("geofenceExit", 0x40000),
                     ("geofenceEnter", 0x80000), ("removing", 0x100000), ("fallDown", 0x200000)]
)
def test_an_alarm_is_answered_al_and_published_with_its_name(kind, status):
    device = WatchDevice(ID)
    c = identified(device)
    (message,) = c.feed(device.alarm(22.5, 113.9, kind=kind, time=WHEN))
    assert message.reply == b"[SG*5500000042*0002*AL]"
    assert message.type == "alarm"
    assert message.data["alarm"] == kind and message.data["status"] == status
    assert (message.data["lat"], message.data["lon"], message.data["time"]) == (22.5, 113.9, "2026-11-25T16:29:05Z")


def test_any_al_keyword_is_an_alarm_even_without_a_position():
    c = codec()
    assert c.feed(frame(b"AL"))[1] == Uplink("alarm", {"alarm": "general", "keyword": "AL"}, b"[SG*5500000042*0002*AL]")
    (message,) = c.feed(frame(b"AL_LTE,nonsense"))
    assert message == Uplink("alarm", {"alarm": "general", "keyword": "AL_LTE"}, b"[SG*5500000042*0002*AL]")


def test_an_alarm_bit_wins_over_a_state_bit():
    body = content("AL", "251126", "162905", "V", "0", "N", "0", "E", "0", "0", "0", "0", "0", "50", "0", "0", "00010001")
    assert codec().feed(frame(body))[1].data["alarm"] == "sos"


def test_a_position_that_cannot_be_read_is_a_bad_frame():
    c = codec()
    messages = c.feed(frame(content("UD", "251126", "162905", "A", "north", "N", "2.0", "E")))
    assert messages[0] == Identify(ID)
    assert messages[1].kind == "decode" and not messages[1].fatal
    assert c.feed(frame(content("UD", "1")))[0].kind == "decode"
    (message,) = c.feed(frame(content("UD", "991399", "250000", "A", "95.0", "N", "2.0", "E")))
    assert message.kind == "decode"  # latitude out of range


def test_a_bad_date_leaves_out_the_time_only():
    (message,) = identified(WatchDevice(ID)).feed(frame(content("UD", "000000", "000000", "V", "1.0", "N", "2.0", "E")))
    assert message.data == {"lat": 1.0, "lon": 2.0, "valid": False, "keyword": "UD"}


# -- binary frames


def test_voice_is_unescaped_and_published_as_hex():
    audio = bytes(range(0x28, 0x30)) + b"}[],*\xff"
    c = codec()
    (identify, message) = c.feed(frame(content("TK", audio)))
    assert message == Uplink("raw", {"text": "TK", "hex": audio.hex()})


def test_voice_parts_are_acked_jxtkr_1():
    part = content("JXTK", "0", "watch_1", "1", "2", b"#!AMR\n,*[]}\x00")
    (_, message) = codec().feed(frame(part, mf="ZJ", index=7))
    assert message == Uplink(
        "raw", {"text": "JXTK,0,watch_1,1,2", "hex": b"#!AMR\n,*[]}\x00".hex()}, b"[ZJ*5500000042*0007*0007*JXTKR,1]"
    )


def test_a_photo_is_published_as_hex():
    (_, message) = codec().feed(frame(content("img", "5", "251126162905", b"\xff\xd8\xff,]")))
    assert message == Uplink("raw", {"text": "img,5,251126162905", "hex": b"\xff\xd8\xff,]".hex()})


def test_a_voice_frame_without_its_header_is_a_bad_frame():
    assert codec().feed(frame(content("JXTK", "0", "x")))[1].kind == "decode"


# -- answers


def test_other_keywords_are_answers_keyed_by_their_keyword_in_upper_case():
    c = codec()
    assert c.feed(frame(b"UPLOAD"))[1] == Answer("UPLOAD", [])
    assert c.feed(frame(content("VERNO", "SIM_V1.0")))[0] == Answer("VERNO", ["SIM_V1.0"])
    assert c.feed(frame(b"rcapture"))[0] == Answer("RCAPTURE", [])
    assert c.feed(frame(content("LZ", "", "+1")))[0] == Answer("LZ", ["", "+1"])
    assert c.feed(frame(content("MESSAGE", "a,b", "é")))[0] == Answer("MESSAGE", ["a,b", "é"])
    assert c.feed(frame(content("TK", "1")))[0] == Answer("TK", ["1"])


# -- framing


def test_a_wrong_len_field_is_not_used_for_framing():
    c = codec()
    messages = c.feed(frame(b"LK,1,2,3", length=0x40) + frame(b"TKQ", length=1))
    assert [type(m) for m in messages] == [Identify, Heartbeat, Heartbeat]
    assert messages[2].reply == b"[SG*5500000042*0003*TKQ]"


@pytest.mark.parametrize(
    "raw", [b"[SG*5500000042*00G2*LK]", b"[SG*5500000042*02*LK]", b"[SG*5500000042]", b"[S-G*5500000042*0002*LK]", b"[]"]
)
def test_a_malformed_header_is_a_bad_frame_and_the_next_frame_is_read(raw):
    c = codec()
    messages = c.feed(raw + frame(b"LK"))
    assert messages[0].kind == "decode" and not messages[0].fatal
    assert messages[-1] == Heartbeat(b"[SG*5500000042*0002*LK]")


@pytest.mark.parametrize("raw", [b"[SG*5500000042*0002*]", b"[SG*5500000042*0002*,1]", b"[SG*5500000042*0002*\xc3\xa9]"])
def test_a_frame_without_a_keyword_is_a_bad_frame(raw):
    messages = codec().feed(raw + frame(b"LK"))
    assert messages[0] == Identify(ID)
    assert messages[1] == BadFrame("decode", "missing or non-ASCII keyword")
    assert messages[2] == Heartbeat(b"[SG*5500000042*0002*LK]")


def test_garbage_between_frames_is_one_bad_frame_per_run_and_white_space_is_ignored():
    c = codec()
    stream = b"\r\n" + frame(b"LK") + b"junk" + b" \r\n" + frame(b"TKQ") + b"\r\n" + frame(b"TKQ2")
    messages = []
    for i in range(len(stream)):
        messages += c.feed(stream[i : i + 1])
    assert [type(m) for m in messages] == [Identify, Heartbeat, BadFrame, Heartbeat, Heartbeat]
    assert messages[2] == BadFrame("decode", "7 bytes of garbage before a frame")


def test_an_oversized_frame_is_fatal_and_never_buffered_beyond_max_frame():
    c = codec(maxFrame=64)
    assert c.feed(frame(b"LK"))[1].reply
    chunks = [b"[SG*5500000042*0100*UD,"] + [b"1234567,"] * 10
    messages = []
    for chunk in chunks:
        messages += c.feed(chunk)
        assert len(c._buf) <= 64
    assert messages == [BadFrame("too long", "frame longer than 64 bytes", fatal=True)]
    assert c.feed(frame(b"LK")) == []


def test_a_frame_of_exactly_max_frame_bytes_is_taken():
    raw = frame(b"LK")
    assert len(codec(len(raw)).feed(raw)) == 2
    assert codec(len(raw) - 1).feed(raw) == [BadFrame("too long", f"frame longer than {len(raw) - 1} bytes", fatal=True)]


def test_an_unfinished_frame_is_never_buffered_beyond_max_frame():
    raw = frame(b"X,a[b")
    c = codec(maxFrame=len(raw))
    c.feed(frame(b"LK"))
    messages = []
    for piece in (raw, b"[SG", b"*55"):
        messages += c.feed(piece)
        assert len(c._buf) <= len(raw)
    assert messages == [Answer("X", ["a[b"])]


def test_endless_garbage_is_fatal():
    c = codec(maxFrame=64)
    assert c.feed(b"x" * 64) == []
    assert c.feed(b"x") == [BadFrame("too long", "more than 64 bytes outside any frame", fatal=True)]


# -- identity


@pytest.mark.parametrize("ident", ["", "bad id", "x" * 65, "é"])
def test_an_invalid_device_id_is_fatal(ident):
    c = codec()
    (message,) = c.feed(buildFrame("SG", "ok", b"LK").replace(b"*ok*", f"*{ident}*".encode()) + frame(b"LK"))
    assert message.kind == "identity" and message.fatal
    assert c.feed(frame(b"LK")) == []


def test_a_frame_with_another_device_id_is_dropped():
    c = codec()
    c.feed(frame(b"LK"))
    (message,) = c.feed(frame(b"LK", ident="5500000043"))
    assert message.kind == "identity" and not message.fatal
    assert c.feed(frame(b"LK")) == [Heartbeat(b"[SG*5500000042*0002*LK]")]


# -- commands


def test_commands_carry_the_device_manufacturer_and_escaped_fields():
    c = identified(WatchDevice(ID, manufacturer="3G"))
    assert c.encodeCommand("CR", None, 1) == (b"[3G*5500000042*0002*CR]", "CR")
    assert c.encodeCommand("UPLOAD", "600", 2) == (b"[3G*5500000042*000A*UPLOAD,600]", "UPLOAD")
    assert c.encodeCommand("phb", ["110", "5F204E09"], 3) == (b"[3G*5500000042*0010*phb,110,5F204E09]", "PHB")
    assert c.encodeCommand("FIND", [], 4) == (b"[3G*5500000042*0004*FIND]", "FIND")
    # LEN counts the content as sent: "MESSAGE," 8 + "a}\x04b" 4 + "," 1 + "é" 2
    assert c.encodeCommand("MESSAGE", ["a,b", "é"], 5) == (b"[3G*5500000042*000F*MESSAGE,a}\x04b,\xc3\xa9]", "MESSAGE")
    assert c.encodeCommand("TK", "}[]*", 6)[0] == b"[3G*5500000042*000B*TK,}\x01}\x02}\x03}\x05]"


def test_commands_to_a_device_with_an_index_carry_one():
    c = identified(WatchDevice(ID, manufacturer="ZJ", index=0x33))
    assert c.encodeCommand("CR", None, 1)[0] == b"[ZJ*5500000042*0001*0002*CR]"


@pytest.mark.parametrize("data", [1, 1.5, True, {"a": "b"}, ["a", 1], [None], ("a",)])
def test_data_other_than_null_a_string_or_strings_is_unsupported(data):
    with pytest.raises(UnsupportedCommand):
        identified(WatchDevice(ID)).encodeCommand("UPLOAD", data, 1)


@pytest.mark.parametrize("instruct", ["", "UPLOAD,600", "A B", "X*", "[X]", "}", "É", "A\n"])
def test_an_instruct_that_is_not_one_keyword_is_unsupported(instruct):
    with pytest.raises(UnsupportedCommand):
        identified(WatchDevice(ID)).encodeCommand(instruct, None, 1)


def test_a_command_longer_than_len_can_say_is_unsupported():
    with pytest.raises(UnsupportedCommand):
        identified(WatchDevice(ID)).encodeCommand("MESSAGE", "x" * 0x10000, 1)


def test_lanes_keys_and_the_rest_of_the_interface():
    c = identified(WatchDevice(ID))
    assert (c.name, c.serial, c.ready) == ("watch", True, True)
    assert c.lane("upload") == c.lane("UPLOAD") == c.encodeCommand("upload", None, 1)[1] == "UPLOAD"
    assert c.lane("CR") != c.lane("FIND")
    assert c.refused(401, "no") == b"" and c.error("bad") == b""


# -- the simulator talking to the codec


def test_simulated_watch_answers_commands_by_keyword():
    device = WatchDevice(ID)
    c = identified(device)
    command, key = c.encodeCommand("UPLOAD", "600", 1)
    (answer,) = device.feed(command)
    assert answer == b"[SG*5500000042*0006*UPLOAD]"
    assert c.feed(answer) == [Answer(key, [])]
    assert device.commands == [("UPLOAD", ["600"])]


def test_simulated_watch_answers_cr_then_reports_its_position():
    device = WatchDevice(ID)
    c = identified(device)
    c.feed(device.position(10.0, 20.0, time=WHEN))
    command, key = c.encodeCommand("CR", None, 1)
    assert command == b"[SG*5500000042*0002*CR]"
    answer, position = device.feed(command)
    assert answer == b"[SG*5500000042*0002*CR]"
    messages = c.feed(answer + position)
    assert messages[0] == Answer("CR", [])
    assert (messages[1].type, messages[1].data["lat"], messages[1].data["lon"]) == ("location", 10.0, 20.0)


def test_simulated_watch_reply_text_comes_back_as_answer_data():
    device = WatchDevice(ID, version="SIM, V2", replies={"PW": ["ok"]})
    c = identified(device)
    for instruct, data in [("VERNO", ["SIM, V2"]), ("pw", ["ok"])]:
        command, key = c.encodeCommand(instruct, "123456" if instruct == "pw" else None, 1)
        assert c.feed(b"".join(device.feed(command))) == [Answer(key, data)]


def test_a_silent_watch_records_commands_and_never_answers():
    device = WatchDevice(ID, silent=True)
    c = identified(device)
    assert device.feed(c.encodeCommand("FIND", None, 1)[0]) == []
    assert device.commands == [("FIND", [])]


def test_the_simulator_records_acks_without_answering_them():
    device = WatchDevice(ID, manufacturer="ZJ", index=1)
    c = codec()
    replies = [m.reply for m in c.feed(device.hello() + device.alarm(kind="removing"))]
    assert b"".join(device.feed(b"".join(replies))) == b""
    assert device.acks == ["LK", "AL"] and device.commands == []


# -- property tests

_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@st.composite
def streams(draw):
    device = WatchDevice(draw(st.sampled_from([ID, "861230000000017"])), manufacturer=draw(st.sampled_from(["SG", "3G", "ZJ"])),
                         index=draw(st.none() | st.integers(0, 0xFFFF)))
    frames = [device.hello()]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["lk", "position", "alarm", "answer", "tk"]))
        if kind == "lk":
            frames.append(device.heartbeat())
        elif kind == "position":
            wifi = draw(st.lists(st.tuples(_names, st.just("aa:bb:cc:dd:ee:ff"), st.integers(-99, -1)), max_size=3))
            frames.append(device.position(draw(st.floats(-90, 90)), draw(st.floats(-180, 180)),
                                          speed=draw(st.floats(0, 300)), time=WHEN, wifi=wifi))
        elif kind == "alarm":
            frames.append(device.alarm(1.0, 2.0, kind=draw(st.sampled_from(["sos", "removing"])), time=WHEN))
        elif kind == "answer":
            frames.append(device.frame(content("VERNO", *draw(st.lists(_names, max_size=3)))))
        else:
            frames.append(device.frame(content("TK", draw(st.binary(min_size=2, max_size=40)))))
    return b"".join(frames)


@settings(max_examples=150, deadline=None)
@given(stream=streams(), cuts=st.lists(st.integers(0, 4000), max_size=12))
def test_any_split_of_a_stream_of_valid_frames_decodes_the_same(stream, cuts):
    whole = codec().feed(stream)
    assert whole and not any(isinstance(m, BadFrame) for m in whole)
    c = codec()
    pieces = []
    last = 0
    for cut in sorted(cut % (len(stream) + 1) for cut in cuts):
        pieces.append(stream[last:cut])
        last = cut
    pieces.append(stream[last:])
    assert [m for piece in pieces for m in c.feed(piece)] == whole


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=80) | st.sampled_from([b"[", b"]", b"*", b"[SG*1*0002*", b"}", b","]), max_size=30))
def test_random_bytes_never_raise_and_stay_bounded(chunks):
    c = codec(maxFrame=128)
    for chunk in chunks:
        for message in c.feed(chunk):
            assert isinstance(message, (Identify, Heartbeat, Answer, Uplink, BadFrame))
        assert len(c._buf) <= 128


@settings(max_examples=100, deadline=None)
@given(lat=st.floats(-90, 90), lon=st.floats(-180, 180), speed=st.floats(0, 500), course=st.floats(0, 359.9),
       when=st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)))
def test_positions_round_trip(lat, lon, speed, course, when):
    device = WatchDevice(ID)
    c = identified(device)
    (message,) = c.feed(device.position(lat, lon, speed=speed, course=course, time=when))
    data = message.data
    # Half the last digit the frame carries, and a float's error: 1.25 written as 1.2 is 0.050000000000000044 off.
    slack = 1e-9
    assert abs(data["lat"] - lat) <= 5e-7 + slack and abs(data["lon"] - lon) <= 5e-7 + slack
    assert abs(data["speed"] - speed) <= 5e-3 + slack and abs(data["course"] - course) <= 5e-2 + slack
    assert data["time"] == when.strftime("%Y-%m-%dT%H:%M:%SZ")


_fields = st.lists(st.text(st.sampled_from("0123456789.-ABEFNSVWf ,[]*}é"), max_size=20) | st.just("9" * 40), max_size=30)


@settings(max_examples=300, deadline=None)
@given(keyword=st.sampled_from(["LK", "AL", "UD", "UD_LTE", "WT", "PULSE", "BPHRT", "TEMP", "btemp2", "oxygen", "TK",
                                "JXTK", "img", "INIT", "VERNO"]),
       fields=_fields)
def test_any_fields_of_any_keyword_give_json_events(keyword, fields):
    for message in codec().feed(frame(content(keyword, *fields))):
        assert isinstance(message, (Identify, Heartbeat, Answer, Uplink, BadFrame))
        payload = {Heartbeat: "status", Answer: "data", Uplink: "data"}.get(type(message))
        if payload:
            json.dumps(getattr(message, payload), allow_nan=False)
