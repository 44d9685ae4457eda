"""
GT06: Concox GT06 trackers and their many clones (CONTRACT §5).

Binary frames, big-endian; CRC = CRC-16/X-25 (the documents' CRC-ITU) over LEN..SERIAL::

    78 78 LEN(1) PROTO CONTENT... SERIAL(2) CRC(2) 0D 0A    LEN = 1 + len(CONTENT) + 4
    79 79 LEN(2) PROTO CONTENT... SERIAL(2) CRC(2) 0D 0A    the same, for long packets

    device -> hub  01 login    IMEI(8, BCD, leading nibble 0) [TYPE(2) [TIMEZONE/LANGUAGE(2)]]
    device -> hub  13 status   INFO VOLTAGE-LEVEL(0-6) GSM(0-4) ALARM LANGUAGE
    device -> hub  23 heartbeat INFO VOLTAGE(2, 0.01 V) GSM LANGUAGE(2)
    device -> hub  10 11 12 22 position: TIME(6: Y-2000 M D h m s) SATS LAT(4) LON(4) KM/H
                   COURSE+FLAGS(2) then, but for 10, the cell (MCC MNC LAC CELL)
    device -> hub  16 26 27 alarm: as 12 with a cell-length byte, then INFO VOLTAGE-LEVEL GSM ALARM ...
    hub -> device  78 78 05 PROTO SERIAL CRC 0D 0A   the ack of 01 13 23 10 11 12 16 22 26 27 15,
                                                      echoing the packet's protocol and serial
    hub -> device  78 78 LEN 80 CMDLEN SERVERFLAG(4) COMMAND(ASCII) SERIAL CRC 0D 0A
    device -> hub  15 reply    CMDLEN SERVERFLAG(4) TEXT(ASCII) LANGUAGE(2)       (acked)
    device -> hub  79 79 LEN(2) 21 SERVERFLAG(4) ENCODING(1: ASCII, 2: UTF-16BE) TEXT   (not acked)

Framing (as real devices need it): a frame is LEN's length when it ends in C{0D 0A} there
(or two bytes later: some firmware leaves the CRC out of LEN). Otherwise LEN is wrong or
the frame is not all here yet: an earlier C{0D 0A} whose CRC is right ends it at once (the
device waits for its ack, it sends no more), a whole frame behind a stray start byte or a
torn frame is skipped to, and once both ends LEN allows have arrived the first C{0D 0A}
ends it. Bytes before a C{78 78}/C{79 79} are garbage; a frame longer than C{maxFrame} is
fatal. The identity is the login's 15 digits; a login with a time zone makes later times
local to it (as Traccar reads them). Commands carry C{instruct} as their ASCII text and
C{number} as their server flag; replies are matched by that flag, or taken by the only
unanswered command when the device echoes another flag (many send 0).
"""

import struct
from datetime import datetime, timedelta
from typing import Any, Hashable

from fastcrc.crc16 import ibm_sdlc as crcX25

from devicehub.common.imei import is_valid_imei
from devicehub.devices.codec import Answer, BadFrame, Heartbeat, Identify, Message, Reply, UnsupportedCommand, Uplink

LOGIN = 0x01
HEARTBEAT_BARE = 0x08
GPS = 0x10
GPS_LBS_6 = 0x11
GPS_LBS = 0x12
STATUS = 0x13
STRING = 0x15
GPS_LBS_STATUS = 0x16
STRING_INFO = 0x21
GPS_LBS_2 = 0x22
HEARTBEAT = 0x23
GPS_LBS_STATUS_2 = 0x26
GPS_LBS_STATUS_3 = 0x27
COMMAND = 0x80

ACKED = frozenset({LOGIN, STATUS, HEARTBEAT, STRING, GPS, GPS_LBS_6, GPS_LBS, GPS_LBS_2,
                   GPS_LBS_STATUS, GPS_LBS_STATUS_2, GPS_LBS_STATUS_3})
