"""The internal frame format: round trips and hostile input."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devicehub.common import jsoncodec
from devicehub.wire import frames
from devicehub.wire.frames import FrameError


def test_round_trip():
    body = {"imei": "a", "instruct": "0x10", "data": {"k": [1, "é"]}, "timeout": 2.5, "wait": True}
    message = frames.decode(frames.encode(b"send", b"17", body))
    assert message[:3] == (b"send", b"17", body)


def test_a_decoded_message_forwards_its_payload_unchanged():
    raw = [b'DH3 send 1\n{"imei":"a", "instruct":"b","data":1.50,"timeout":1,"wait":true}']
    message = frames.decode(raw)
    assert message.payload == b'{"imei":"a", "instruct":"b","data":1.50,"timeout":1,"wait":true}'
    assert message.frames() == raw
    assert frames.Message(b"reply", b"2", {"result": "ok"}).frames() == [b'DH3 reply 2\n{"result":"ok"}']


def test_a_request_id_may_hold_spaces_and_notices_have_none():
    assert frames.decode(frames.encode(b"total", b"a b c", {})).rid == b"a b c"
    assert frames.encode(b"ping", b"", {}) == [b"DH3 ping \n{}"]
    assert frames.decode(frames.encode(b"ping", b"", {}))[:3] == (b"ping", b"", {})


@pytest.mark.parametrize(
    "raw, error",
    [
        ([], "empty message"),
        ([b"DH3 total 1\n{}", b"{}"], "expected 1 frame"),
        ([b"DH1", b"total", b"1", b"{}"], "unsupported version b'DH1'"),
        ([b"DH2 total 1", b"{}"], "unsupported version b'DH2'"),
        ([b"DH4 total 1\n{}"], "unsupported version"),
        ([b"DH3 total 1{}"], "header"),
        ([b"DH3 total\n{}"], "header"),
        ([b"DH3\n{}"], "version"),
        ([b"DH3 nope 1\n{}"], "unknown kind"),
        ([b"DH3 total " + b"x" * 65 + b"\n{}"], "request id too long"),
        ([b"DH3 total 1\n[]"], "not a JSON object"),
        ([b"DH3 total 1\n{"], "not JSON"),
        ([b"DH3 total 1\n"], "not JSON"),
        ([b"DH3 total 1\n{}\n{}"], "not JSON"),
        ([b'DH3 total 1\n{"x":NaN}'], "not JSON"),
        ([b'DH3 list 1\n{"num":true,"page":0}'], "'num'"),
        ([b'DH3 send 1\n{"imei":"a","instruct":"b","data":null,"timeout":0,"wait":true}'], "'timeout'"),
        ([b'DH3 hello \n{"node":"n","instance":"i","devices":[["a",1]]}'], "'devices'"),
        ([b'DH3 hello \n{"node":"n","devices":[]}'], "'instance'"),
        ([b'DH3 online \n{"imei":"a","conn":1}'], "'since'"),
        ([b'DH3 reply 1\n{"total":-1}'], "'total'"),
        ([b"DH3 total 1\n" + b"[" * 100000], "nested deeper than"),
        ([b"DH3 total 1\n" + b"[" * 67 + b"]" * 67], "nested deeper than 66 levels"),
        ([b'DH3 total 1\n{"x":1e999}'], "out of range"),
        ([b'DH3 total 1\n{"x":-1e400}'], "out of range"),
        ([b'DH3 total 1\n{"x":' + b"9" * 5000 + b"}"], "not JSON"),
    ],
)
def test_malformed_frames_are_rejected(raw, error):
    with pytest.raises(FrameError, match=error):
        frames.decode(raw)


@given(st.lists(st.binary(max_size=40), max_size=6))
def test_decode_raises_only_frame_error(raw):
    try:
        message = frames.decode(raw)
    except FrameError:
        return
    assert isinstance(message.body, dict)


@given(st.sampled_from(sorted(frames.SCHEMAS)), st.binary(max_size=16), st.binary(max_size=200))
def test_decode_of_any_body_raises_only_frame_error(kind, rid, payload):
    try:
        frames.decode([b"DH3 " + kind + b" " + rid + b"\n" + payload])
    except FrameError:
        pass


_FIELD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 400), st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=3), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@given(
    st.sampled_from([b"send", b"command", b"reply"]),
    st.dictionaries(st.sampled_from(["imei", "instruct", "data", "timeout", "wait", "result", "total", "x"]),
                    _FIELD_VALUES, max_size=7),
)
def test_a_hot_kind_is_checked_in_one_call_exactly_as_by_its_schema(kind, body):
    """decode's one-call checks of send, command and reply accept only what the schema's checks accept."""
    schema = frames.SCHEMAS[kind]
    valid = all(field in body and check(body[field]) for field, check in schema.items())
    if kind == b"reply":
        valid = valid and all(frames.REPLY_FIELDS.get(field, lambda value: True)(value) for field, value in body.items())
    if frames._FAST_CHECKS[kind](body):
        assert valid
    raw = [b"DH3 " + kind + b" 1\n" + jsoncodec.dumps(body)]
    if valid:
        assert frames.decode(raw).body == jsoncodec.loads(raw[0].partition(b"\n")[2])
    else:
        with pytest.raises(FrameError, match="invalid"):
            frames.decode(raw)


def test_lone_surrogates_survive_a_round_trip():
    body = {"imei": "a", "instruct": "\udcad", "data": ["\ud800x", "é"], "timeout": 1, "wait": True}
    raw = frames.encode(b"send", b"1", body)
    raw[0].decode("utf-8")  # still valid UTF-8 on the wire
    assert frames.decode(raw).body == body


@given(st.recursive(st.none() | st.text() | st.integers(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=8))
def test_any_json_value_round_trips(value):
    assert jsoncodec.loads(jsoncodec.dumps(value)) == value


def _standardLoads(data: bytes):
    """What the standard library alone makes of C{data}: ('ok', value) or ('error', message)."""
    try:
        value = jsoncodec._standard(data, jsoncodec.MAX_DEPTH)
    except jsoncodec.BadJSON as e:
        return "error", str(e)
    if data.count(b"[") + data.count(b"{") > jsoncodec.MAX_DEPTH and jsoncodec._too_deep(value, jsoncodec.MAX_DEPTH):
        return "error", f"nested deeper than {jsoncodec.MAX_DEPTH} levels"
    return "ok", value


def _loads(data: bytes):
    try:
        return "ok", jsoncodec.loads(data)
    except jsoncodec.BadJSON as e:
        return "error", str(e)


_JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
).map(lambda value: json.dumps(value).encode())
_JSON_PIECES = st.lists(st.sampled_from([
    b"{", b"}", b"[", b"]", b",", b":", b'"a"', b'"\\udcad"', b'"\\ud800\\udc00"', b"\xef\xbb\xbf", b"\xed\xb2\xad",
    b"\xff", b"1", b"-0", b"1e999", b"1e-400", b"9" * 4301, b"2" * 30, b"NaN", b"Infinity", b"true", b"null", b" ",
    b"\t", b"\x00", b"0.5", b"01", b'"\x01"', b"[" * 70, b"]" * 70,
]), max_size=12).map(b"".join)


@given(st.one_of(_JSON_TEXT, _JSON_PIECES, st.binary(max_size=60)))
def test_the_fast_json_reader_reads_what_the_standard_library_reads(data):
    """msgspec reads first: any text, valid or not, gives the standard library's value or error."""
    expected, got = _standardLoads(data), _loads(data)
    assert got[0] == expected[0]
    if got[0] == "ok":
        # repr: 1 and 1.0 (and True) compare equal but are not the same JSON; NaN is never read.
        assert repr(got[1]) == repr(expected[1])
    else:
        assert got[1] == expected[1]


