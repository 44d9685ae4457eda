"""
Teltonika trackers (FMB, FMC, FMM, ...) over TCP: Codec 8, 8 Extended and 16 AVL data, Codec 12 commands.

Wire format (integers big-endian; CRC is CRC-16/IBM, also known as ARC, of DATA, in the
low two bytes of a 4-byte field)::

    device -> hub   LEN(2) IMEI(LEN, ASCII)                  identification, the first packet
    hub -> device   01                                       accepted (00: refused, then the hub closes)
    device -> hub   00000000 DLEN(4) DATA(DLEN) CRC(4)       a data packet; for AVL data DATA is
                        CODEC(1: 08, 8E, 10) N(1) RECORD*N N(1)
    hub -> device   N(4)                                     ack of an AVL data packet: its record count
    device -> hub   FF                                       keep-alive, not answered
    hub -> device   00000000 DLEN(4) 0C 01 05 CLEN(4) COMMAND 01 CRC(4)    Codec 12 command (ASCII text)
    device -> hub   00000000 DLEN(4) 0C 01 06 RLEN(4) RESPONSE 01 CRC(4)   its response, not answered

    RECORD, Codec 8:  TIME(8, ms since 1970 UTC) PRIORITY(1) LON(4, signed, 1e-7 deg) LAT(4, idem)
                      ALTITUDE(2, signed, m) ANGLE(2, deg) SATELLITES(1) SPEED(2, km/h)
                      EVENT(1) TOTAL(1) N1(1) (ID(1) V(1))*N1 N2(1) (ID(1) V(2))*N2
                      N4(1) (ID(1) V(4))*N4 N8(1) (ID(1) V(8))*N8
    Codec 8 Extended: EVENT, TOTAL, the counts and the ids are 2 bytes; then NX(2) (ID(2) L(2) V(L))*NX
    Codec 16:         EVENT(2) GENERATION(1) TOTAL(1), ids 2 bytes, counts 1 byte, no NX group

Each AVL record becomes a C{location} uplink (C{io}: IO element id -> value, unsigned; the
variable-length values of Codec 8 Extended as hex; a few well-known ids also under a name,
see L{NAMED_IO}), then the packet's ack. Records that only decode with a group of 16-byte
values after the 8-byte group (some firmware; Traccar's C{extended} option) are taken too. Codec 12 type
0x06 responses answer the oldest command. Other packets with a good CRC (GH3000 Codec 7
records, Codec 13, Codec 12 camera or other types) become C{raw} uplinks; the AVL ones
(Codec 7) are acked all the same, so the device moves on.
"""

import re
import struct
import time
from typing import Any, Hashable

from fastcrc import crc16

from devicehub.common.imei import is_valid_imei
from devicehub.devices.codec import Answer, BadFrame, Heartbeat, Identify, Message, Reply, UnsupportedCommand, Uplink

CODEC_GH3000 = 0x07
CODEC_8 = 0x08
CODEC_8_EXT = 0x8E
CODEC_12 = 0x0C
CODEC_13 = 0x0D
CODEC_14 = 0x0E
CODEC_16 = 0x10
AVL_CODECS = frozenset((CODEC_GH3000, CODEC_8, CODEC_8_EXT, CODEC_16))
"""Codecs of AVL data packets: the hub acks them with their record count."""
_CODECS = frozenset((*AVL_CODECS, CODEC_12, CODEC_13, CODEC_14, 0x0F))
"""Codec ids a data packet may carry; any other byte there means the stream lost its frame."""

TYPE_COMMAND = 0x05
TYPE_RESPONSE = 0x06

ACCEPT = b"\x01"
REFUSE = b"\x00"
KEEPALIVE = b"\xff"
PREAMBLE = b"\x00\x00\x00\x00"
MAX_IMEI = 64
"""Longest identity (devicehub.common.imei); a longer LEN in the opening packet is refused."""
_HEADER = 9
"""Bytes of a data packet needed to judge its header: preamble, DLEN and the codec id."""
_MAX_TIME_MS = 253402300799999
"""9999-12-31T23:59:59.999Z: later record times are undecodable."""

