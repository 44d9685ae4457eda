"""
A simulated GT06 tracker (sans-IO): the frames a Concox GT06 sends, built from the
manufacturer's protocol document, and its answers to the hub's server commands.

    device = Gt06Device("356307042441013")
    transport.write(device.hello())                  # login 0x01
    transport.write(device.position(48.85, 2.35, speed=42))
    for frame in device.feed(received):              # acks and 0x80 commands from the hub
        transport.write(frame)                       # a 0x15 reply (0x21 with utf16=True)
"""

from datetime import datetime, timedelta, timezone

from fastcrc.crc16 import ibm_sdlc

from devicehub.devices.codecs.gt06.protocol import (  # noqa: F401 (the protocol numbers, for users of the simulator too)
    COMMAND, GPS_LBS, GPS_LBS_2, GPS_LBS_STATUS, LOGIN, STATUS, STRING, STRING_INFO,
)

ENGLISH = 0x0002
ALARM_CODES = {
    "sos": 0x01, "powerCut": 0x02, "vibration": 0x03, "geofenceEnter": 0x04, "geofenceExit": 0x05,
    "overspeed": 0x06, "lowBattery": 0x0E, "powerOff": 0x11, "tampering": 0x13, "door": 0x14,
}
"""The alarm byte of the alarm packet (0x16) for a few of the document's alarms."""

# What the devices answer to the usual commands (their own wording, as real units reply).
REPLIES = {
    "RELAY,1#": "Cut off the fuel supply: Success!",
    "RELAY,0#": "Restore fuel supply: Success!",
    "DYD": "DYD=Success!",
    "HFYD": "HFYD=Success!",
}


def packet(proto: int, content: bytes, serial: int, long: bool = False) -> bytes:
    """A GT06 frame: 78 78 LEN (79 79 LEN LEN for long ones) PROTO CONTENT SERIAL CRC 0D 0A."""
    size = 1 + len(content) + 2 + 2
    head = size.to_bytes(2, "big") if long else bytes((size,))
    body = head + bytes((proto,)) + content + (serial & 0xFFFF).to_bytes(2, "big")
    return (b"\x79\x79" if long else b"\x78\x78") + body + ibm_sdlc(body).to_bytes(2, "big") + b"\r\n"


def bcdImei(imei: str) -> bytes:
    """The login's 8 IMEI bytes: the 15 digits as BCD behind a zero nibble."""
    if len(imei) != 15 or not imei.isdigit():
        raise ValueError(f"a GT06 IMEI is 15 digits, not {imei!r}")
    return bytes.fromhex("0" + imei)


def gpsBlock(lat: float, lon: float, speed: float, course: float, time: datetime | None,
             satellites: int = 9, valid: bool = True, offset: timedelta = timedelta(0)) -> bytes:
    """
    Date, time, satellites, latitude, longitude, speed and course/status: 18 bytes.

    @param time: the fix time (naive: UTC), now when None; written C{offset} ahead of UTC.
    """
    t = time or datetime.now(timezone.utc)
    t = (t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)) + offset
    flags = int(round(course)) % 360
    if lat >= 0:
        flags |= 0x0400  # north
    if lon < 0:
        flags |= 0x0800  # west
    if valid:
        flags |= 0x1000  # positioned
    return (
        bytes((t.year - 2000, t.month, t.day, t.hour, t.minute, t.second, 0xC0 | satellites & 0x0F))
        + round(abs(lat) * 1_800_000).to_bytes(4, "big")
        + round(abs(lon) * 1_800_000).to_bytes(4, "big")
        + bytes((min(255, max(0, round(speed))),))
        + flags.to_bytes(2, "big")
    )


