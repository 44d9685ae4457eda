"""
The messages between Demand, broker and node (ZeroMQ), version 3.

Every message is one frame, after the identity frame a ROUTER adds or strips::

    b"DH3 " + kind + b" " + request id + b"\n" + JSON object

C{kind} is ASCII without spaces; C{request id} is opaque bytes (at most 64, no newline)
chosen by whoever asks and echoed in the answer, empty in notices that need no answer.
(Version 1 sent version, kind and id as frames of their own, version 2 the header and the
JSON as two: each frame is a call into pyzmq and a message part in ZeroMQ on both
sides.) The JSON body's fields depend on C{kind}; L{SCHEMAS} lists them and L{decode}
checks them, so handlers can trust a decoded message. docs/frames.md describes the exchanges.

Frontend (Demand or API -> broker, answered by C{reply} or C{error}):
  - C{send} imei, instruct, data, timeout, wait: a command for a device
  - C{find} imei / C{list} num, page / C{total} / C{health}: directory queries
  - C{status} id / C{queue} imei / C{cancel} id: the queue of commands for offline devices
Backend (node -> broker):
  - C{hello} node, instance, devices: (re)registration with a full snapshot [[imei, conn, since, protocol], ...]
  - C{online} imei, conn, since, protocol / C{offline} imei, conn, reason: presence changes (since: login time)
  - C{uplink} imei, message, ts, protocol: a device's own message, for the event stream
  - C{ping}: heartbeat / C{bye}: clean shutdown / C{result} imei, result, data: a command's outcome
Backend (broker -> node):
  - C{welcome} heartbeat: registered / C{pong}: heartbeat answer / C{reset}: say hello again
  - C{refused} error: not registered (another live node has its name)
  - C{command}: the C{send} body, forwarded / C{drop} imei, conn: the device logged in elsewhere
"""

import math
from typing import Any, Callable, NamedTuple

from devicehub.common.jsoncodec import ENVELOPE_DEPTH, BadJSON, dumps, loads
from devicehub.common.limits import MAX_TIMEOUT, isSeconds

__all__ = ["Message", "FrameError", "decode", "encode", "request_id", "SCHEMAS", "MAX_MESSAGE", "is_seconds"]

VERSION = b"DH3"
MAX_REQUEST_ID = 64
MAX_MESSAGE = 8 << 20
"""Largest frame in bytes a broker socket takes; a peer sending a larger one is disconnected."""
_HEADER = VERSION + b" "


class FrameError(ValueError):
    """A message that does not follow this format."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_count(value: object) -> bool:
    return _is_int(value) and value >= 0


def is_seconds(value: object) -> bool:
    """A finite number of seconds > 0 (L{isSeconds})."""
    return isSeconds(value)


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_any(value: object) -> bool:
    return True


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_time(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_snapshot(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(entry, list)
        and len(entry) in (3, 4)
        and _is_str(entry[0])
        and _is_count(entry[1])
        and _is_time(entry[2])
        and (len(entry) == 3 or _is_str(entry[3]))
        for entry in value
    )


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(_is_str(item) for item in value)


Check = Callable[[object], bool]

def _is_command_timeout(value: object) -> bool:
    return isSeconds(value, MAX_TIMEOUT)


_COMMAND: dict[str, Check] = {
    "imei": _is_str,
    "instruct": _is_str,
    "data": _is_any,
    "timeout": _is_command_timeout,
    "wait": _is_bool,
}
_PRESENCE: dict[str, Check] = {"imei": _is_str, "conn": _is_count}
_LOGIN: dict[str, Check] = {**_PRESENCE, "since": _is_time}

SCHEMAS: dict[bytes, dict[str, Check]] = {
    # frontend requests
    b"send": _COMMAND,
    b"find": {"imei": _is_str},
    b"locate": {"imei": _is_str},
    b"cluster": {},
    b"list": {"num": _is_count, "page": _is_count},
    b"total": {},
    b"health": {},
    b"status": {"id": _is_str},
    b"queue": {"imei": _is_str},
    b"cancel": {"id": _is_str},
    # frontend answers; a reply's fields depend on the request it answers
    b"reply": {},
    b"error": {"error": _is_str, "code": _is_str},
    # node -> broker
    b"hello": {"node": _is_str, "instance": _is_str, "devices": _is_snapshot},
    b"snapshot": {"devices": _is_snapshot, "part": _is_count},
    b"online": _LOGIN,
    b"offline": _PRESENCE,
    b"uplink": {"imei": _is_str, "message": lambda value: isinstance(value, dict), "ts": _is_time},
    b"ping": {},
    b"bye": {},
    b"result": {"imei": _is_str, "result": _is_str, "data": _is_any},
    # broker -> node
    b"welcome": {"heartbeat": is_seconds},
    b"pong": {},
    b"reset": {},
    b"refused": {"error": _is_str},
    b"command": _COMMAND,
    b"drop": _PRESENCE,
}


def _is_command(body: dict[str, Any]) -> bool:
    """L{_COMMAND}'s checks in one call: a Demand's C{send} and the broker's C{command}, one of each per command."""
    try:
        imei, instruct, timeout, wait = body["imei"], body["instruct"], body["timeout"], body["wait"]
    except KeyError:
        return False
    return (
        "data" in body
        and isinstance(imei, str)
        and isinstance(instruct, str)
        and (wait is True or wait is False)
        and (timeout.__class__ is int or timeout.__class__ is float)
        and 0 < timeout <= MAX_TIMEOUT  # NaN compares false; infinity is above the maximum
    )


