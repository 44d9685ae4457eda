"""
The C{watch} protocol: 3G/4G kids' watches (SeTracker, "3G"/"SG"/"CS"/"ZJ" firmware).

Every frame, in both directions, is ASCII text in square brackets::

    [MF*ID*LEN*CONTENT]                 e.g. [SG*5500000042*0002*LK]
    [MF*ID*INDEX*LEN*CONTENT]           devices that number their frames (INDEX: 4 hex digits)
    CONTENT = KEYWORD[,FIELD]...        e.g. LK,1200,0,87   UD,251126,162905,A,...   CR

    MF      manufacturer code (SG, 3G, CS, ZJ, ...), echoed in every frame the hub sends
    ID      the device id: becomes the imei (from the first frame on)
    LEN     the content's length as 4 hex digits; real devices get it wrong, so it is
            checked for form only and never used for framing
    escape  inside CONTENT the bytes } [ ] , * travel as 7D 01, 7D 02, 7D 03, 7D 04, 7D 05
            (binary payloads: TK/JXTK voice, img photos; text fields such as Wi-Fi names)

Framing is by brackets: a frame runs from C{[} to the C{]} that balances it (Wi-Fi names
may hold bracket pairs); a C{]} followed by the start of a new frame C{[MF*} always ends
one. Bytes between frames are garbage (one C{decode} L{BadFrame} per run; white space is
ignored). A frame, or a run of garbage, longer than C{maxFrame} is fatal (C{too long}).

Device -> hub, and what the hub answers (same MF, ID and INDEX; LEN upper-case hex):

    LK[,steps,rolls,battery]      Heartbeat(status)                     -> [..*LK]
    AL...[,position]              Uplink("alarm", {alarm, position})    -> [..*AL]
    UD, UD2, UD3, UD_LTE, UD_WCDMA, WT...,position
                                  Uplink("location", position)          (no answer)
    TKQ, TKQ2                     Heartbeat()                           -> [..*TKQ] / [..*TKQ2]
    INIT,...                      Uplink("raw", {text})                 -> [..*INIT,1]
    JXTK,a,b,part,parts,<audio>   Uplink("raw", {text, hex})            -> [..*JXTKR,1]
    TK,<audio> / img,a,time,<jpg> Uplink("raw", {text, hex})            (no answer)
    PULSE, HEART, BLOOD, BPHRT, TEMP, btemp2, oxygen with values
                                  Heartbeat(status: heartRate, pressureHigh, pressureLow,
                                  temperature, bloodOxygen)             (no answer)
    anything else (and TK,1)      Answer(key=KEYWORD.upper(), data=[FIELD, ...])

    position = DDMMYY,HHMMSS,A|V,lat,N|S,lon,E|W,speed km/h,course,altitude,satellites,
               gsm,battery,steps,rolls,status (hex bits),cells...,wifi...

Convention for the session: the codec cannot know which commands wait for an answer, so
every frame it does not decode itself becomes an L{Answer} whose C{key} is its keyword in
upper case and whose C{data} is the list of its fields after the keyword (strings, C{[]}
when none). An Answer that matches no unanswered command is not an answer: the session
publishes its C{unmatched} event instead, C{Uplink("raw", {"text": the frame's content}))}. Frames decoded here (heartbeats, positions, alarms, ...) are never
Answers, so they never count as the answer to a command.

Hub -> device, commands (L{WatchCodec.encodeCommand})::

    [MF*ID*LEN*INSTRUCT]            data None (or an empty list)
    [MF*ID*LEN*INSTRUCT,a,b]        data "a" or ["a", "b"]: UTF-8, each field escaped
    [MF*ID*0001*LEN*INSTRUCT,...]   for a device that sends an INDEX field

LEN counts the content's bytes as sent (after escaping). The device answers with a frame
of the same keyword (C{[MF*ID*0006*UPLOAD]} for C{UPLOAD,600}), so at most one command per
keyword (L{WatchCodec.lane}) waits for its answer.
"""

import math
import re
from datetime import datetime
from typing import Any, ClassVar, Hashable

from devicehub.common.imei import is_valid_imei
from devicehub.devices.codec import Answer, BadFrame, Heartbeat, Identify, Message, UnsupportedCommand, Uplink