class Gt06Device:
    """
    One simulated tracker: frames to send, and C{feed} for what the hub sends back.

    @ivar commands: the text of every server command received, in order.
    @ivar flags: the server flag of each of them.
    @ivar acks: (protocol, serial) of every ack received.
    """

    def __init__(self, imei: str, silent: bool = False, utf16: bool = False, positionProtocol: int = GPS_LBS,
                 typeId: int | None = None, timezoneMinutes: int | None = None, cell=(460, 0, 0x287D, 0x1F71)) -> None:
        """
        @param silent: never answer commands.
        @param utf16: answer commands with 0x21 frames in UTF-16BE (newer firmware), not 0x15.
        @param positionProtocol: 0x12 (GPS+LBS) or 0x22 (GPS+LBS with ACC and upload mode).
        @param typeId: the login's type identifier; with C{timezoneMinutes}, the extended login.
        @param cell: the serving cell (MCC, MNC, LAC, cell id) of positions and alarms.
        """
        self.imei = imei
        self._imei = bcdImei(imei)
        self.silent = silent
        self.utf16 = utf16
        self.positionProtocol = positionProtocol
        self.typeId = typeId
        self.timezoneMinutes = timezoneMinutes
        self.cell = cell
        self.serial = 0
        self.acc = True
        self.charging = True
        self.voltageLevel = 6
        self.gsm = 4
        self.commands: list[str] = []
        self.flags: list[int] = []
        self.acks: list[tuple[int, int]] = []
        self._buf = b""

    def _next(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial

    def _frame(self, proto: int, content: bytes, long: bool = False) -> bytes:
        return packet(proto, content, self._next(), long)

    def _info(self, alarmBits: int = 0) -> int:
        """The terminal information byte: ACC, charging, GPS on, alarm bits."""
        return (0x02 if self.acc else 0) | (0x04 if self.charging else 0) | 0x40 | (alarmBits & 0x07) << 3

    @property
    def offset(self) -> timedelta:
        """How far ahead of UTC the device's clock runs: its login's time zone, if it sends one."""
        if self.typeId is None or self.timezoneMinutes is None:
            return timedelta(0)
        return timedelta(minutes=self.timezoneMinutes)

    def _lbs(self) -> bytes:
        mcc, mnc, lac, cid = self.cell
        return mcc.to_bytes(2, "big") + bytes((mnc,)) + lac.to_bytes(2, "big") + cid.to_bytes(3, "big")

    # -- device -> hub

    def hello(self) -> bytes:
        """The login packet (0x01): the IMEI, with the type and time zone when configured."""
        content = self._imei
        if self.typeId is not None:
            content += self.typeId.to_bytes(2, "big")
            if self.timezoneMinutes is not None:
                minutes = abs(self.timezoneMinutes)
                value = (minutes // 60 * 100 + minutes % 60) << 4 | (0x08 if self.timezoneMinutes < 0 else 0)
                content += value.to_bytes(2, "big")
        return self._frame(LOGIN, content)

    def heartbeat(self) -> bytes:
        """A status packet (0x13): terminal information, voltage level, GSM signal, alarm, language."""
        return self._frame(STATUS, bytes((self._info(), self.voltageLevel, self.gsm, 0, ENGLISH & 0xFF)))

    def position(self, lat: float, lon: float, speed: float = 0.0, course: float = 0.0,
                 time: datetime | None = None, valid: bool = True, satellites: int = 9) -> bytes:
        """A position packet (0x12, or 0x22 with ACC, upload mode 0 and real-time upload)."""
        content = gpsBlock(lat, lon, speed, course, time, satellites, valid, self.offset) + self._lbs()
        if self.positionProtocol == GPS_LBS_2:
            content += bytes((1 if self.acc else 0, 0x00, 0x00))
        return self._frame(self.positionProtocol, content)

    def alarm(self, alarm: str | int = "sos", lat: float = 0.0, lon: float = 0.0, speed: float = 0.0,
              course: float = 0.0, time: datetime | None = None, valid: bool = True) -> bytes:
        """An alarm packet (0x16): position, cell, status and the alarm byte (a name or a code)."""
        code = ALARM_CODES[alarm] if isinstance(alarm, str) else alarm
        cell = self._lbs()
        content = (gpsBlock(lat, lon, speed, course, time, valid=valid, offset=self.offset)
                   + bytes((len(cell) + 1,)) + cell
                   + bytes((self._info(), self.voltageLevel, self.gsm, code, ENGLISH & 0xFF)))
        return self._frame(GPS_LBS_STATUS, content)

    def reply(self, flag: int, text: str) -> bytes:
        """The answer to a server command: 0x15 in ASCII, or 0x21 in UTF-16BE with C{utf16}."""
        if self.utf16:
            return self._frame(STRING_INFO, flag.to_bytes(4, "big") + b"\x02" + text.encode("utf-16-be"), long=True)
        data = text.encode("ascii", "replace")
        content = bytes((len(data) + 4,)) + flag.to_bytes(4, "big") + data + ENGLISH.to_bytes(2, "big")
        return self._frame(STRING, content)

    def answerTo(self, command: str) -> str:
        """What this device says to C{command}."""
        upper = command.upper()
        if upper in REPLIES:
            return REPLIES[upper]
        keyword = upper.split(",", 1)[0].rstrip("#")
        if keyword in REPLIES:
            return REPLIES[keyword]
        return f"{command.rstrip('#')} OK"

    # -- hub -> device

    def feed(self, data: bytes) -> list[bytes]:
        """Take what the hub sent; return the frames the device answers (replies to commands)."""
        self._buf += data
        out: list[bytes] = []
        while True:
            start = self._buf.find(b"\x78\x78")
            if start < 0:
                self._buf = self._buf[-1:] if self._buf.endswith(b"\x78") else b""
                break
            buf = self._buf = self._buf[start:]
            if len(buf) < 3 or len(buf) < buf[2] + 5:
                break
            size = buf[2] + 5
            frame, self._buf = buf[:size], buf[size:]
            if frame[-2:] != b"\r\n" or ibm_sdlc(frame[2:-4]) != int.from_bytes(frame[-4:-2], "big"):
                continue  # a real unit ignores a frame it cannot check
            proto = frame[3]
            serial = int.from_bytes(frame[-6:-4], "big")
            if proto == COMMAND:
                size = frame[4]
                flag = int.from_bytes(frame[5:9], "big")
                command = frame[9:5 + size].decode("ascii", "replace")
                self.commands.append(command)
                self.flags.append(flag)
                if not self.silent:
                    out.append(self.reply(flag, self.answerTo(command)))
            else:
                self.acks.append((proto, serial))
        return out