def _is_plain_reply(body: dict[str, Any]) -> bool:
    """A reply of a command (C{result} and C{data}, nothing else): what L{REPLY_FIELDS} asks of those two."""
    return len(body) == 2 and "data" in body and isinstance(body.get("result"), str)


# A kind's checks in one call, where they are hot; False sends the message to the checks
# of L{SCHEMAS} one by one, which name what is wrong.
_FAST_CHECKS: dict[bytes, Callable[[dict[str, Any]], bool]] = {
    b"send": _is_command,
    b"command": _is_command,
    b"reply": _is_plain_reply,
}

# Fields of a reply, each checked when present.
REPLY_FIELDS: dict[str, Check] = {
    "result": _is_str,
    "data": _is_any,
    "devices": _is_str_list,
    "total": _is_count,
    "nodes": _is_count,
    "id": _is_str,
    "command": lambda value: value is None or isinstance(value, dict),
    "commands": lambda value: isinstance(value, list) and all(isinstance(item, dict) for item in value),
    "store": _is_str,
    "node": _is_str,
    "protocol": _is_str,
    "since": _is_time,
    "perNode": lambda value: isinstance(value, dict) and all(_is_count(count) for count in value.values()),
}


class Message(NamedTuple):
    """One message: its kind, request id and (checked) body."""

    kind: bytes
    rid: bytes
    body: dict[str, Any]
    payload: bytes | None = None
    """The body's JSON when known (as received), so forwarding it needs no new encoding."""

    def frames(self) -> list[bytes]:
        """The message's frames (one)."""
        return [b"".join((_HEADER, self.kind, b" ", self.rid, b"\n", dumps(self.body) if self.payload is None else self.payload))]


def encode(kind: bytes, rid: bytes, body: dict[str, Any]) -> list[bytes]:
    """The frames of one message."""
    return Message(kind, rid, body).frames()


def _split(frame: bytes) -> tuple[bytes, bytes, bytes]:
    """The kind, request id and JSON of a message's frame."""
    if not frame.startswith(_HEADER):
        raise FrameError(f"unsupported version {frame.partition(b' ')[0][:16]!r}")
    header, newline, payload = frame.partition(b"\n")
    kind, space, rid = header[len(_HEADER):].partition(b" ")
    if not space or not newline:
        raise FrameError("header is not 'DH3 kind id' and a newline")
    return kind, rid, payload


def request_id(frames: list[bytes]) -> bytes | None:
    """The request id of a message that may be malformed, if its header can be read."""
    try:
        return _split(frames[0])[1] if frames else None
    except FrameError:
        return None


def decode(frames: list[bytes]) -> Message:
    """Check and decode one message; raise L{FrameError} if it breaks the format."""
    if not frames:
        raise FrameError("empty message")
    kind, rid, payload = _split(frames[0])
    if len(frames) != 1:
        raise FrameError(f"expected 1 frame, got {len(frames)}")
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise FrameError(f"unknown kind {kind[:16]!r}")
    if len(rid) > MAX_REQUEST_ID:
        raise FrameError("request id too long")
    try:
        body = loads(payload, ENVELOPE_DEPTH)
    except BadJSON as e:
        raise FrameError(str(e)) from None
    if not isinstance(body, dict):
        raise FrameError("body is not a JSON object")
    fast = _FAST_CHECKS.get(kind)
    if fast is not None and fast(body):
        return Message(kind, rid, body, payload)
    for field, check in schema.items():
        if field not in body or not check(body[field]):
            raise FrameError(f"{kind.decode()}: missing or invalid {field!r}")
    if kind == b"reply":
        for field, value in body.items():  # a reply has a few of the many fields a reply may have
            check = REPLY_FIELDS.get(field)
            if check is not None and not check(value):
                raise FrameError(f"reply: invalid {field!r}")
    return Message(kind, rid, body, payload)