_GPS = struct.Struct(">QBiihHBH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HEARTBEAT = Heartbeat()
_ACKS = [n.to_bytes(4, "big") for n in range(256)]
_PRINTABLE = re.compile(rb"[\x20-\x7e\r\n\t]*")

# IO elements that FMB/FMC/FMM devices give the same meaning (Teltonika's AVL id list),
# also published under a name: id -> (name, scale); a scale of None makes a boolean.
NAMED_IO: dict[str, tuple[str, float | None]] = {
    "239": ("ignition", None),
    "240": ("motion", None),
    "21": ("gsm", 1),
    "66": ("power", 0.001),
    "67": ("batteryVoltage", 0.001),
    "113": ("batteryLevel", 1),
    "16": ("odometer", 1),
    "181": ("pdop", 0.1),
    "182": ("hdop", 0.1),
}


def crc(data: bytes) -> int:
    """CRC-16/IBM (ARC) of C{data}, as Teltonika packets carry it."""
    return crc16.arc(data)


def packet(data: bytes) -> bytes:
    """A data packet around C{data} (codec id .. second count): preamble, length, data, CRC."""
    return PREAMBLE + len(data).to_bytes(4, "big") + data + crc16.arc(data).to_bytes(4, "big")


def codec12(kind: int, payload: bytes) -> bytes:
    """A Codec 12 packet of one message of C{kind} (0x05 command, 0x06 response)."""
    return packet(bytes((CODEC_12, 1, kind)) + len(payload).to_bytes(4, "big") + payload + b"\x01")


def imeiPacket(imei: str) -> bytes:
    """The identification packet a device opens its connection with."""
    raw = imei.encode("ascii")
    return len(raw).to_bytes(2, "big") + raw


_lastSecond: list = [None, ""]  # a tracker's records come in order: the same second, often


def isoTime(ms: int) -> str:
    """Milliseconds since 1970 as ISO 8601 UTC (milliseconds shown only when not zero)."""
    seconds, ms = divmod(ms, 1000)
    if _lastSecond[0] != seconds:
        _lastSecond[:] = seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    text = _lastSecond[1]
    return f"{text}.{ms:03d}Z" if ms else text + "Z"


class _DecodeError(ValueError):
    pass


_groupStructs: dict[tuple[str, int], struct.Struct] = {}


def _group(fmt: str, count: int) -> struct.Struct:
    """The struct of C{count} (id, value) pairs, C{fmt} being their two format letters."""
    s = _groupStructs.get((fmt, count))
    if s is None:
        s = struct.Struct(">" + fmt * count)
        if count < 256:  # a bounded cache: larger groups are rare
            _groupStructs[fmt, count] = s
    return s


_PAIR = {i + v: struct.calcsize(">" + i + v) for i in "BH" for v in "BHIQ"}
# Per AVL codec: (event and total: struct, format letter of a group count, id format letter).
_LAYOUT = {
    CODEC_8: (struct.Struct(">BB"), "B", "B"),
    CODEC_8_EXT: (struct.Struct(">HH"), "H", "H"),
    CODEC_16: (struct.Struct(">HBB"), "B", "H"),
}


def decodeRecords(data: bytes, codec: int, count: int, wide: bool = False) -> list[dict[str, Any]]:
    """
    The C{count} records of AVL C{data} (codec id .. second count) of Codec 8, 8E or 16.
    C{wide}: after the 8-byte IO group comes a group of 16-byte values (sent by some
    firmware; Traccar's C{extended} option), kept as hex.

    @raise ValueError: the records do not fill the data exactly, or a value is out of range.
    """
    head, countFmt, idFmt = _LAYOUT[codec]
    countSize = 2 if countFmt == "H" else 1
    ext = codec == CODEC_8_EXT
    gps = _GPS.unpack_from
    records = []
    off = 2
    for _ in range(count):
        ms, priority, lon, lat, altitude, angle, satellites, speed = gps(data, off)
        if ms > _MAX_TIME_MS:
            raise _DecodeError(f"record time {ms} ms is out of range")
        event = head.unpack_from(data, off + 24)[0]
        off += 24 + head.size
        io: dict[str, Any] = {}
        for valueFmt in "BHIQ":
            n = data[off] if countSize == 1 else _U16.unpack_from(data, off)[0]
            off += countSize
            if n:
                if off + n * _PAIR[idFmt + valueFmt] > len(data):
                    raise _DecodeError(f"{n} IO elements beyond the data")
                s = _group(idFmt + valueFmt, n)
                values = s.unpack_from(data, off)
                off += s.size
                io.update(zip(map(str, values[::2]), values[1::2]))
        if wide:
            n = data[off] if countSize == 1 else _U16.unpack_from(data, off)[0]
            off += countSize
            idSize = 2 if idFmt == "H" else 1
            for _ in range(n):
                ident = data[off] if idSize == 1 else _U16.unpack_from(data, off)[0]
                value = data[off + idSize:off + idSize + 16]
                if len(value) != 16:
                    raise _DecodeError("16-byte IO element beyond the data")
                off += idSize + 16
                io[str(ident)] = value.hex()
        if ext:
            (n,) = _U16.unpack_from(data, off)
            off += 2
            for _ in range(n):
                ident, length = _group("H", 2).unpack_from(data, off)
                off += 4
                value = data[off:off + length]
                if len(value) != length:
                    raise _DecodeError("variable-length IO element beyond the data")
                off += length
                io[str(ident)] = value.hex()
        record = {
            "lat": lat / 1e7,
            "lon": lon / 1e7,
            "time": isoTime(ms),
            "valid": satellites > 0,
            "speed": float(speed),
            "course": float(angle),
            "altitude": altitude,
            "satellites": satellites,
            "priority": priority,
            "event": event,
            "io": io,
        }
        for ident, (name, scale) in NAMED_IO.items():
            value = io.get(ident)
            if type(value) is int:
                record[name] = value == 1 if scale is None else (value if scale == 1 else round(value * scale, 3))
        records.append(record)
    if off != len(data) - 1:
        raise _DecodeError(f"records end at byte {off} of {len(data) - 1}")
    return records


def responseText(payload: bytes) -> str:
    """A Codec 12 response's text: ASCII without surrounding blanks; hex when not printable."""
    if _PRINTABLE.fullmatch(payload):
        return payload.decode("ascii").strip()
    return payload.hex()


class TeltonikaCodec:
    """One Teltonika connection (see the module docstring)."""

    name = "teltonika"
    serial = True
    errorKinds = ("checksum", "decode", "identity", "too long")

    def __init__(self, maxFrame: int) -> None:
        self.maxFrame = maxFrame
        self.imei: str | None = None
        self._buf = bytearray()
        self._acked = False
        self._dead = False

    @property
    def ready(self) -> bool:
        """Commands wait until the hub acked the device's first AVL data packet on this connection."""
        return self._acked

    def lane(self, instruct: str) -> Hashable:
        """One unanswered command per device."""
        return None

    def encodeCommand(self, instruct: str, data: Any, number: int) -> tuple[bytes, Hashable]:
        """A Codec 12 command carrying C{instruct} as its text; answers carry the key C{None}."""
        if data is not None:
            raise UnsupportedCommand("teltonika commands carry no data: put the whole command in instruct")
        try:
            payload = instruct.encode("ascii")
        except UnicodeEncodeError:
            raise UnsupportedCommand("teltonika commands are ASCII text") from None
        return codec12(TYPE_COMMAND, payload), None

    def refused(self, status: int, error: str) -> bytes:
        """The handshake's refusal, C{00}."""
        return REFUSE

    def error(self, error: str) -> bytes:
        """Teltonika has no error packet."""
        return b""

    def feed(self, data: bytes) -> list[Message]:
        """Take the next bytes the device sent; return the messages of every packet they complete."""
        if self._dead:
            return []
        buf = self._buf
        buf += data
        end = len(buf)
        out: list[Message] = []
        pos = 0
        skipped = None  # where the garbage being skipped began
        while pos < end:
            b0 = buf[pos]
            if b0 == 0xFF:
                if skipped is not None:
                    out.append(_garbage(pos - skipped))
                    skipped = None
                out.append(_HEARTBEAT)
                pos += 1
                continue
            n = end - pos
            if n < 2:
                break
            b1 = buf[pos + 1]
            if b0 == 0 and b1 == 0:
                if buf[pos + 2:pos + 4].strip(b"\x00"):
                    pos, skipped = self._skip(buf, pos, end, skipped)
                    continue
                if n < _HEADER:
                    break
                length = _U32.unpack_from(buf, pos + 4)[0]
                if length < 3 or buf[pos + 8] not in _CODECS:
                    pos, skipped = self._skip(buf, pos, end, skipped)
                    continue
                total = length + 12
                if skipped is not None:
                    out.append(_garbage(pos - skipped))
                    skipped = None
                if total > self.maxFrame:
                    return self._fatal(out, BadFrame("too long", f"a {total}-byte packet (limit {self.maxFrame})", True))
                if n < total:
                    break
                out += self._packet(bytes(buf[pos:pos + total]))
                pos += total
                continue
            # LEN(2) IMEI: the opening packet, or junk once the device is identified.
            length = b0 << 8 | b1
            if self.imei is None:
                if skipped is not None:
                    out.append(_garbage(pos - skipped))
                    skipped = None
                if length > MAX_IMEI:
                    return self._fatal(out, BadFrame("identity", f"an identification of {length} bytes", True))
                if length + 2 > self.maxFrame:
                    return self._fatal(out, BadFrame("too long", f"a {length + 2}-byte identification", True))
                if n < length + 2:
                    break
                imei = buf[pos + 2:pos + 2 + length].decode("ascii", "replace")
                if not is_valid_imei(imei):
                    return self._fatal(out, BadFrame("identity", f"invalid imei {imei!r}", True))
                self.imei = imei
                out.append(Identify(imei, reply=ACCEPT))
                pos += length + 2
                continue
            if length <= MAX_IMEI and length + 2 <= self.maxFrame:
                if n < length + 2:
                    break
                imei = buf[pos + 2:pos + 2 + length].decode("ascii", "replace")
                if is_valid_imei(imei):
                    if skipped is not None:
                        out.append(_garbage(pos - skipped))
                        skipped = None
                    if imei == self.imei:
                        out.append(Reply(ACCEPT))  # the device says who it is again: tell it again
                    else:
                        out.append(BadFrame("identity", f"imei {imei!r} on the connection of {self.imei!r}"))
                    pos += length + 2
                    continue
            pos, skipped = self._skip(buf, pos, end, skipped)
        if skipped is not None:
            out.append(_garbage(pos - skipped))
        del buf[:pos]
        return out

    def _skip(self, buf: bytearray, pos: int, end: int, skipped: int | None) -> tuple[int, int]:
        """Skip garbage at C{pos}: to the next byte that may begin a packet (C{FF} or a preamble)."""
        start = pos + 1
        found = [i for i in (buf.find(KEEPALIVE, start), buf.find(PREAMBLE, start)) if i >= 0]
        if found:
            nxt = min(found)
        else:
            last = buf[max(start, end - 3):end]  # zeros there may begin a preamble: keep them
            nxt = end - (len(last) - len(last.rstrip(b"\x00")))
        return nxt, pos if skipped is None else skipped

    def _fatal(self, out: list[Message], bad: BadFrame) -> list[Message]:
        self._dead = True
        self._buf.clear()
        out.append(bad)
        return out

    def _packet(self, frame: bytes) -> list[Message]:
        """The messages of one complete data packet (preamble .. CRC)."""
        data = frame[8:-4]
        expected = _U32.unpack_from(frame, len(frame) - 4)[0]
        actual = crc16.arc(data)
        if actual != expected:
            return [BadFrame("checksum", f"CRC {expected:08x}, computed {actual:04x}")]
        codec, count = data[0], data[1]
        if data[-1] != count:
            return [BadFrame("decode", f"record counts {count} and {data[-1]} differ")]
        try:
            if codec in _LAYOUT:
                try:
                    records = decodeRecords(data, codec, count)
                except (_DecodeError, struct.error, IndexError):
                    records = decodeRecords(data, codec, count, wide=True)
                out: list[Message] = [Uplink("location", record) for record in records]
                out.append(Reply(_ACKS[count]))
                self._acked = True
                return out
            if codec == CODEC_12:
                return self._codec12(frame, data, count)
        except (_DecodeError, struct.error, IndexError) as e:
            return [BadFrame("decode", f"codec 0x{codec:02x}: {e}")]
        raw: list[Message] = [Uplink("raw", {"hex": frame.hex(), "codec": codec})]
        if codec in AVL_CODECS:
            raw.append(Reply(_ACKS[count]))
            self._acked = True
        return raw

    def _codec12(self, frame: bytes, data: bytes, count: int) -> list[Message]:
        out: list[Message] = []
        other = False
        off = 2
        for _ in range(count):
            kind = data[off]
            (length,) = _U32.unpack_from(data, off + 1)
            off += 5
            payload = data[off:off + length]
            off += length
            if kind == TYPE_RESPONSE:
                out.append(Answer(None, responseText(payload)))
            else:
                other = True
        if off != len(data) - 1:
            raise _DecodeError(f"messages end at byte {off} of {len(data) - 1}")
        if other or not count:
            # Camera data (0x0D), a command from the device (0x05) or another kind: not decoded.
            out.append(Uplink("raw", {"hex": frame.hex(), "codec": CODEC_12}))
        return out


def _garbage(size: int) -> BadFrame:
    return BadFrame("decode", f"{size} bytes that begin no packet skipped")
