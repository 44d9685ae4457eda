"""BaseCodec: the defaults every built-in codec inherits, and what each overrides."""

import pytest

from devicehub.devices.codec import BaseCodec
from devicehub.devices.codecs import BUILTIN, load


@pytest.mark.parametrize("name", list(BUILTIN))
def test_builtin_codecs_inherit_the_defaults(name):
    assert issubclass(load(name), BaseCodec)


def test_defaults():
    codec = BaseCodec()
    assert (codec.tokens, codec.strict, codec.ready) == (False, False, True)
    assert codec.lane("anything") is None
    assert codec.refused(403, "not allowed") == b"" and codec.error("bad") == b""


@pytest.mark.parametrize("name", ["watch", "gt06"])
def test_watch_and_gt06_say_nothing(name):
    codec = load(name)(1024)
    assert (codec.tokens, codec.strict, codec.ready) == (False, False, True)
    assert codec.refused(403, "not allowed") == b"" and codec.error("bad") == b""


def test_teltonika_refuses_and_waits():
    codec = load("teltonika")(1024)
    assert codec.refused(403, "not allowed") == b"\x00" and codec.error("bad") == b""
    assert codec.ready is False and codec.lane("getinfo") is None


def test_jsonl_has_tokens_is_strict_and_says_why():
    codec = load("jsonl")(1024)
    assert (codec.tokens, codec.strict, codec.ready) == (True, True, True)
    assert codec.refused(401, "invalid token") == b'{"type":"login","status":401,"error":"invalid token"}\n'
    assert codec.lane("0x10") is None
