"""
GT06 framing: the byte stream cut into frames (the rules are in L{devicehub.devices.codecs.gt06}).

A frame is LEN's length when it ends in 0D 0A there (the fast path, one frame per loop
turn); when it does not, L{_Search} looks for its end, every byte searched once however
the bytes trickle in. Bytes before a start are garbage, one L{BadFrame} per run.
"""

from typing import Callable

from fastcrc.crc16 import ibm_sdlc as crcX25

from devicehub.devices.codec import BadFrame, Message

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



class Gt06Framer:
    """
    Cuts one connection's bytes into frames and hands each whole frame (start to 0D 0A)
    to C{decode}; an exception there makes the frame a C{decode} L{BadFrame}.
    """

    def __init__(self, maxFrame: int, decode: Callable[[bytes], Message]) -> None:
        self.maxFrame = maxFrame
        self._decodeFrame = decode
        self._buf = bytearray()
        self._wait: _Search | None = None
        """The search for the end of the frame the held bytes begin, when LEN does not end it."""
        self._dead = False

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (never more than C{maxFrame})."""
        return len(self._buf)

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
        decode = self._decodeFrame
        out: list[Message] = []
        starts = _Starts(buf)
        garbage = (-1, 0)
        waited, self._wait = self._wait, None
        i = 0
        while i < size:
            first = buf[i]
            if (first != 0x78 and first != 0x79) or (i + 1 < size and buf[i + 1] != first):
                j = self._garbageEnd(buf, i, starts)
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
                    return self._waitForEnd(out, search, buf, i)
            if end > maxFrame:
                return self._fatal(out, f"a frame of {end} bytes (longest {maxFrame})")
            try:
                out.append(decode(bytes(buf[i:i + end])))
            except Exception as e:  # never raise from feed: an undecodable frame is a bad frame
                out.append(BadFrame("decode", f"{type(e).__name__}: {e}"))
            i += end
        self._keep(buf, i)
        return out

    @staticmethod
    def _garbageEnd(buf: bytes, i: int, starts: _Starts) -> int:
        """Where the garbage at C{i} ends: at the next frame start, or the end of the bytes."""
        j = starts.after(i + 1)
        if j < 0:
            # Keep a last byte that may be the first half of a start.
            size = len(buf)
            j = size - 1 if buf[-1] in (0x78, 0x79) and size - 1 > i else size
        return j

    @staticmethod
    def _garbage(out: list[Message], run: tuple[int, int], i: int, j: int) -> tuple[int, int]:
        """Count C{buf[i:j]} as garbage: one bad frame for a run of it. Returns the run (start, end)."""
        start = run[0] if run[1] == i and out and isinstance(out[-1], BadFrame) else i
        if start != i:
            out.pop()
        out.append(BadFrame("decode", f"{j - start} bytes of garbage before a frame start"))
        return (start, j)

    def _waitForEnd(self, out: list[Message], search: _Search, buf: bytes, i: int) -> list[Message]:
        """The frame at C{i} has no end yet: keep it and its search (fatal past C{maxFrame})."""
        if len(buf) - i >= self.maxFrame:
            return self._fatal(out, f"no frame end within {self.maxFrame} bytes")
        self._wait = search
        self._keep(buf, i)
        return out

    def _keep(self, buf: bytes, i: int) -> None:
        """Hold the bytes from C{i} on, a frame not all here yet."""
        if buf is self._buf:
            del buf[:i]
        elif i < len(buf):
            self._buf = bytearray(buf[i:])

    def _fatal(self, out: list[Message], error: str) -> list[Message]:
        self._dead = True
        self._buf = bytearray()
        self._wait = None
        out.append(BadFrame("too long", error, fatal=True))
        return out
