"""
Teltonika decoding: one whole data packet (preamble .. CRC) -> the session's messages.

AVL records (Codec 8, 8 Extended, 16) become C{location} uplinks and the packet's ack;
Codec 12 responses answer the oldest command; other packets are C{raw} uplinks (the
record layouts are in L{devicehub.devices.codecs.teltonika}).
"""

import re
import struct
import time
from typing import Any

from fastcrc import crc16

from devicehub.devices.codec import Answer, BadFrame, Message, Reply, Uplink
from devicehub.devices.codecs.teltonika.protocol import AVL_CODECS, CODEC_8, CODEC_8_EXT, CODEC_12, CODEC_16, TYPE_RESPONSE

_MAX_TIME_MS = 253402300799999
"""9999-12-31T23:59:59.999Z: later record times are undecodable."""

_GPS = struct.Struct(">QBiihHBH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
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
            off = _wideGroup(data, off, countSize, idFmt, io)
        if ext:
            off = _variableGroup(data, off, io)
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


def _wideGroup(data: bytes, off: int, countSize: int, idFmt: str, io: dict[str, Any]) -> int:
    """The group of 16-byte IO values at C{off}, into C{io} as hex; where it ends."""
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
    return off


def _variableGroup(data: bytes, off: int, io: dict[str, Any]) -> int:
    """Codec 8 Extended's group of variable-length IO values at C{off}, into C{io} as hex; where it ends."""
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
    return off


def responseText(payload: bytes) -> str:
    """A Codec 12 response's text: ASCII without surrounding blanks; hex when not printable."""
    if _PRINTABLE.fullmatch(payload):
        return payload.decode("ascii").strip()
    return payload.hex()


class TeltonikaDecoder:
    """Decodes one connection's data packets; remembers whether one was acked (commands wait for that)."""

    def __init__(self) -> None:
        self.acked = False
        """Whether the hub acked an AVL data packet on this connection."""

    def packet(self, frame: bytes) -> list[Message]:
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
                self.acked = True
                return out
            if codec == CODEC_12:
                return _codec12(frame, data, count)
        except (_DecodeError, struct.error, IndexError) as e:
            return [BadFrame("decode", f"codec 0x{codec:02x}: {e}")]
        raw: list[Message] = [Uplink("raw", {"hex": frame.hex(), "codec": codec})]
        if codec in AVL_CODECS:
            raw.append(Reply(_ACKS[count]))
            self.acked = True
        return raw


def _codec12(frame: bytes, data: bytes, count: int) -> list[Message]:
    """The messages of a Codec 12 packet: an answer per response, the packet raw if it holds anything else."""
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