"""The short-frame protocols the hub acks (CONTRACT §5: login, status, positions, alarms; and replies)."""

MAX_COMMAND = 255 - 10
"""The longest command text: LEN is one byte and counts 10 bytes besides the text."""

# The alarm byte of status, alarm and heartbeat packets (names as Traccar's).
ALARMS = {
    0x01: "sos", 0x02: "powerCut", 0x03: "vibration", 0x04: "geofenceEnter", 0x05: "geofenceExit",
    0x06: "overspeed", 0x09: "vibration", 0x0E: "lowBattery", 0x0F: "lowBattery", 0x11: "powerOff",
    0x13: "tampering", 0x14: "door", 0x23: "fallDown", 0x29: "hardAcceleration", 0x2A: "hardCornering",
    0x2B: "hardCornering", 0x2C: "accident", 0x30: "hardBraking",
}
# Bits 3-5 of the terminal information byte.
INFO_ALARMS = {1: "vibration", 2: "powerCut", 3: "lowBattery", 4: "sos", 6: "geofence", 7: "removing"}
ACC_EVENTS = {0xFE: True, 0xFF: False}
"""Alarm bytes that are ACC (ignition) events, not alarms."""

_u16 = struct.Struct(">H").unpack_from
_u32 = struct.Struct(">I").unpack_from
_gps = struct.Struct(">6BBIIBH").unpack_from


def crc(data: bytes) -> bytes:
    """The two CRC bytes of C{data} (the frame from LEN through SERIAL)."""
    return crcX25(data).to_bytes(2, "big")


def frame(proto: int, content: bytes, serial: int, long: bool = False) -> bytes:
    """A whole frame: start, length, C{proto}, C{content}, C{serial}, CRC, stop."""
    size = len(content) + 5
    body = (size.to_bytes(2, "big") if long else bytes((size,))) + bytes((proto,)) + content + serial.to_bytes(2, "big")
    return (b"\x79\x79" if long else b"\x78\x78") + body + crc(body) + b"\r\n"


def ack(proto: int, serial: bytes) -> bytes:
    """The hub's ack of a packet: C{78 78 05 PROTO SERIAL CRC 0D 0A} (C{serial}: its 2 bytes)."""
    body = b"\x05" + bytes((proto,)) + serial
    return b"\x78\x78" + body + crc(body) + b"\r\n"


def _crcOk(buf: bytes, start: int, end: int) -> bool:
    """Whether C{buf[start:end]}, a candidate frame ending in 0D 0A, carries its right CRC."""
    if end - start < 10:
        return False
    return crcX25(memoryview(buf)[start + 2:end - 4]) == (buf[end - 4] << 8 | buf[end - 3])


def _nextStart(buf: bytes, start: int, stop: int) -> int:
    """Where the next C{78 78} or C{79 79} begins in C{buf[start:stop]}, or -1."""
    a = buf.find(b"\x78\x78", start, stop)
    b = buf.find(b"\x79\x79", start, stop)
    if a < 0:
        return b
    if b < 0:
        return a
    return min(a, b)