# Escapes, both ways. Decoding replaces 7D 02..05 first and 7D 01 last: the only 7D bytes
# on the wire start an escape, so no replacement can form a new one.
_UNESCAPE = ((b"}\x02", b"["), (b"}\x03", b"]"), (b"}\x04", b","), (b"}\x05", b"*"), (b"}\x01", b"}"))
_ESCAPE = ((b"}", b"}\x01"), (b"[", b"}\x02"), (b"]", b"}\x03"), (b",", b"}\x04"), (b"*", b"}\x05"))
_HEX = b"0123456789abcdefABCDEF"
_WHITE = b" \t\r\n"
_FRAME_START = re.compile(rb"\[[0-9A-Za-z]{1,8}\*")
_FRAME_START_PREFIX = re.compile(rb"\[[0-9A-Za-z]{0,8}")
_FRAME_START_MAX = 10
_INSTRUCT = re.compile(r"[!-~]+")
_INSTRUCT_FORBIDDEN = re.compile(r"[\[\]*,}]")

_HEALTH = frozenset({"PULSE", "HEART", "BLOOD", "BPHRT", "TEMP", "BTEMP2", "OXYGEN"})
# Alarm bits of the status word, the alarms (high half) before the states (low half).
_ALARM_BITS = (
    (16, "sos"), (17, "lowBattery"), (18, "geofenceExit"), (19, "geofenceEnter"), (20, "removing"),
    (21, "fallDown"), (22, "fallDown"), (14, "powerCut"), (0, "lowBattery"), (1, "geofenceExit"),
    (2, "geofenceEnter"),
)
_ALARM_MASK = sum(1 << bit for bit, _ in _ALARM_BITS)


def unescape(data: bytes) -> bytes:
    """Undo the watch escaping (C{7D 01..05}); a C{7D} before any other byte is kept as is."""
    if b"}" not in data:
        return data
    for escaped, plain in _UNESCAPE:
        data = data.replace(escaped, plain)
    return data


def escape(data: bytes) -> bytes:
    """Escape C{} [ ] , *} as C{7D 01..05}, for a field the device must read as one."""
    for plain, escaped in _ESCAPE:
        if plain in data:
            data = data.replace(plain, escaped)
    return data


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def splitFields(rest: bytes) -> list[str]:
    """The fields of C{rest} (what follows the keyword's comma), split on the wire and unescaped."""
    if b"}" not in rest:
        return _text(rest).split(",")
    return [_text(unescape(field)) for field in rest.split(b",")]


def frameBytes(mf: bytes, ident: bytes, index: bytes | None, content: bytes) -> bytes:
    """One frame: C{[MF*ID*(INDEX*)LEN*CONTENT]}, LEN the length of C{content} as 4 upper-case hex digits."""
    head = b"[" + mf + b"*" + ident + b"*"
    if index is not None:
        head += index + b"*"
    return head + b"%04X*" % len(content) + content + b"]"


def _isHex4(field: bytes) -> bool:
    return len(field) == 4 and not field.strip(_HEX)


def _small(value: str, base: int = 10) -> int:
    """C{int(value, base)} for at most 12 characters: device numbers are small, and events must stay JSON."""
    if len(value) > 12:
        raise ValueError(f"number too long: {value[:16]!r}...")
    return int(value, base)


def _int(value: str) -> int | None:
    if 0 < len(value) <= 12 and value.isdigit() and value.isascii():  # the common case, cheaply
        return int(value)
    try:
        return _small(value)
    except ValueError:
        return None


