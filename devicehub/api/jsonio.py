"""
JSON in and out of the API: L{respond} writes a JSON answer; the checks read a
request's query arguments and JSON body, raising L{BadInput} for what they refuse.
"""

from typing import Any

from devicehub.common.imei import is_valid_imei
from devicehub.common.jsoncodec import BadJSON, dumps, loads
from devicehub.common.limits import isSeconds

MAX_BODY = 1 << 20
MAX_JOB_BODY = 8 << 20
"""Largest body of C{POST /commands} (up to 100 000 imeis of 64 characters)."""


def bodyLimit(path: bytes) -> int:
    """The largest body a request for C{path} (its query included) may have."""
    return MAX_JOB_BODY if path.split(b"?", 1)[0] == b"/commands" else MAX_BODY


class BadInput(Exception):
    """A request the API refuses with 400 (or C{status}) and this message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def respond(request, status: int, body: dict[str, Any]) -> bytes:
    """Set C{status} and the JSON content type on C{request}; return C{body} as JSON."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return dumps(body)


def intArg(request, name: str, default: int, maximum: int | None) -> int:
    """Query argument C{name}, a whole number in 0..C{maximum} (no bound when None)."""
    values = request.args.get(name.encode())
    if not values:
        return default
    try:
        value = int(values[-1].decode("ascii"), 10)
    except (UnicodeDecodeError, ValueError):
        raise BadInput(f"{name} must be a whole number") from None
    if value < 0 or (maximum is not None and value > maximum):
        limit = f"in 0..{maximum}" if maximum is not None else ">= 0"
        raise BadInput(f"{name} must be {limit}")
    return value


def checkedImei(imei: str) -> str:
    """C{imei} if it is a valid device identity."""
    if not is_valid_imei(imei):
        raise BadInput("invalid imei")
    return imei


def jsonBody(request, limit: int = MAX_BODY) -> dict[str, Any]:
    """The request's body, a JSON object of at most C{limit} bytes."""
    raw = request.content.read(limit + 1)
    if len(raw) > limit:
        raise BadInput(f"body larger than {limit} bytes", 413)
    try:
        body = loads(raw)
    except BadJSON:
        raise BadInput("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadInput("body must be a JSON object")
    return body


def secondsField(body: dict[str, Any], name: str, maximum: float) -> float | None:
    """Field C{name} of C{body}: absent or null, or seconds in 0 < S <= C{maximum}."""
    value = body.get(name)
    if value is None:
        return None
    if not isSeconds(value, maximum):
        raise BadInput(f"{name} must be a number with 0 < {name} <= {maximum:g}")
    return float(value)


def boolField(body: dict[str, Any], name: str, default: bool) -> bool:
    """Field C{name} of C{body}: true or false, C{default} when absent."""
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadInput(f"{name} must be true or false")
    return value
