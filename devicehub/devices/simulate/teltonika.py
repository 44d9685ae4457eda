"""
A simulated Teltonika tracker (FMB series over TCP), sans-IO: methods return the bytes the
device sends and L{TeltonikaDevice.feed} takes what the hub sends (see
L{devicehub.devices.codecs.teltonika} for the wire format). The record builders here follow
Teltonika's Codec 8, 8 Extended and 16 documents; the tests build their packets with them.
"""

import time as _time
from datetime import datetime, timezone

from devicehub.devices.codecs.teltonika.protocol import (
    CODEC_8,
    CODEC_8_EXT,
    CODEC_12,
    CODEC_16,
    KEEPALIVE,
    PREAMBLE,
    TYPE_COMMAND,
    TYPE_RESPONSE,
    codec12,
    crc,
    imeiPacket,
    packet,
)

IO_SIZES = {
    1: 1, 21: 1, 69: 1, 113: 1, 179: 1, 180: 1, 239: 1, 240: 1,
    24: 2, 66: 2, 67: 2, 68: 2, 181: 2, 182: 2,
    16: 4, 199: 4, 241: 4,
    78: 8,
}
"""Value sizes in bytes of common FMB IO elements (Teltonika's AVL id list); other ids and larger
values take the smallest size that fits."""

IoValue = int | bytes


def _size(ident: int, value: int) -> int:
    least = IO_SIZES.get(ident, 1)
    for size in (1, 2, 4):
        if size >= least and value < 1 << (8 * size):
            return size
    return 8


def encodeRecord(
    codec: int,
    ms: int,
    lat: float,
    lon: float,
    *,
    altitude: int = 0,
    angle: int = 0,
    satellites: int = 0,
    speed: int = 0,
    priority: int = 0,
    event: int = 0,
    io: dict[int, IoValue] | None = None,
    generation: int = 0,
) -> bytes:
    """
    One AVL record of C{codec} (Codec 8, 8 Extended or 16): C{ms} since 1970 UTC, WGS84
    degrees, the rest as the record carries them. C{io} maps element ids to unsigned
    integers (sized by L{IO_SIZES}) or, for Codec 8 Extended only, to bytes of any length.
    C{generation} is Codec 16's generation type.
    """
    ext = codec == CODEC_8_EXT
    groups: dict[int, list[tuple[int, int]]] = {1: [], 2: [], 4: [], 8: []}
    variable: list[tuple[int, bytes]] = []
    for ident, value in (io or {}).items():
        if isinstance(value, bytes):
            if not ext:
                raise ValueError("variable-length IO elements need Codec 8 Extended")
            variable.append((ident, value))
        else:
            groups[_size(ident, value)].append((ident, value))
    total = sum(map(len, groups.values())) + len(variable)
    idSize = 1 if codec == CODEC_8 else 2
    countSize = 2 if ext else 1
    out = bytearray()
    out += ms.to_bytes(8, "big") + bytes((priority,))
    out += round(lon * 1e7).to_bytes(4, "big", signed=True) + round(lat * 1e7).to_bytes(4, "big", signed=True)
    out += altitude.to_bytes(2, "big", signed=True) + angle.to_bytes(2, "big") + bytes((satellites,))
    out += speed.to_bytes(2, "big")
    if codec == CODEC_16:
        out += event.to_bytes(2, "big") + bytes((generation,)) + total.to_bytes(1, "big")
    else:
        out += event.to_bytes(idSize, "big") + total.to_bytes(countSize, "big")
    for size, items in groups.items():
        out += len(items).to_bytes(countSize, "big")
        for ident, value in items:
            out += ident.to_bytes(idSize, "big") + value.to_bytes(size, "big")
    if ext:
        out += len(variable).to_bytes(2, "big")
        for ident, value in variable:
            out += ident.to_bytes(2, "big") + len(value).to_bytes(2, "big") + value
    return bytes(out)


def avlPacket(codec: int, records: list[bytes]) -> bytes:
    """An AVL data packet of C{codec} carrying C{records} (from L{encodeRecord})."""
    n = bytes((len(records),))
    return packet(bytes((codec,)) + n + b"".join(records) + n)


def _ms(when: datetime | float | None) -> int:
    if when is None:
        return int(_time.time() * 1000)
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return round(when.timestamp() * 1000)
    return round(when * 1000)


def _clock(seconds: float) -> str:
    t = _time.gmtime(seconds)
    return f"{t.tm_year}/{t.tm_mon}/{t.tm_mday} {t.tm_hour}:{t.tm_min:02d}"


