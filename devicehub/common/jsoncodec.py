"""
The JSON of every devicehub wire (device lines, HTTP bodies, broker messages, events):
compact UTF-8 out, strict in (no NaN or Infinity, no overflowing numbers, bounded depth).

orjson writes and msgspec reads, about ten times faster than the standard library
(docs/performance.md); what either leaves aside goes to the standard library, whose answer
stands: integers past 64 bits, keys that are not strings and subclasses of str, int, dict
or list on the way out; a byte order mark, UTF-16 or UTF-32, lone surrogates, very deep
nesting and every error on the way in. So what is read is what the standard library
would read, with the same errors. What is written differs only in that a float is the
same number but not always in the same form (C{0.00001}, not C{1e-05}), a non-finite float
is C{null} (the standard library wrote C{NaN}, which no strict reader takes back), and a
UUID is written as its text and an Enum as its value (the standard library refused both).
"""

import json
import math
from typing import Any

import msgspec
import orjson

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted from outside (device lines, HTTP bodies)."""
ENVELOPE_DEPTH = MAX_DEPTH + 2
"""The same for messages and events, which carry such data one or two levels down."""


class BadJSON(ValueError):
    """Text that is not strict JSON, or nests too deep."""


def _reject_constant(name: str) -> None:
    raise BadJSON(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # e.g. 1e999: valid syntax, but no JSON can carry it back
        raise BadJSON(f"number out of range: {text[:20]}")
    return number


# Built once: json.dumps/json.loads with options build a new encoder/decoder per call.
# allow_nan=False: a non-finite float is written as null (below), as orjson writes it, not as
# NaN or Infinity, which no strict reader (this module's loads included) takes back.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_FAST_DECODER = msgspec.json.Decoder()
# Subclasses, dataclasses and datetimes go to the standard library, as they always did.
_FAST_OPTIONS = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as used on every wire of devicehub."""
    try:
        return orjson.dumps(value, option=_FAST_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is one: what orjson does not write
        pass
    try:
        text = _ENCODER.encode(value)
    except ValueError as e:
        if "Out of range float" not in str(e):  # e.g. a circular reference: no JSON at all
            raise
        value = _nulled(value)
        text = _ENCODER.encode(value)
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (legal as a JSON escape, e.g. "\udcad") has no UTF-8 form: keep
        # every non-ASCII character escaped instead, which is lossless.
        return _ASCII_ENCODER.encode(value).encode()


def _nulled(value: Any) -> Any:
    """
    C{value} with each non-finite float of its lists and values made None (what orjson
    writes for it), and each such key the text the standard library writes for it.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_textKey(key): _nulled(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nulled(item) for item in value]
    return value


def _textKey(key: Any) -> Any:
    if not isinstance(key, float) or math.isfinite(key):
        return key
    return "NaN" if key != key else "Infinity" if key > 0 else "-Infinity"


def loads(data: bytes, depth: int = MAX_DEPTH) -> Any:
    """
    Parse strict JSON (no NaN, Infinity or overflowing numbers, at most C{depth}
    levels deep); raise L{BadJSON} on any failure.
    """
    try:
        value = _FAST_DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError):
        value = _standard(data, depth)
    # Only a text with that many brackets can be that deep: the exact check is rarely needed.
    if data.count(b"[") + data.count(b"{") > depth and _too_deep(value, depth):
        raise BadJSON(f"nested deeper than {depth} levels")
    return value


def _standard(data: bytes, depth: int) -> Any:
    """L{loads} by the standard library: what msgspec does not read, and the error of what is not JSON."""
    try:
        # As json.loads does with bytes (UTF-8, or UTF-16/32 when it detects them).
        return _DECODER.decode(data.decode(json.detect_encoding(data), "surrogatepass"))
    except BadJSON:
        raise
    except RecursionError:  # far deeper than any limit
        raise BadJSON(f"nested deeper than {depth} levels") from None
    except ValueError as e:
        raise BadJSON(f"not JSON: {e.__class__.__name__}") from None


def _too_deep(value: Any, depth: int) -> bool:
    """Whether C{value} nests arrays and objects more than C{depth} levels deep."""
    level: list[Any] = [value]
    for _ in range(depth):
        level = [
            child
            for item in level if isinstance(item, (list, dict))
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return False
    return any(isinstance(item, (list, dict)) for item in level)
