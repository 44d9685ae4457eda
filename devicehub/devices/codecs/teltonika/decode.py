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
# also published under a name, in this order: id -> (name, scale); a scale of None makes a boolean.
NAMED_IO: dict[int, tuple[str, float | None]] = {
    239: ("ignition", None),
    240: ("motion", None),
    21: ("gsm", 1),
    66: ("power", 0.001),
    67: ("batteryVoltage", 0.001),
    113: ("batteryLevel", 1),
    16: ("odometer", 1),
    181: ("pdop", 0.1),
    182: ("hdop", 0.1),
}
_NAMED_ORDER = {ident: i for i, ident in enumerate(NAMED_IO)}
_DIVISORS = {0.001: 1000, 0.1: 10}
"""C{round(value * scale, 3)} is C{value / divisor} for an integer value below 2**32 (the
division is correctly rounded, and so is round's decimal; checked for every value below
2**20 and at random above), and costs a tenth of it."""


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


_CACHE_SIZE = 256
"""Layouts and id lists kept: a device sends the same few again and again; past this many, the cache starts over."""
_recordStructs: dict[tuple[int, int, int, int, int], struct.Struct] = {}
_Named = tuple[str, str, float | None, int]
"""A named IO element of a record: its key in C{io}, its name, its scale and that scale's divisor (or 0)."""
_idLists: dict[tuple[int, ...], tuple[tuple[str, ...], tuple[_Named, ...]]] = {}
# Per AVL codec: the record's GPS element and event fields, as struct format, and the format
# of a group count as pad bytes (counts are read apart, then skipped by the record's struct).
_RECORD_HEAD = {CODEC_8: ">QBiihHBHBx", CODEC_8_EXT: ">QBiihHBHH2x", CODEC_16: ">QBiihHBHH2x"}
_COUNT_PAD = {CODEC_8: "x", CODEC_8_EXT: "2x", CODEC_16: "x"}


def _recordStruct(codec: int, counts: tuple[int, int, int, int]) -> struct.Struct:
    """The struct of a whole record of C{codec} (but Codec 8 Extended's variable-length group) with C{counts} IO elements of 1, 2, 4 and 8 bytes."""
    key = (codec, *counts)
    s = _recordStructs.get(key)
    if s is None:
        _, _, idFmt = _LAYOUT[codec]
        pad = _COUNT_PAD[codec]
        s = struct.Struct(_RECORD_HEAD[codec] + "".join(pad + (idFmt + valueFmt) * n for valueFmt, n in zip("BHIQ", counts)))
        if len(_recordStructs) >= _CACHE_SIZE:
            _recordStructs.clear()
        _recordStructs[key] = s
    return s


def _idList(ids: tuple[int, ...]) -> tuple[tuple[str, ...], tuple[_Named, ...]]:
    """For a record's IO element ids, in order: their keys in C{io}, and the named ones in L{NAMED_IO}'s order."""
    found = _idLists.get(ids)
    if found is None:
        named = sorted({ident for ident in ids if ident in NAMED_IO}, key=_NAMED_ORDER.__getitem__)
        found = tuple(map(str, ids)), tuple(
            (str(ident), *NAMED_IO[ident], _DIVISORS.get(NAMED_IO[ident][1], 0)) for ident in named
        )
        if len(_idLists) >= _CACHE_SIZE:
            _idLists.clear()
        _idLists[ids] = found
    return found


def decodeRecords(data: bytes, codec: int, count: int, wide: bool = False) -> list[dict[str, Any]]:
    """
    The C{count} records of AVL C{data} (codec id .. second count) of Codec 8, 8E or 16.
    C{wide}: after the 8-byte IO group comes a group of 16-byte values (sent by some
    firmware; Traccar's C{extended} option), kept as hex.

    Each record is read with one struct for its layout (L{_recordStruct}): the group counts
    are read first, then the GPS element, the event and every IO element at once.

    @raise ValueError: the records do not fill the data exactly, or a value is out of range.
    """
    if wide:
        return _decodeWide(data, codec, count)
    head, countFmt, idFmt = _LAYOUT[codec]
    countSize = 2 if countFmt == "H" else 1
    pairs = [_PAIR[idFmt + valueFmt] for valueFmt in "BHIQ"]
    ext = codec == CODEC_8_EXT
    start = 24 + head.size  # the first group count, from the record's start
    records = []
    off = 2
    for _ in range(count):
        counts = []
        at = off + start
        for pair in pairs:
            n = data[at] if countSize == 1 else data[at] << 8 | data[at + 1]
            counts.append(n)
            at += countSize + n * pair
        s = _recordStruct(codec, tuple(counts))
        values = s.unpack_from(data, off)
        off += s.size
        ms, priority, lon, lat, altitude, angle, satellites, speed, event = values[:9]
        if ms > _MAX_TIME_MS:
            raise _DecodeError(f"record time {ms} ms is out of range")
        keys, named = _idList(values[9::2])
        io: dict[str, Any] = dict(zip(keys, values[10::2]))
        if ext:
            off = _variableGroup(data, off, io)
        record = _record(ms, priority, lon, lat, altitude, angle, satellites, speed, event, io)
        for key, name, scale, divisor in named:
            value = io[key]
            if type(value) is int:
                if scale is None:
                    record[name] = value == 1
                elif scale == 1:
                    record[name] = value
                elif divisor and value < 0x100000000:
                    record[name] = value / divisor
                else:
                    record[name] = round(value * scale, 3)
        records.append(record)
    if off != len(data) - 1:
        raise _DecodeError(f"records end at byte {off} of {len(data) - 1}")
    return records


def _record(ms, priority, lon, lat, altitude, angle, satellites, speed, event, io) -> dict[str, Any]:
    """A record's attributes from its GPS element and IO elements (both readers build it alike)."""
    return {
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


def _decodeWide(data: bytes, codec: int, count: int) -> list[dict[str, Any]]:
    """L{decodeRecords} of records with a group of 16-byte values after the 8-byte group (rare: read group by group)."""
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
        off = _wideGroup(data, off, countSize, idFmt, io)
        if ext:
            off = _variableGroup(data, off, io)
        record = _record(ms, priority, lon, lat, altitude, angle, satellites, speed, event, io)
        for ident, (name, scale) in NAMED_IO.items():
            value = io.get(str(ident))
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

