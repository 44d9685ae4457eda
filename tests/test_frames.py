"""The internal frame format: round trips and hostile input."""

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
    raw = [b"DH2 send 1", b'{"imei":"a", "instruct":"b","data":1.50,"timeout":1,"wait":true}']
    message = frames.decode(raw)
    assert message.frames() == raw
    assert frames.Message(b"reply", b"2", {"result": "ok"}).frames() == [b"DH2 reply 2", b'{"result":"ok"}']


def test_a_request_id_may_hold_spaces_and_notices_have_none():
    assert frames.decode(frames.encode(b"total", b"a b c", {})).rid == b"a b c"
    assert frames.encode(b"ping", b"", {})[0] == b"DH2 ping "
    assert frames.decode(frames.encode(b"ping", b"", {}))[:3] == (b"ping", b"", {})


@pytest.mark.parametrize(
    "raw, error",
    [
        ([], "empty message"),
        ([b"DH2 total 1"], "expected 2 frames"),
        ([b"DH2 total 1", b"{}", b"{}"], "expected 2 frames"),
        ([b"DH1", b"total", b"1", b"{}"], "unsupported version b'DH1'"),
        ([b"DH3 total 1", b"{}"], "unsupported version"),
        ([b"DH2 total", b"{}"], "header"),
        ([b"DH2", b"{}"], "header"),
        ([b"DH2 nope 1", b"{}"], "unknown kind"),
        ([b"DH2 total " + b"x" * 65, b"{}"], "request id too long"),
        ([b"DH2 total 1", b"[]"], "not a JSON object"),
        ([b"DH2 total 1", b"{"], "not JSON"),
        ([b"DH2 total 1", b'{"x":NaN}'], "not JSON"),
        ([b"DH2 list 1", b'{"num":true,"page":0}'], "'num'"),
        ([b"DH2 send 1", b'{"imei":"a","instruct":"b","data":null,"timeout":0,"wait":true}'], "'timeout'"),
        ([b"DH2 hello ", b'{"node":"n","instance":"i","devices":[["a",1]]}'], "'devices'"),
        ([b"DH2 hello ", b'{"node":"n","devices":[]}'], "'instance'"),
        ([b"DH2 online ", b'{"imei":"a","conn":1}'], "'since'"),
        ([b"DH2 reply 1", b'{"total":-1}'], "'total'"),
        ([b"DH2 total 1", b"[" * 100000], "nested deeper than"),
        ([b"DH2 total 1", b"[" * 67 + b"]" * 67], "nested deeper than 66 levels"),
        ([b"DH2 total 1", b'{"x":1e999}'], "out of range"),
        ([b"DH2 total 1", b'{"x":-1e400}'], "out of range"),
        ([b"DH2 total 1", b'{"x":' + b"9" * 5000 + b"}"], "not JSON"),
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
        frames.decode([b"DH2 " + kind + b" " + rid, payload])
    except FrameError:
        pass


def test_lone_surrogates_survive_a_round_trip():
    body = {"imei": "a", "instruct": "\udcad", "data": ["\ud800x", "é"], "timeout": 1, "wait": True}
    raw = frames.encode(b"send", b"1", body)
    raw[1].decode("utf-8")  # still valid UTF-8 on the wire
    assert frames.decode(raw).body == body


@given(st.recursive(st.none() | st.text() | st.integers(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=8))
def test_any_json_value_round_trips(value):
    assert jsoncodec.loads(jsoncodec.dumps(value)) == value