class _Starts:
    """The next frame start after a position, for positions that only grow (each byte searched once)."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.short = self.long = -2  # -2: not searched yet; -1: none at or after the last search

    def after(self, start: int) -> int:
        if self.short != -1 and self.short < start:
            self.short = self.buf.find(b"\x78\x78", start)
        if self.long != -1 and self.long < start:
            self.long = self.buf.find(b"\x79\x79", start)
        if self.short < 0:
            return self.long
        if self.long < 0:
            return self.short
        return min(self.short, self.long)


MAX_CHECKS = 8
"""CRCs tried per frame start for an end, or a start, that LEN does not give."""


class _Search:
    """
    Where a frame whose LEN does not end it ends, kept across reads so that every byte is
    searched once and at most L{MAX_CHECKS} candidates are checked however the bytes trickle in.
    """

    def __init__(self, headerSize: int) -> None:
        self.scanFrom = headerSize
        """Where (from the frame's start) to look for the next 0D 0A."""
        self.nearest = -1
        """The first 0D 0A (from the frame's start), once seen."""
        self.checks = 0
        self.startsChecked = False

    def run(self, buf: bytes, i: int, stop: int, lengthWrong: bool) -> tuple[int, int]:
        """
        Search C{buf[i:stop]}: (end, 0) for a frame of C{end} bytes, (0, skip) when a whole
        frame begins C{skip} bytes on, (0, 0) to wait for more bytes.

        @param lengthWrong: both ends LEN allows are here and neither is one.
        """
        # Don't wait for bytes a device may never send (it waits for its ack): an 0D 0A
        # whose CRC proves it ends the frame.
        if self.checks < MAX_CHECKS or self.nearest < 0:
            k = buf.find(b"\r\n", i + self.scanFrom, stop)
            while k >= 0:
                if self.nearest < 0:
                    self.nearest = k - i
                if self.checks >= MAX_CHECKS:
                    break
                self.checks += 1
                if _crcOk(buf, i, k + 2):
                    return k + 2 - i, 0
                k = buf.find(b"\r\n", k + 1, stop)
            # Resume at the last byte: a 0D there may meet its 0A in the next read.
            self.scanFrom = max(self.scanFrom, stop - i - 1)
        if self.nearest < 0:
            return 0, 0
        if not self.startsChecked:
            # A stray start byte or a torn frame before a whole one: skip to the whole one.
            self.startsChecked = True
            cut = i + self.nearest + 2
            j = _nextStart(buf, i + 1, cut)
            for _ in range(MAX_CHECKS):
                if j < 0:
                    break
                if _crcOk(buf, j, cut):
                    return 0, j - i
                j = _nextStart(buf, j + 1, cut)
        if lengthWrong:
            # Both ends LEN allows are here and neither is one: the first 0D 0A ends it.
            return self.nearest + 2, 0
        return 0, 0


def _text(data: bytes, encoding: str) -> str:
    return data.decode(encoding, "replace").rstrip("\x00")


def _info(info: int) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "defense": bool(info & 0x01),
        "acc": bool(info & 0x02),
        "charging": bool(info & 0x04),
        "gps": bool(info & 0x40),
        "blocked": bool(info & 0x80),
    }
    alarm = INFO_ALARMS.get((info >> 3) & 0x07)
    if alarm is not None:
        fields["alarm"] = alarm
    return fields


_INFO = tuple(_info(info) for info in range(256))


def decodeInfo(info: int, into: dict[str, Any]) -> None:
    """The terminal information byte: defense, ACC, charging, alarm bits, GPS on, fuel/power cut."""
    into.update(_INFO[info])


def decodeAlarm(code: int, into: dict[str, Any]) -> None:
    """The alarm byte: a known alarm's name wins over the information byte's alarm bits."""
    if code == 0:
        return
    if code in ACC_EVENTS:
        into["acc"] = ACC_EVENTS[code]
        return
    into["alarmCode"] = code
    name = ALARMS.get(code)
    if name is not None:
        into["alarm"] = name


def decodeLevels(level: int, gsm: int, into: dict[str, Any]) -> None:
    """The voltage level (0-6, as a percentage too, like Traccar) and the GSM signal level (0-4)."""
    into["voltageLevel"] = level
    if level <= 6:
        into["battery"] = level * 100 // 6
    into["gsm"] = gsm