def _float(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _isoTime(date: str, time: str) -> str | None:
    """DDMMYY and HHMMSS as ISO 8601 UTC, or None when they are no real moment."""
    if len(date) != 6 or len(time) != 6 or not (date + time).isascii() or not (date + time).isdigit():
        return None
    day, month, year = int(date[0:2]), int(date[2:4]), int(date[4:6])
    # (checked by range: building a datetime only to check them cost more than the whole rest)
    if not (1 <= month <= 12 and 1 <= day <= _DAYS[month]) or (month == 2 and day == 29 and year % 4):
        return None
    if int(time[0:2]) > 23 or int(time[2:4]) > 59 or int(time[4:6]) > 59:
        return None
    return f"20{date[4:6]}-{date[2:4]}-{date[0:2]}T{time[0:2]}:{time[2:4]}:{time[4:6]}Z"


def _coordinate(value: str, hemisphere: str, limit: float) -> float:
    number = float(value.strip())
    if not math.isfinite(number) or abs(number) > limit:
        raise ValueError(f"coordinate out of range: {value!r}")
    if hemisphere in ("S", "W"):
        number = -abs(number)
    return number


def alarmName(status: int) -> str | None:
    """The alarm a status word reports (C{sos}, C{lowBattery}, ...), or None."""
    if status & _ALARM_MASK:
        for bit, name in _ALARM_BITS:
            if status >> bit & 1:
                return name
    return None


def _cellNumber(value: str) -> int:
    return _small(value) if value.isdigit() else _small(value, 16)


def _network(values: list[str], data: dict[str, Any]) -> None:
    """Cells (count, timing advance, MCC, MNC, then LAC, CID, RSSI each) and Wi-Fi (count, then name, MAC, RSSI each)."""
    try:
        index = 0
        count = _small(values[index])
        index += 1
        if count > 0:
            mcc, mnc = _small(values[index + 1] or "0"), _small(values[index + 2] or "0")
            index += 3
            cells = []
            for _ in range(count):
                lac, cid, rssi = values[index : index + 3]
                cell = {"mcc": mcc, "mnc": mnc, "lac": _cellNumber(lac), "cid": _cellNumber(cid)}
                if rssi:
                    cell["rssi"] = _small(rssi)
                cells.append(cell)
                index += 3
            data["cells"] = cells
        if index < len(values) and values[index]:
            count = _small(values[index])
            index += 1
            wifi = []
            for _ in range(count):
                name, mac, rssi = values[index : index + 3]
                if mac and mac != "0" and rssi:
                    wifi.append({"name": name, "mac": mac, "rssi": _small(rssi)})
                index += 3
            if wifi:
                data["wifi"] = wifi
    except (IndexError, ValueError):
        pass  # best effort: a position without its network is still a position


def decodePosition(fields: list[str]) -> dict[str, Any]:
    """
    The location attributes of a C{UD}/C{AL}/C{WT} frame's fields.

    @raise ValueError: no position in them.
    """
    if len(fields) < 7:
        raise ValueError("position: too few fields")
    data: dict[str, Any] = {
        "lat": _coordinate(fields[3], fields[4], 90.0),
        "lon": _coordinate(fields[5], fields[6], 180.0),
        "valid": fields[2] == "A",
    }
    time = _isoTime(fields[0], fields[1])
    if time is not None:
        data["time"] = time
    n = len(fields)
    for i, key, conv in _POSITION_FIELDS:
        if i < n:
            value = conv(fields[i])
            if value is not None:
                data[key] = value
    if n > 15:
        try:
            status = _small(fields[15], 16)
        except ValueError:
            pass
        else:
            data["status"] = status
            alarm = alarmName(status)
            if alarm is not None:
                data["alarm"] = alarm
        if n > 16:
            _network(fields[16:], data)
    return data


_POSITION_FIELDS = (
    (7, "speed", _float), (8, "course", _float), (9, "altitude", _float), (10, "satellites", _int),
    (11, "gsm", _int), (12, "battery", _int), (13, "steps", _int), (14, "rolls", _int),
)


def _health(keyword: str, fields: list[str]) -> dict[str, Any]:
    status: dict[str, Any] = {}
    try:
        if keyword == "TEMP":
            status["temperature"] = float(fields[0])
        elif keyword == "BTEMP2":
            if _small(fields[0]) > 0:
                status["temperature"] = float(fields[1])
        elif keyword == "OXYGEN":
            status["bloodOxygen"] = _small(fields[1])
        else:
            index = 0
            if keyword in ("BLOOD", "BPHRT"):
                status["pressureHigh"] = _small(fields[0])
                status["pressureLow"] = _small(fields[1])
                index = 2
            if index < len(fields) and fields[index]:
                status["heartRate"] = _small(fields[index])
    except (IndexError, ValueError):
        pass
    return {k: v for k, v in status.items() if not isinstance(v, float) or math.isfinite(v)}


class WatchCodec:
    """One watch connection (see the module docstring)."""

    name: ClassVar[str] = "watch"
    serial: ClassVar[bool] = True
    errorKinds: ClassVar[tuple[str, ...]] = ("decode", "identity", "too long")

    def __init__(self, maxFrame: int) -> None:
        self.maxFrame = maxFrame
        self.imei: str | None = None
        self.manufacturer = b"CS"
        """The MF of the device's last frame: commands carry it."""
        self.hasIndex = False
        """Whether the device's last frame had an INDEX field: commands then carry one too."""
        self._ident = b""
        self._buf = b""
        self._depth = 0  # brackets open in the frame being read (0: between frames)
        self._scan = 0  # where the search for its closing bracket goes on in _buf
        self._junk = 0  # length of the current run of bytes between frames
        self._junkSeen = False  # whether that run holds more than white space
        self._dead = False

    # -- device -> hub

    def feed(self, data: bytes) -> list[Message]:
        """Take the next bytes the device sent; return the messages of every frame they complete."""
        if self._dead or not data:
            return []
        out: list[Message] = []
        buf = self._buf + data if self._buf else bytes(data)
        n = len(buf)
        pos = 0
        depth = self._depth
        scan = self._scan
        maxFrame = self.maxFrame
        while pos < n:
            if depth == 0:
                start = buf.find(b"[", pos)
                end = n if start < 0 else start
                if end > pos:
                    self._junk += end - pos
                    if not self._junkSeen and buf[pos:end].strip(_WHITE):
                        self._junkSeen = True
                    if self._junk > maxFrame:
                        return self._fatal(out, f"more than {maxFrame} bytes outside any frame")
                if start < 0:
                    pos = n
                    break
                if self._junk:
                    if self._junkSeen:
                        out.append(BadFrame("decode", f"{self._junk} bytes of garbage before a frame"))
                    self._junk = 0
                    self._junkSeen = False
                pos = start
                scan = start + 1
                depth = 1
            limit = pos + maxFrame
            close = buf.find(b"]", scan, limit)
            if close < 0:
                if n >= limit:
                    return self._fatal(out, f"frame longer than {maxFrame} bytes")
                depth += buf.count(b"[", scan, n)
                scan = n
                break
            opened = depth + buf.count(b"[", scan, close) - 1
            if opened > 0 and _FRAME_START.match(buf, close + 1) is None:
                # A "]" that leaves a "[" open (a Wi-Fi name) ends the frame anyway when the next
                # frame follows; until that is known, wait (never buffering more than maxFrame).
                after = close + 1
                if n - after >= _FRAME_START_MAX or (after < n and not _FRAME_START_PREFIX.fullmatch(buf, after)):
                    depth = opened
                    scan = after
                    continue
                if n - pos <= maxFrame:
                    depth = opened + 1  # this "]" is read again with more bytes
                    scan = close
                    break
            out.extend(self._frame(buf[pos : close + 1]))
            if self._dead:
                self._buf = b""
                return out
            pos = close + 1
            depth = 0
        # Keep only the unfinished frame (at most maxFrame bytes); garbage is never kept.
        if depth:
            self._buf = buf[pos:]
            self._scan = scan - pos
        else:
            self._buf = b""
            self._scan = 0
        self._depth = depth
        return out

    def _fatal(self, out: list[Message], error: str) -> list[Message]:
        self._dead = True
        self._buf = b""
        out.append(BadFrame("too long", error, fatal=True))
        return out

    def _frame(self, frame: bytes) -> list[Message]:
        try:
            return self._decode(frame)
        except Exception as e:  # never raise from feed(): a frame we cannot read is a bad frame
            return [BadFrame("decode", f"{type(e).__name__}: {e}")]

    def _decode(self, frame: bytes) -> list[Message]:
        inner = frame[1:-1]
        parts = inner.split(b"*", 4)
        if len(parts) < 4:
            return [BadFrame("decode", "not a [MF*ID*LEN*CONTENT] frame")]
        mf, ident = parts[0], parts[1]
        if len(parts) == 5 and _isHex4(parts[2]) and _isHex4(parts[3]):
            index: bytes | None = parts[2]
            length = parts[3]
            content = parts[4]
        else:
            index = None
            length = parts[2]
            content = inner[len(mf) + len(ident) + len(length) + 3 :]
        if not (mf.isalnum() and len(mf) <= 8) or not _isHex4(length):
            return [BadFrame("decode", "not a [MF*ID*LEN*CONTENT] frame")]
        out: list[Message] = []
        if self.imei is None:
            imei = ident.decode("ascii", "replace")
            if not is_valid_imei(imei):
                self._dead = True
                return [BadFrame("identity", f"invalid device id {imei!r}", fatal=True)]
            self.imei = imei
            self._ident = ident
            out.append(Identify(imei))
        elif ident != self._ident:
            return [BadFrame("identity", f"device id {_text(ident)!r} on the connection of {self.imei!r}")]
        self.manufacturer = mf
        self.hasIndex = index is not None

        comma = content.find(b",")
        raw = content if comma < 0 else content[:comma]
        rest = b"" if comma < 0 else content[comma + 1 :]
        if not raw or not raw.isascii():
            out.append(BadFrame("decode", "missing or non-ASCII keyword"))
            return out
        keyword = raw.decode("ascii")

        def ack(text: bytes) -> bytes:
            return frameBytes(mf, ident, index, text)

        if keyword == "LK":
            out.append(Heartbeat(ack(b"LK"), self._lk(rest) if comma >= 0 else None))
        elif keyword.startswith("AL"):
            data: dict[str, Any] = {}
            try:
                data = decodePosition(splitFields(rest)) if comma >= 0 else {}
            except ValueError:
                pass
            data["alarm"] = data.get("alarm") or "general"
            data["keyword"] = keyword
            out.append(Uplink("alarm", data, ack(b"AL")))
        elif keyword.startswith("UD") or keyword.startswith("WT"):
            try:
                data = decodePosition(splitFields(rest))
            except ValueError as e:
                out.append(BadFrame("decode", f"{keyword}: {e}"))
            else:
                data["keyword"] = keyword
                out.append(Uplink("location", data))
        elif keyword in ("TKQ", "TKQ2"):
            out.append(Heartbeat(ack(raw)))
        elif keyword == "INIT":
            out.append(Uplink("raw", {"text": _text(unescape(content))}, ack(b"INIT,1")))
        elif keyword in ("JXTK", "img") or keyword == "TK" and len(unescape(rest)) > 1:
            out.append(self._binary(keyword, rest, ack))
        else:
            upper = keyword.upper()
            fields = splitFields(rest) if comma >= 0 else []
            if upper in _HEALTH and comma >= 0:
                status = _health(upper, fields)
                if status:
                    out.append(Heartbeat(status=status))
                    return out
            out.append(Answer(upper, fields, unmatched=Uplink("raw", {"text": _text(unescape(content))})))
        return out

    @staticmethod
    def _lk(rest: bytes) -> dict[str, Any] | None:
        fields = splitFields(rest)
        if len(fields) < 3:
            return None
        status = {}
        for key, value in zip(("steps", "rolls", "battery"), fields):
            number = _int(value)
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
        text = ",".join([keyword] + splitFields(b",".join(parts[:headers]))) if headers else keyword
        data = {"text": text, "hex": unescape(parts[headers]).hex()}
        return Uplink("raw", data, ack(b"JXTKR,1") if keyword == "JXTK" else b"")

    # -- hub -> device

    def lane(self, instruct: str) -> Hashable:
        """One unanswered command per keyword: the device's answer carries nothing but the keyword."""
        return instruct.upper()

    def encodeCommand(self, instruct: str, data: Any, number: int) -> tuple[bytes, Hashable]:
        """C{[MF*ID*LEN*INSTRUCT(,field)...]}; C{data}: None, a string or a list of strings."""
        if (
            not isinstance(instruct, str)
            or not _INSTRUCT.fullmatch(instruct)
            or _INSTRUCT_FORBIDDEN.search(instruct)
        ):
            raise UnsupportedCommand(
                "watch: instruct must be one keyword of printable ASCII without [ ] * , } "
                "(arguments go in data)"
            )
        if data is None:
            fields: list[str] = []
        elif isinstance(data, str):
            fields = [data]
        elif isinstance(data, list) and all(isinstance(field, str) for field in data):
            fields = data
        else:
            raise UnsupportedCommand("watch: data must be null, a string or a list of strings")
        if self.imei is None:
            raise UnsupportedCommand("watch: the device has not identified yet")
        content = b",".join([instruct.encode("ascii")] + [escape(field.encode("utf-8")) for field in fields])
        if len(content) > 0xFFFF:
            raise UnsupportedCommand("watch: command longer than 65535 bytes")
        frame = frameBytes(self.manufacturer, self._ident, b"0001" if self.hasIndex else None, content)
        return frame, instruct.upper()

    @property
    def ready(self) -> bool:
        """Always: a watch takes commands from its first frame on."""
        return True

    def refused(self, status: int, error: str) -> bytes:
        """Nothing: a refused watch is disconnected."""
        return b""

    def error(self, error: str) -> bytes:
        """Nothing: the protocol has no error frame."""
        return b""