class TeltonikaDevice:
    """
    A simulated FMB tracker. It answers Codec 12 commands the way the devices do (C{getinfo},
    C{getver}, C{getstatus}, C{getgps}, C{getio}, C{setdigout}; any other command is echoed),
    unless C{silent}; C{replies} maps a command's text to the answer to give instead.
    """

    model = "FMB920"

    def __init__(
        self,
        imei: str,
        codec8e: bool = False,
        silent: bool = False,
        replies: dict[str, str] | None = None,
    ) -> None:
        self.imei = imei
        self.codec8e = codec8e
        self.silent = silent
        self.replies = dict(replies or {})
        self.commands: list[str] = []
        """The text of every command received, in order."""
        self.accepted: bool | None = None
        """The hub's answer to L{hello}: True (01), False (00), None (none yet)."""
        self.acks: list[int] = []
        """The record counts the hub acked, in order."""
        self.outputs = [0, 0]
        self.started = _time.time()
        self.records = 0
        self.last: tuple[float, float, float, float, int] = (0.0, 0.0, 0.0, 0.0, 0)
        self._buf = bytearray()
        self._handshake = False

    def hello(self) -> bytes:
        """The opening packet: the IMEI (the device then waits for the hub's 01 or 00)."""
        self._handshake = True
        return imeiPacket(self.imei)

    def heartbeat(self) -> bytes:
        """The one-byte keep-alive."""
        return KEEPALIVE

    def position(
        self,
        lat: float,
        lon: float,
        speed: float = 0.0,
        course: float = 0.0,
        time: datetime | float | None = None,
        *,
        altitude: int = 0,
        satellites: int = 9,
        priority: int = 0,
        event: int = 0,
        io: dict[int, IoValue] | None = None,
        codec8e: bool | None = None,
    ) -> bytes:
        """
        An AVL data packet of one record (Codec 8, or 8 Extended with C{codec8e}): C{time} is
        a datetime, seconds since 1970 or None (now); C{io} defaults to ignition, movement,
        GSM signal and the voltages.
        """
        if io is None:
            io = {239: 1, 240: int(speed > 0), 21: 4, 66: 12600, 67: 4012}
        codec = CODEC_8_EXT if (self.codec8e if codec8e is None else codec8e) else CODEC_8
        record = encodeRecord(
            codec, _ms(time), lat, lon, altitude=altitude, angle=round(course) % 360,
            satellites=satellites, speed=round(speed), priority=priority, event=event, io=io,
        )
        self.records += 1
        self.last = (lat, lon, speed, course, satellites)
        return avlPacket(codec, [record])

    def feed(self, data: bytes) -> list[bytes]:
        """Take what the hub sent: the handshake answer, record-count acks, commands; return the answers."""
        buf = self._buf
        buf += data
        out = []
        while buf:
            if self._handshake:
                self._handshake = False
                self.accepted = buf[0] == 1
                del buf[:1]
                continue
            if len(buf) < 4:
                break
            if buf[:4] != PREAMBLE:
                self.acks.append(int.from_bytes(buf[:4], "big"))
                del buf[:4]
                continue
            if len(buf) < 8:
                break
            total = int.from_bytes(buf[4:8], "big") + 12
            if len(buf) < total:
                break
            frame = bytes(buf[:total])
            del buf[:total]
            answer = self._command(frame)
            if answer is not None:
                out.append(answer)
        return out

    def _command(self, frame: bytes) -> bytes | None:
        data = frame[8:-4]
        if crc(data) != int.from_bytes(frame[-4:], "big") or len(data) < 8:
            return None  # the device drops what it cannot check
        if data[0] != CODEC_12 or data[2] != TYPE_COMMAND:
            return None
        size = int.from_bytes(data[3:7], "big")
        text = data[7:7 + size].decode("ascii", "replace")
        self.commands.append(text)
        if self.silent:
            return None
        return codec12(TYPE_RESPONSE, self.answer(text).encode("ascii", "replace"))

    def answer(self, command: str) -> str:
        """The response text to C{command}."""
        if command in self.replies:
            return self.replies[command]
        words = command.split()
        word = words[0].lower() if words else ""
        now = _time.time()
        lat, lon, speed, course, satellites = self.last
        if word == "getinfo":
            return (
                f"RTC:{_clock(now)} Init:{_clock(self.started)} UpTime:{int(now - self.started)}s "
                f"PWR:PwrVoltage+ RST:0 GPS:{int(satellites > 0) * 3} SAT:{satellites} TTFF:14 TTLF:0 "
                f"NOGPS:0:0 SR:0 FG:0 FL:0 SMS:0 REC:{self.records} MD:0 DB:0"
            )
        if word == "getver":
            return (
                f"Ver:03.28.07_00 GPS:AXN_5.10_3333 Hw:{self.model} Mod:15 IMEI:{self.imei} "
                f"Init:{_clock(self.started)} Uptime:{int(now - self.started)} BL:1.10"
            )
        if word == "getstatus":
            return (
                "Data Link: 1 GPRS: 1 Phone: 0 SIM: 0 OP: 24602 Signal: 4 NewSMS: 0 Roaming: 0 "
                "SMSFull: 0 LAC: 1 Cell ID: 3055 NetType: 1 FwUpd:-1"
            )
        if word == "getgps":
            t = _time.gmtime(now)
            return (
                f"GPS:{int(satellites > 0)} Sat:{satellites} Lat:{lat:.6f} Long:{lon:.6f} Alt:0 "
                f"Speed:{round(speed)} Dir:{round(course)} Date: {t.tm_year}/{t.tm_mon}/{t.tm_mday} "
                f"Time: {t.tm_hour}:{t.tm_min}:{t.tm_sec}"
            )
        if word == "getio":
            return f"DI1:0 DI2:0 DI3:0 AIN1:0 AIN2:0 DO1:{self.outputs[0]} DO2:{self.outputs[1]}"
        if word == "setdigout" and len(words) > 1:
            for i, flag in enumerate(words[1][:2]):
                if flag in "01":
                    self.outputs[i] = int(flag)
            return " ".join(f"DOUT{i + 1}:{v} Timeout:INFINITY" for i, v in enumerate(self.outputs))
        return command

