"""
A simulated 3G/4G kids' watch (the C{watch} protocol, see L{devicehub.devices.codecs.watch}).

Sans-IO: every method returns the bytes the watch sends; L{WatchDevice.feed} takes what
the hub sends and returns the watch's answers. Frames follow the manufacturer's protocol
document: C{[MF*ID*LEN*CONTENT]} (C{[MF*ID*INDEX*LEN*CONTENT]} for a watch that numbers its
frames), LEN the content's length in 4 upper-case hex digits, C{} [ ] , *} inside a field
escaped as C{7D 01..05}. Its frame builders are also what the tests build frames with.
"""

import time as _time
from collections.abc import Sequence
from datetime import datetime, timezone

_ESCAPES = {0x7D: b"}\x01", 0x5B: b"}\x02", 0x5D: b"}\x03", 0x2C: b"}\x04", 0x2A: b"}\x05"}
_UNESCAPES = {1: 0x7D, 2: 0x5B, 3: 0x5D, 4: 0x2C, 5: 0x2A}
# Status word bits of an alarm (the high half of the watch's status field).
ALARM_BITS = {"sos": 16, "lowBattery": 17, "geofenceExit": 18, "geofenceEnter": 19, "removing": 20, "fallDown": 21}
# Frames the hub sends as acknowledgements, never as commands.
ACKS = frozenset({"LK", "AL", "TKQ", "TKQ2", "INIT", "JXTKR"})


def escapeField(data: bytes) -> bytes:
    """One field as the watch sends it: each of C{} [ ] , *} becomes C{7D} and 01..05."""
    return b"".join(_ESCAPES.get(b, bytes((b,))) for b in data)


def unescapeField(data: bytes) -> bytes:
    """The bytes of one field as received (C{7D} and 01..05 back to C{} [ ] , *})."""
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == 0x7D and i + 1 < len(data) and data[i + 1] in _UNESCAPES:
            out.append(_UNESCAPES[data[i + 1]])
            i += 2
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def buildFrame(
    manufacturer: str, ident: str, content: bytes, index: int | None = None, length: int | None = None
) -> bytes:
    """
    C{[MF*ID*(INDEX*)LEN*CONTENT]}; C{content} as sent (already escaped).

    @param length: the LEN field's value (default: the content's length; real devices get it wrong).
    """
    head = f"[{manufacturer}*{ident}*"
    if index is not None:
        head += f"{index:04X}*"
    head += f"{len(content) if length is None else length:04X}*"
    return head.encode("ascii") + content + b"]"


def content(keyword: str, *fields: str | bytes) -> bytes:
    """C{KEYWORD,field,...} with each field UTF-8 encoded (if a string) and escaped."""
    parts = [keyword.encode("ascii")]
    parts += [escapeField(f.encode("utf-8") if isinstance(f, str) else f) for f in fields]
    return b",".join(parts)


def splitFrames(data: bytes) -> tuple[list[bytes], bytes]:
    """The complete frames in C{data} (bracket-framed, escaped inside) and the bytes left over."""
    frames = []
    while True:
        start = data.find(b"[")
        end = data.find(b"]", start)
        if start < 0 or end < 0:
            return frames, data[start:] if start >= 0 else b""
        frames.append(data[start : end + 1])
        data = data[end + 1 :]


def parseFrame(frame: bytes) -> tuple[str, str, str | None, str, list[str]]:
    """C{(manufacturer, id, index or None, keyword, fields)} of one well-formed frame."""
    inner = frame[1:-1]
    parts = inner.split(b"*", 4)
    if len(parts) == 5 and len(parts[2]) == 4 and len(parts[3]) == 4 and b"," not in parts[2] + parts[3]:
        mf, ident, index, _, body = parts
    else:
        mf, ident, _, body = inner.split(b"*", 3)
        index = None
    keyword, *fields = body.split(b",")
    return (
        mf.decode(),
        ident.decode(),
        index.decode() if index is not None else None,
        keyword.decode(),
        [unescapeField(f).decode("utf-8", "replace") for f in fields],
    )


def _moment(when: datetime | float | None) -> datetime:
    if when is None:
        return datetime.now(timezone.utc)
    if isinstance(when, datetime):
        return when.astimezone(timezone.utc) if when.tzinfo else when
    return datetime.fromtimestamp(when, timezone.utc)


