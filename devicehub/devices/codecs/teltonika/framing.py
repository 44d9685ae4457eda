"""
Teltonika framing: the byte stream cut into data packets, keep-alives and identifications
(the formats are in L{devicehub.devices.codecs.teltonika}).

Before the device identified, a 2-byte length begins its identification; after, only a
C{FF} or a preamble with a known codec id begins something, and any other bytes are
skipped as garbage (one L{BadFrame} per run) up to the next that may.
"""

import struct
from typing import Callable

from devicehub.common.imei import is_valid_imei
from devicehub.devices.codec import BadFrame, Heartbeat, Identify, Message, Reply
from devicehub.devices.codecs.teltonika.protocol import ACCEPT, CODECS, KEEPALIVE, MAX_IMEI, PREAMBLE

_HEADER = 9
"""Bytes of a data packet needed to judge its header: preamble, DLEN and the codec id."""
_HEARTBEAT = Heartbeat()
_U32 = struct.Struct(">I")


def _garbage(size: int) -> BadFrame:
    return BadFrame("decode", f"{size} bytes that begin no packet skipped")


class TeltonikaFramer:
    """
    Cuts one connection's bytes into packets: keep-alives are heartbeats, identifications
    are read here (they set C{imei}), and each whole data packet goes to C{decode}.
    """

    def __init__(self, maxFrame: int, decode: Callable[[bytes], list[Message]]) -> None:
        self.maxFrame = maxFrame
        self.imei: str | None = None
        self._decodePacket = decode
        self._buf = bytearray()
        self._dead = False

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
            if b0 != 0 or buf[pos + 1] != 0:
                # LEN(2) IMEI: the opening packet, or junk once the device is identified.
                pos, skipped, wait = self._identification(buf, pos, n, skipped, out)
                if self._dead:
                    return out
                if wait:
                    break
                continue
            if buf[pos + 2:pos + 4].strip(b"\x00"):
                pos, skipped = self._skip(buf, pos, end, skipped)
                continue
            if n < _HEADER:
                break
            length = _U32.unpack_from(buf, pos + 4)[0]
            if length < 3 or buf[pos + 8] not in CODECS:
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
            out += self._decodePacket(bytes(buf[pos:pos + total]))
            pos += total
        if skipped is not None:
            out.append(_garbage(pos - skipped))
        del buf[:pos]
        return out

    def _identification(
        self, buf: bytearray, pos: int, n: int, skipped: int | None, out: list[Message]
    ) -> tuple[int, int | None, bool]:
        """
        LEN(2) IMEI at C{pos} (C{n} bytes on): the device's identification, or a repeat of it
        later, or garbage. Returns where to go on, where skipped garbage began, and whether
        to wait for more bytes; a fatal one leaves the framer dead.
        """
        length = buf[pos] << 8 | buf[pos + 1]
        if self.imei is None:
            if skipped is not None:
                out.append(_garbage(pos - skipped))
                skipped = None
            if length > MAX_IMEI:
                self._fatal(out, BadFrame("identity", f"an identification of {length} bytes", True))
            elif length + 2 > self.maxFrame:
                self._fatal(out, BadFrame("too long", f"a {length + 2}-byte identification", True))
            elif n < length + 2:
                return pos, skipped, True
            else:
                imei = buf[pos + 2:pos + 2 + length].decode("ascii", "replace")
                if not is_valid_imei(imei):
                    self._fatal(out, BadFrame("identity", f"invalid imei {imei!r}", True))
                else:
                    self.imei = imei
                    out.append(Identify(imei, reply=ACCEPT))
            return pos + length + 2, skipped, False
        if length <= MAX_IMEI and length + 2 <= self.maxFrame:
            if n < length + 2:
                return pos, skipped, True
            imei = buf[pos + 2:pos + 2 + length].decode("ascii", "replace")
            if is_valid_imei(imei):
                if skipped is not None:
                    out.append(_garbage(pos - skipped))
                    skipped = None
                if imei == self.imei:
                    out.append(Reply(ACCEPT))  # the device says who it is again: tell it again
                else:
                    out.append(BadFrame("identity", f"imei {imei!r} on the connection of {self.imei!r}"))
                return pos + length + 2, skipped, False
        pos, skipped = self._skip(buf, pos, len(buf), skipped)
        return pos, skipped, False

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
