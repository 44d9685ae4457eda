"""
devicehub's own protocol: JSON Lines over TCP or TLS (CONTRACT §2).

One JSON object per line, UTF-8, ended by C{\\n} (a C{\\r} before it is
tolerated); every object has a string field C{type}::

    device -> hub   {"type":"login","imei":"861234567890123"}      first line, within login timeout
    hub -> device   {"type":"login","status":200}                  or 400/401 with "error", then close
    device -> hub   {"type":"ping"}                                answered by {"type":"pong"}
    hub -> device   {"type":"command","ident":42,"instruct":"0x10","data":...}
    device -> hub   {"type":"ack","ident":42}  or  {"type":"ack","ident":42,"data":...}
    device -> hub   any other type: an uplink message, published as an event
    hub -> device   {"type":"error","error":"..."}                 a rejected line; sent before any close

A bad line gets an C{error} line (and a close before login); a line longer than the
limit closes the connection; an ack with an unknown ident is ignored. Logins may carry
a C{token} (see L{devicehub.devices.session.device_token}).
"""

from typing import Any, ClassVar, Hashable

from devicehub.common.jsoncodec import BadJSON, dumps, loads
from devicehub.devices.codec import Answer, BadFrame, BaseCodec, Heartbeat, Identify, Message, Uplink

DELIMITER = b"\n"
_PONG = dumps({"type": "pong"}) + DELIMITER
_LOGGED_IN = dumps({"type": "login", "status": 200}) + DELIMITER


class LineError(ValueError):
    """A device line that breaks the protocol; its text goes into the error line."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind
        """A fixed name for metrics: json, object or type."""


def parse_line(line: bytes) -> dict[str, Any]:
    """
    Decode one device line (without its C{\\n}) into a message.

    @raise LineError: not UTF-8 JSON, not an object, or no valid C{type}.
    """
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        message = loads(line)
    except BadJSON as e:
        raise LineError(str(e), "json") from None
    if not isinstance(message, dict):
        raise LineError("not a JSON object", "object")
    kind = message.get("type")
    if not isinstance(kind, str) or not kind:
        raise LineError("missing or invalid type", "type")
    return message


class JsonLinesCodec(BaseCodec):
    """One JSON Lines connection (see the module docstring): logins carry tokens, it is strict, and it says why."""

    name: ClassVar[str] = "jsonl"
    serial: ClassVar[bool] = False
    errorKinds: ClassVar[tuple[str, ...]] = ("json", "object", "type", "invalid ident", "line too long")
    tokens: ClassVar[bool] = True
    strict: ClassVar[bool] = True
    __slots__ = ("maxFrame", "_buffer")

    def __init__(self, maxFrame: int) -> None:
        self.maxFrame = maxFrame
        self._buffer = b""

    def feed(self, data: bytes) -> list[Message]:
        lines = (self._buffer + data).split(DELIMITER)
        self._buffer = lines.pop()
        messages = [self._decode(line) for line in lines]
        if len(self._buffer) > self.maxFrame:
            self._buffer = b""
            messages.append(BadFrame("line too long", "line too long", fatal=True))
        return messages

    def _decode(self, line: bytes) -> Message:
        if len(line) > self.maxFrame:
            return BadFrame("line too long", "line too long", fatal=True)
        try:
            message = parse_line(line)
        except LineError as e:
            return BadFrame(e.kind, str(e))
        kind = message["type"]
        if kind == "ack":
            ident = message.get("ident")
            if not isinstance(ident, int) or isinstance(ident, bool):
                return BadFrame("invalid ident", "invalid ident")
            return Answer(ident, message.get("data"))
        if kind == "ping":
            return Heartbeat(_PONG)
        if kind == "login":
            return Identify(message.get("imei"), message.get("token"), _LOGGED_IN)
        del message["type"]
        return Uplink(kind, message)

    def encodeCommand(self, instruct: str, data: Any, number: int) -> tuple[bytes, Hashable]:
        return dumps({"type": "command", "ident": number, "instruct": instruct, "data": data}) + DELIMITER, number

    def refused(self, status: int, error: str) -> bytes:
        return dumps({"type": "login", "status": status, "error": error}) + DELIMITER

    def error(self, error: str) -> bytes:
        return dumps({"type": "error", "error": error}) + DELIMITER
