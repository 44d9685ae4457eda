"""
Watch decoding: one whole frame -> the session's messages (the keywords and what the hub
answers are in L{devicehub.devices.codecs.watch}).

The device's first frame identifies it; heartbeats, positions, alarms, health values and
voice or photo parts are decoded here, every other keyword becomes an L{Answer} keyed by
the keyword in upper case (the session publishes its C{unmatched} raw event when it
answers no command).
"""

import math
from typing import Any

from devicehub.common.imei import is_valid_imei
from devicehub.devices.codec import Answer, BadFrame, Heartbeat, Identify, Message, Uplink
from devicehub.devices.codecs.watch.positions import decodePosition, intOrNone, smallInt
from devicehub.devices.codecs.watch.protocol import frameBytes, isHex4, splitFields, text, unescape

_HEALTH = frozenset({"PULSE", "HEART", "BLOOD", "BPHRT", "TEMP", "BTEMP2", "OXYGEN"})
_NOT_A_FRAME = "not a [MF*ID*LEN*CONTENT] frame"


def _health(keyword: str, fields: list[str]) -> dict[str, Any]:
    """The status of a health frame (heart rate, blood pressure, temperature, blood oxygen)."""
    status: dict[str, Any] = {}
    try:
        if keyword == "TEMP":
            status["temperature"] = float(fields[0])
        elif keyword == "BTEMP2":
            if smallInt(fields[0]) > 0:
                status["temperature"] = float(fields[1])
        elif keyword == "OXYGEN":
            status["bloodOxygen"] = smallInt(fields[1])
        else:
            index = 0
            if keyword in ("BLOOD", "BPHRT"):
                status["pressureHigh"] = smallInt(fields[0])
                status["pressureLow"] = smallInt(fields[1])
                index = 2
            if index < len(fields) and fields[index]:
                status["heartRate"] = smallInt(fields[index])
    except (IndexError, ValueError):
        pass
    return {k: v for k, v in status.items() if not isinstance(v, float) or math.isfinite(v)}



class WatchDecoder:
    """Decodes one connection's frames; remembers the device and how its frames look (for commands)."""

    def __init__(self) -> None:
        self.imei: str | None = None
        self.ident = b""
        """The device id as its frames carry it."""
        self.manufacturer = b"CS"
        """The MF of the device's last frame: commands carry it."""
        self.hasIndex = False
        """Whether the device's last frame had an INDEX field: commands then carry one too."""
        self.dead = False
        """Set by a frame that ends the connection (an invalid device id)."""

    def decode(self, frame: bytes) -> list[Message]:
        """One frame, C{[} to C{]}: its messages (an L{Identify} first, for the device's first frame)."""
        inner = frame[1:-1]
        parts = inner.split(b"*", 4)
        if len(parts) < 4:
            return [BadFrame("decode", _NOT_A_FRAME)]
        mf, ident = parts[0], parts[1]
        if len(parts) == 5 and isHex4(parts[2]) and isHex4(parts[3]):
            index: bytes | None = parts[2]
            length = parts[3]
            content = parts[4]
        else:
            index = None
            length = parts[2]
            content = inner[len(mf) + len(ident) + len(length) + 3 :]
        if not (mf.isalnum() and len(mf) <= 8) or not isHex4(length):
            return [BadFrame("decode", _NOT_A_FRAME)]
        out: list[Message] = []
        if self.imei is None or ident != self.ident:
            bad = self._identity(ident, out)
            if bad is not None:
                return [bad]
        self.manufacturer = mf
        self.hasIndex = index is not None
        self._content(mf, ident, index, content, out)
        return out

    def _identity(self, ident: bytes, out: list[Message]) -> BadFrame | None:
        """The first frame identifies the device (an L{Identify} into C{out}); another id is a bad frame."""
        if self.imei is not None:
            return BadFrame("identity", f"device id {text(ident)!r} on the connection of {self.imei!r}")
        imei = ident.decode("ascii", "replace")
        if not is_valid_imei(imei):
            self.dead = True
            return BadFrame("identity", f"invalid device id {imei!r}", fatal=True)
        self.imei = imei
        self.ident = ident
        out.append(Identify(imei))
        return None

    def _content(self, mf: bytes, ident: bytes, index: bytes | None, content: bytes, out: list[Message]) -> None:
        """The messages of C{KEYWORD[,FIELD]...}, into C{out}."""
        comma = content.find(b",")
        raw = content if comma < 0 else content[:comma]
        rest = b"" if comma < 0 else content[comma + 1 :]
        if not raw or not raw.isascii():
            out.append(BadFrame("decode", "missing or non-ASCII keyword"))
            return
        keyword = raw.decode("ascii")
        # (the acks are built in each branch: a closure made for every frame cost more than they do)
        if keyword == "LK":
            out.append(Heartbeat(frameBytes(mf, ident, index, b"LK"), self._lk(rest) if comma >= 0 else None))
        elif keyword.startswith("UD") or keyword.startswith("WT"):
            try:
                data = decodePosition(splitFields(rest))
            except ValueError as e:
                out.append(BadFrame("decode", f"{keyword}: {e}"))
            else:
                data["keyword"] = keyword
                out.append(Uplink("location", data))
        elif keyword.startswith("AL"):
            data: dict[str, Any] = {}
            try:
                data = decodePosition(splitFields(rest)) if comma >= 0 else {}
            except ValueError:
                pass
            data["alarm"] = data.get("alarm") or "general"
            data["keyword"] = keyword
            out.append(Uplink("alarm", data, frameBytes(mf, ident, index, b"AL")))
        elif keyword in ("TKQ", "TKQ2"):
            out.append(Heartbeat(frameBytes(mf, ident, index, raw)))
        elif keyword == "INIT":
            out.append(Uplink("raw", {"text": text(unescape(content))}, frameBytes(mf, ident, index, b"INIT,1")))
        elif keyword in ("JXTK", "img") or keyword == "TK" and len(unescape(rest)) > 1:
            out.append(self._binary(keyword, rest, lambda answer: frameBytes(mf, ident, index, answer)))
        else:
            upper = keyword.upper()
            fields = splitFields(rest) if comma >= 0 else []
            if upper in _HEALTH and comma >= 0:
                status = _health(upper, fields)
                if status:
                    out.append(Heartbeat(status=status))
                    return
            out.append(Answer(upper, fields, unmatched=Uplink("raw", {"text": text(unescape(content))})))

    @staticmethod
    def _lk(rest: bytes) -> dict[str, Any] | None:
        """The steps, rolls and battery of an LK heartbeat, if it has them."""
        fields = splitFields(rest)
        if len(fields) < 3:
            return None
        status = {}
        for key, value in zip(("steps", "rolls", "battery"), fields):
            number = intOrNone(value)
            if number is not None:
                status[key] = number
        return status or None

    @staticmethod
    def _binary(keyword: str, rest: bytes, ack) -> Message:
        """Voice (C{TK}, C{JXTK} parts) and photos (C{img}): text header fields, then binary."""
        headers = {"TK": 0, "JXTK": 4, "img": 2}[keyword]
        parts = rest.split(b",", headers)
        if len(parts) <= headers:
            return BadFrame("decode", f"{keyword}: missing header fields")
        header = ",".join([keyword] + splitFields(b",".join(parts[:headers]))) if headers else keyword
        data = {"text": header, "hex": unescape(parts[headers]).hex()}
        return Uplink("raw", data, ack(b"JXTKR,1") if keyword == "JXTK" else b"")