class WatchDevice:
    """
    A watch: identifies with C{LK}, sends positions (C{UD}) and alarms (C{AL}), and answers
    every command with a frame of the command's keyword, as real watches do (C{UPLOAD,600}
    -> C{[MF*ID*0006*UPLOAD]}); C{VERNO} answers with its version and C{CR} is followed by a
    position, as a real watch's is.
    """

    def __init__(
        self,
        imei: str,
        manufacturer: str = "SG",
        index: int | None = None,
        silent: bool = False,
        battery: int = 87,
        steps: int = 0,
        version: str = "DEVICEHUB_SIM_V1.0",
        replies: dict[str, Sequence[str]] | None = None,
    ) -> None:
        """
        @param index: the first INDEX of a watch that numbers its frames (None: no INDEX field).
        @param silent: never answer commands (still records them).
        @param replies: fields to answer given keywords with (upper case), beyond C{VERNO}.
        """
        self.imei = imei
        self.manufacturer = manufacturer
        self.index = index
        self.silent = silent
        self.battery = battery
        self.steps = steps
        self.replies = {"VERNO": [version], **(replies or {})}
        self.commands: list[tuple[str, list[str]]] = []
        """Commands received: C{(keyword, fields)}, in order."""
        self.acks: list[str] = []
        """Acknowledgements received (C{LK}, C{AL}, C{TKQ}, C{INIT,1}, ...), in order."""
        self.lastPosition: tuple[float, float] | None = None
        self._buffer = b""

    def frame(self, body: bytes, length: int | None = None) -> bytes:
        """One frame of this watch around C{body} (a content as sent), numbering it if the watch does."""
        index = self.index
        if index is not None:
            self.index = (index + 1) & 0xFFFF
        return buildFrame(self.manufacturer, self.imei, body, index, length)

    def hello(self) -> bytes:
        """The first frame after connecting: a C{LK} link keep-alive with steps, rolls and battery."""
        return self.heartbeat()

    def heartbeat(self) -> bytes:
        """C{LK,steps,rolls,battery}: the watch's link keep-alive, sent every few minutes."""
        return self.frame(content("LK", str(self.steps), "0", str(self.battery)))

    def _positionFields(
        self, lat: float, lon: float, speed: float, course: float, when, valid: bool, status: int, wifi
    ) -> list[str]:
        moment = _moment(when)
        fields = [
            moment.strftime("%d%m%y"), moment.strftime("%H%M%S"), "A" if valid else "V",
            f"{abs(lat):.6f}", "N" if lat >= 0 else "S", f"{abs(lon):.6f}", "E" if lon >= 0 else "W",
            f"{speed:.2f}", f"{course:.1f}", "0.0", "8" if valid else "0", "100", str(self.battery),
            str(self.steps), "0", f"{status:08X}",
            # one cell: count, timing advance, MCC, MNC, LAC, CID, signal
            "1", "255", "244", "5", "1001", "20002", "130",
        ]
        fields.append(str(len(wifi)))
        for name, mac, rssi in wifi:
            fields += [name, mac, str(rssi)]
        return fields

    def position(
        self,
        lat: float,
        lon: float,
        speed: float = 0.0,
        course: float = 0.0,
        time: datetime | float | None = None,
        valid: bool = True,
        keyword: str = "UD",
        wifi: Sequence[tuple[str, str, int]] = (),
    ) -> bytes:
        """
        A position report (C{UD}; C{UD2} for stored ones, C{UD_LTE}, C{UD_WCDMA}, C{WT} by other watches).

        @param speed: km/h. @param time: the fix time (a datetime, UTC if naive, or a Unix time; default now).
        @param wifi: access points seen, C{(name, mac, rssi)}.
        """
        self.lastPosition = (lat, lon)
        fields = self._positionFields(lat, lon, speed, course, time, valid, 0, wifi)
        return self.frame(content(keyword, *fields))

    def alarm(
        self,
        lat: float | None = None,
        lon: float | None = None,
        kind: str = "sos",
        time: datetime | float | None = None,
    ) -> bytes:
        """An C{AL} alarm (C{sos}, C{lowBattery}, C{geofenceExit}, C{geofenceEnter}, C{removing}, C{fallDown}) with a position (no fix when none is given)."""
        valid = lat is not None and lon is not None
        fields = self._positionFields(
            lat or 0.0, lon or 0.0, 0.0, 0.0, time, valid, 1 << ALARM_BITS[kind], ()
        )
        return self.frame(content("AL", *fields))

    def feed(self, data: bytes) -> list[bytes]:
        """Take what the hub sent; return the watch's answers (acks are recorded, never answered)."""
        frames, self._buffer = splitFrames(self._buffer + data)
        out = []
        for frame in frames:
            _, _, _, keyword, fields = parseFrame(frame)
            if keyword in ACKS:
                self.acks.append(",".join([keyword] + fields))
                continue
            self.commands.append((keyword, fields))
            if self.silent:
                continue
            reply = self.replies.get(keyword.upper(), ["1"] if keyword.upper() == "TK" else [])
            out.append(self.frame(content(keyword, *reply)))
            if keyword.upper() == "CR" and self.lastPosition is not None:
                out.append(self.position(*self.lastPosition, time=_time.time()))
        return out