def _hasFloat(value) -> bool:
    if isinstance(value, dict):
        return any(_hasFloat(item) for item in value.values())
    if isinstance(value, list):
        return any(_hasFloat(item) for item in value)
    return isinstance(value, float)


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12))
def test_the_fast_json_writer_writes_what_the_standard_library_writes(value):
    """
    orjson writes first: byte for byte the standard library's compact text (lone surrogates
    escaped), floats aside: they are written as the same number, not always in the same
    form (6.103515625e-05 is 0.00006103515625).
    """
    try:
        expected = jsoncodec._ENCODER.encode(value).encode()
    except UnicodeEncodeError:
        expected = jsoncodec._ASCII_ENCODER.encode(value).encode()
    written = jsoncodec.dumps(value)
    if _hasFloat(value):
        assert repr(json.loads(written)) == repr(json.loads(expected))
    else:
        assert written == expected


def test_the_json_writer_leaves_to_the_standard_library_what_orjson_does_not_write():
    class Name(str):
        pass

    assert jsoncodec.dumps({"n": 2**70, 1: Name("x"), "s": "\udcad"}) == b'{"n":1180591620717411303424,"1":"x","s":"\\udcad"}'
    with pytest.raises(TypeError):
        jsoncodec.dumps({"data": b"bytes"})
    assert jsoncodec.dumps(float("nan")) == b"null"  # not NaN, which no strict reader takes back


@given(st.recursive(
    st.none() | st.integers(min_value=-2**80, max_value=2**80) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4) | st.integers(0, 3), inner,
                                                                max_size=4),
    max_leaves=10))
def test_what_the_json_writer_writes_its_reader_takes_back_non_finite_floats_as_null(value):
    """Also where the standard library writes (integers past 64 bits, integer keys, lone surrogates)."""
    def expected(item):
        if isinstance(item, float):
            return item if math.isfinite(item) else None
        if isinstance(item, dict):
            return {str(key): expected(child) for key, child in item.items()}
        if isinstance(item, list):
            return [expected(child) for child in item]
        return item

    assert jsoncodec.loads(jsoncodec.dumps(value), depth=100) == expected(value)


def test_the_standard_library_path_writes_non_finite_floats_as_null_and_their_keys_as_it_did():
    assert jsoncodec.dumps({"n": 2**70, "x": float("nan"), "l": [float("-inf")]}) == (
        b'{"n":1180591620717411303424,"x":null,"l":[null]}')
    assert jsoncodec.dumps({float("inf"): 1, "s": "\udcad"}) == b'{"Infinity":1,"s":"\\udcad"}'
    circular: list = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular"):
        jsoncodec.dumps(circular)
