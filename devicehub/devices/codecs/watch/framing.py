"""
Watch framing: the byte stream cut into frames, C{[} to the C{]} that balances it (the
rules are in L{devicehub.devices.codecs.watch}); bytes between frames are garbage.
"""

import re

from devicehub.devices.codec import BadFrame, Message

_WHITE = b" \t\r\n"
_FRAME_START = re.compile(rb"\[[0-9A-Za-z]{1,8}\*")
_FRAME_START_PREFIX = re.compile(rb"\[[0-9A-Za-z]{0,8}")
_FRAME_START_MAX = 10


class WatchFramer:
    """
    Cuts one connection's bytes into frames and hands each whole frame to its decoder's
    C{decode} (a list of messages); an exception there makes the frame a C{decode}
    L{BadFrame}, and a decoder that turned C{dead} ends the connection's frames.
    """

    def __init__(self, maxFrame: int, decoder) -> None:
        self.maxFrame = maxFrame
        self._decoder = decoder
        self._buf = b""
        self._depth = 0  # brackets open in the frame being read (0: between frames)
        self._scan = 0  # where the search for its closing bracket goes on in _buf
        self._junk = 0  # length of the current run of bytes between frames
        self._junkSeen = False  # whether that run holds more than white space
        self._dead = False

    def feed(self, data: bytes) -> list[Message]:
        """Take the next bytes the device sent; return the messages of every frame they complete."""
        decoder = self._decoder
        if self._dead or decoder.dead or not data:
            return []
        decode = decoder.decode
        out: list[Message] = []
        buf = self._buf + data if self._buf else bytes(data)
        n = len(buf)
        pos = 0
        depth = self._depth
        scan = self._scan
        maxFrame = self.maxFrame
        while pos < n:
            if depth == 0:
                start = buf.find(b"[", pos)
                if (start != pos or self._junk) and not self._junkRun(buf, pos, start, out):
                    return self._fatal(out, f"more than {maxFrame} bytes outside any frame")
                if start < 0:
                    pos = n
                    break
                pos = start
                scan = start + 1
                depth = 1
            limit = pos + maxFrame
            close = buf.find(b"]", scan, limit)
            if close < 0:
                if n >= limit:
                    return self._fatal(out, f"frame longer than {maxFrame} bytes")
                depth += buf.count(b"[", scan, n)
                scan = n
                break
            opened = depth + buf.count(b"[", scan, close) - 1
            if opened > 0 and _FRAME_START.match(buf, close + 1) is None:
                still = self._stillOpen(buf, pos, close, opened)
                if still is not None:
                    depth, scan, wait = still
                    if wait:
                        break
                    continue
            try:
                out.extend(decode(buf[pos : close + 1]))
            except Exception as e:  # never raise from feed(): a frame we cannot read is a bad frame
                out.append(BadFrame("decode", f"{type(e).__name__}: {e}"))
            if decoder.dead:
                self._buf = b""
                return out
            pos = close + 1
            depth = 0
        # Keep only the unfinished frame (at most maxFrame bytes); garbage is never kept.
        if depth:
            self._buf = buf[pos:]
            self._scan = scan - pos
        else:
            self._buf = b""
            self._scan = 0
        self._depth = depth
        return out

    def _junkRun(self, buf: bytes, pos: int, start: int, out: list[Message]) -> bool:
        """
        Count the bytes before the frame C{start} (the end of C{buf} if -1) as the run of
        garbage between frames; once a frame starts, a run holding more than white space is
        one L{BadFrame}. False when the run is longer than C{maxFrame}.
        """
        end = len(buf) if start < 0 else start
        if end > pos:
            self._junk += end - pos
            if not self._junkSeen and buf[pos:end].strip(_WHITE):
                self._junkSeen = True
            if self._junk > self.maxFrame:
                return False
        if start >= 0 and self._junk:
            if self._junkSeen:
                out.append(BadFrame("decode", f"{self._junk} bytes of garbage before a frame"))
            self._junk = 0
            self._junkSeen = False
        return True

    def _stillOpen(self, buf: bytes, pos: int, close: int, opened: int) -> tuple[int, int, bool] | None:
        """
        A C{]} at C{close} that leaves C{opened} brackets open (a Wi-Fi name) ends the frame
        anyway when the next frame follows; until that is known, wait (never buffering more
        than C{maxFrame}). None: the frame ends there; else (depth, scan, wait for more bytes).
        """
        n = len(buf)
        after = close + 1
        if n - after >= _FRAME_START_MAX or (after < n and not _FRAME_START_PREFIX.fullmatch(buf, after)):
            return opened, after, False
        if n - pos <= self.maxFrame:
            return opened + 1, close, True  # this "]" is read again with more bytes
        return None

    def _fatal(self, out: list[Message], error: str) -> list[Message]:
        self._dead = True
        self._buf = b""
        out.append(BadFrame("too long", error, fatal=True))
        return out