class Gt06Codec:
    """One GT06 connection (see the module docstring and L{devicehub.devices.codec})."""

    name = "gt06"
    serial = True
    errorKinds = ("checksum", "decode", "identity", "too long")

    def __init__(self, maxFrame: int) -> None:
        self.maxFrame = maxFrame
        self.imei: str | None = None
        self._buf = bytearray()
        self._wait: _Search | None = None
        """The search for the end of the frame the held bytes begin, when LEN does not end it."""
        self._dead = False
        self._commandSerial = -1
        self._offset: timedelta | None = None
        """The login's time zone, when it gave one other than UTC."""

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (never more than C{maxFrame})."""
        return len(self._buf)

    # -- device -> hub

    def feed(self, data: bytes) -> list[Message]:
        """Take the next bytes from the device; return the messages of the frames they complete."""
        if self._dead:
            return []
        held = self._buf
        if held:
            held += data
            buf = held
        else:
            buf = bytes(data)
        size = len(buf)
        maxFrame = self.maxFrame
        out: list[Message] = []
        starts = _Starts(buf)
        garbage = (-1, 0)
        waited, self._wait = self._wait, None
        i = 0
        while i < size:
            first = buf[i]
            if (first != 0x78 and first != 0x79) or (i + 1 < size and buf[i + 1] != first):
                j = starts.after(i + 1)
                if j < 0:
                    # Keep a last byte that may be the first half of a start.
                    j = size - 1 if buf[-1] in (0x78, 0x79) and size - 1 > i else size
                garbage = self._garbage(out, garbage, i, j)
                i = j
                continue
            rem = size - i
            long = first == 0x79
            if rem < (4 if long else 3):
                break
            n = ((buf[i + 2] << 8 | buf[i + 3]) + 6) if long else buf[i + 2] + 5
            if n > maxFrame:
                return self._fatal(out, f"a frame of {n} bytes (longest {maxFrame})")
            if rem >= n and buf[i + n - 2] == 0x0D and buf[i + n - 1] == 0x0A:
                end = n
            elif rem >= n + 2 and buf[i + n] == 0x0D and buf[i + n + 1] == 0x0A:
                end = n + 2
            else:
                # LEN is wrong, or the frame is not all here yet.
                search = waited if i == 0 and waited is not None else _Search(5 if long else 4)
                waited = None
                end, skip = search.run(buf, i, min(size, i + maxFrame), rem >= n + 2)
                if skip:
                    garbage = self._garbage(out, garbage, i, i + skip)
                    i += skip
                    continue
                if not end:
                    if rem >= maxFrame:
                        return self._fatal(out, f"no frame end within {maxFrame} bytes")
                    self._wait = search
                    break
            if end > maxFrame:
                return self._fatal(out, f"a frame of {end} bytes (longest {maxFrame})")
            try:
                out.append(self._decode(bytes(buf[i:i + end])))
            except Exception as e:  # never raise from feed: an undecodable frame is a bad frame
                out.append(BadFrame("decode", f"{type(e).__name__}: {e}"))
            i += end
        if held:
            del held[:i]
        elif i < size:
            self._buf = bytearray(buf[i:])
        return out

    @staticmethod
    def _garbage(out: list[Message], run: tuple[int, int], i: int, j: int) -> tuple[int, int]:
        """Count C{buf[i:j]} as garbage: one bad frame for a run of it. Returns the run (start, end)."""
        start = run[0] if run[1] == i and out and isinstance(out[-1], BadFrame) else i
        if start != i:
            out.pop()
        out.append(BadFrame("decode", f"{j - start} bytes of garbage before a frame start"))
        return (start, j)

    def _fatal(self, out: list[Message], error: str) -> list[Message]:
        self._dead = True
        self._buf = bytearray()
        self._wait = None
        out.append(BadFrame("too long", error, fatal=True))
        return out

    def _decode(self, f: bytes) -> Message:
        """One frame, from its start to its 0D 0A."""
        long = f[0] == 0x79
        h = 4 if long else 3
        if len(f) < h + 7:
            if f == b"\x78\x78\x01\x08\r\n":
                # The bare heartbeat some clones send: no serial, no CRC, no ack.
                return Heartbeat()
            return BadFrame("decode", f"a frame of {len(f)} bytes is too short")
        if crcX25(f[2:-4]) != (f[-4] << 8 | f[-3]):
            return BadFrame("checksum", f"CRC {f[-4:-2].hex()} does not match")
        proto = f[h]
        body = f[h + 1:-6]
        serial = f[-6:-4]
        if long:
            if proto == STRING_INFO and len(body) >= 5:
                (flag,) = _u32(body, 0)
                text = _text(body[5:], "ascii" if body[4] == 1 else "utf-16-be")
                return Answer(flag, text, fallback=True)
            return Uplink("raw", {"hex": f.hex()})
        reply = ack(proto, serial) if proto in ACKED else b""
        if proto == LOGIN:
            return self._login(body, reply)
        if proto == STATUS:
            return Heartbeat(reply, self._status(body))
        if proto == HEARTBEAT:
            return Heartbeat(reply, self._heartbeat(body))
        if proto == HEARTBEAT_BARE:
            return Heartbeat()
        if proto == STRING:
            if len(body) < 5:
                return BadFrame("decode", "a reply without its server flag")
            size = body[0]
            (flag,) = _u32(body, 1)
            # Some firmware sends 0 as the command length: the text then runs up to the language.
            text = body[5:1 + size] if 4 <= size <= len(body) - 1 else body[5:-2]
            return Answer(flag, _text(text, "utf-8"), reply, fallback=True)
        if proto in ACKED:
            data = self._position(proto, body)
            if data is None:
                return Uplink("raw", {"hex": f.hex()}, reply)
            return Uplink("alarm" if "alarm" in data else "location", data, reply)
        return Uplink("raw", {"hex": f.hex()})

    def _login(self, body: bytes, reply: bytes) -> Message:
        if len(body) < 8:
            return BadFrame("decode", "a login without its 8 IMEI bytes")
        imei = body[:8].hex()[1:]
        if self.imei is not None:
            if imei != self.imei:
                return BadFrame("identity", f"a second login as {imei!r}", fatal=True)
            return Reply(reply)
        if not is_valid_imei(imei):
            return BadFrame("identity", f"invalid IMEI {imei!r}", fatal=True)
        self.imei = imei
        if len(body) >= 12:
            (zone,) = _u16(body, 10)
            value = zone >> 4
            seconds = (value // 100 * 60 + value % 100) * 60
            if seconds:
                self._offset = timedelta(seconds=-seconds if zone & 0x08 else seconds)
        return Identify(imei, reply=reply)

    def _status(self, body: bytes) -> dict[str, Any]:
        if len(body) > 6:
            # Not the document's layout (models differ): publish the content as it is.
            return {"hex": body.hex()}
        status: dict[str, Any] = {}
        if body:
            decodeInfo(body[0], status)
        if len(body) >= 3:
            decodeLevels(body[1], body[2], status)
        if len(body) >= 4:
            decodeAlarm(body[3], status)
        return status

    def _heartbeat(self, body: bytes) -> dict[str, Any]:
        status: dict[str, Any] = {}
        if body:
            decodeInfo(body[0], status)
        if len(body) >= 3:
            status["voltage"] = _u16(body, 1)[0] / 100
        if len(body) >= 4:
            status["gsm"] = body[3]
        return status

    def _time(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> str | None:
        try:
            t = datetime(2000 + y, mo, d, h, mi, s)
        except ValueError:
            return None
        if self._offset is not None:
            t -= self._offset
        return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}Z"

    def _position(self, proto: int, body: bytes) -> dict[str, Any] | None:
        """A position packet's fields, or None when they don't fit its protocol's layout."""
        try:
            y, mo, d, h, mi, s, sats, lat, lon, speed, flags = _gps(body, 0)
        except struct.error:
            return None
        lat /= 1_800_000
        lon /= 1_800_000
        if lat > 90 or lon > 180:
            return None
        data: dict[str, Any] = {
            "lat": lat if flags & 0x0400 else -lat or 0.0,
            "lon": -lon or 0.0 if flags & 0x0800 else lon,
            "time": self._time(y, mo, d, h, mi, s),
            "valid": bool(flags & 0x1000),
            "speed": speed,
            "course": flags & 0x03FF,
            "satellites": sats & 0x0F,
        }
        if data["time"] is None:
            del data["time"]
        if flags & 0x4000:
            data["acc"] = bool(flags & 0x8000)
        if proto == GPS:
            return data
        p = 18
        size = len(body)
        if proto in (GPS_LBS_STATUS, GPS_LBS_STATUS_2, GPS_LBS_STATUS_3):
            if size < 19:
                return None
            cells = body[18]
            p = 19
            if cells:
                p = self._cell(proto, body, p, data)
                if cells > 9:
                    p += cells - 9
            if size < p + 4:
                return None
            decodeInfo(body[p], data)
            decodeLevels(body[p + 1], body[p + 2], data)
            decodeAlarm(body[p + 3], data)
            if proto == GPS_LBS_STATUS_3 and size >= p + 7:
                data["geofence"] = body[p + 6]
            return data
        p = self._cell(proto, body, p, data)
        if p > size:
            return None
        if proto == GPS_LBS_2 and size >= p + 3:
            data["acc"] = body[p] > 0
            data["uploadMode"] = body[p + 1]
            data["reupload"] = body[p + 2] > 0
            p += 3
        if size == p + 4:
            data["mileage"] = _u32(body, p)[0]
        return data

    def _cell(self, proto: int, body: bytes, p: int, data: dict[str, Any]) -> int:
        """The serving cell (MCC MNC LAC CELL) at C{p}; where it ends (past the end if cut short)."""
        if len(body) < p + 8:
            return len(body) + 1
        (mcc,) = _u16(body, p)
        if mcc & 0x8000 or proto == GPS_LBS_6:
            (mnc,) = _u16(body, p + 2)
            p += 4
        else:
            mnc = body[p + 2]
            p += 3
        if len(body) < p + (6 if proto == GPS_LBS_6 else 5):
            return len(body) + 1
        (lac,) = _u16(body, p)
        if proto == GPS_LBS_6:
            (cid,) = _u32(body, p + 2)
            p += 6
        else:
            cid = body[p + 2] << 16 | body[p + 3] << 8 | body[p + 4]
            p += 5
        data["mcc"] = mcc & 0x7FFF
        data["mnc"] = mnc
        data["lac"] = lac
        data["cid"] = cid
        return p

    # -- hub -> device

    def lane(self, instruct: str) -> Hashable:
        """One unanswered command per device: replies carry no reliable id."""
        return None

    def encodeCommand(self, instruct: str, data: Any, number: int) -> tuple[bytes, Hashable]:
        """A server command (0x80) carrying C{instruct} as ASCII text and C{number} as its server flag."""
        if data is not None:
            raise UnsupportedCommand("gt06 commands carry no data: give the whole command text as instruct")
        if not isinstance(instruct, str) or not instruct:
            raise UnsupportedCommand("gt06 commands need a command text")
        try:
            text = instruct.encode("ascii")
        except UnicodeEncodeError:
            raise UnsupportedCommand("gt06 command text must be ASCII") from None
        if len(text) > MAX_COMMAND:
            raise UnsupportedCommand(f"gt06 command text is longer than {MAX_COMMAND} bytes")
        if not 0 <= number <= 0xFFFFFFFF:
            raise UnsupportedCommand("gt06 server flag must fit in 4 bytes")
        self._commandSerial = (self._commandSerial + 1) & 0xFFFF
        content = bytes((len(text) + 4,)) + number.to_bytes(4, "big") + text
        return frame(COMMAND, content, self._commandSerial), number

    @property
    def ready(self) -> bool:
        """Commands may be written at any time."""
        return True

    def refused(self, status: int, error: str) -> bytes:
        """A refused login gets no ack: the hub closes."""
        return b""

    def error(self, error: str) -> bytes:
        """GT06 has no error frame."""
        return b""
