"""
GT06 decoding: one whole frame -> the session's message (layouts in L{devicehub.devices.codecs.gt06}).

Logins identify the device (and may set a time zone for later times), status and
heartbeat packets are heartbeats with status, positions and alarms are uplinks, command
replies are answers; what is not understood is published as a C{raw} uplink.
"""

import struct
from datetime import datetime, timedelta
from typing import Any

from fastcrc.crc16 import ibm_sdlc as crcX25

from devicehub.common.imei import is_valid_imei
from devicehub.devices.codec import Answer, BadFrame, Heartbeat, Identify, Message, Reply, Uplink
from devicehub.devices.codecs.gt06.protocol import (
    ACKED, GPS, GPS_LBS_2, GPS_LBS_6, GPS_LBS_STATUS, GPS_LBS_STATUS_2, GPS_LBS_STATUS_3, HEARTBEAT,
    HEARTBEAT_BARE, LOGIN, STATUS, STRING, STRING_INFO, ack,
)

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



class Gt06Decoder:
    """Decodes one connection's frames; remembers who logged in and the login's time zone."""

    def __init__(self) -> None:
        self.imei: str | None = None
        self._offset: timedelta | None = None
        """The login's time zone, when it gave one other than UTC."""

    def decode(self, f: bytes) -> Message:
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
