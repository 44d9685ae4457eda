"""
Logging that a flood cannot turn into a full disk.

Per-device events (connections, logins, refusals, closes, command outcomes) and
warnings about malformed input are logged through a L{Throttled} logger: each
kind of line (its format) has a token bucket, so a burst is logged whole while a
sustained flood is cut down to a steady rate; the next line that passes says how
many like it were left out.
"""

import time
from typing import Any, Callable

from twisted.logger import Logger, LogLevel

# Lines of one format logged in a burst, and per second after it.
BURST = 200
RATE = 5.0


class Throttled:
    """A L{Logger} that emits at most C{burst} lines of a format at once, C{rate} a second after that."""

    def __init__(
        self, logger: Logger, burst: int = BURST, rate: float = RATE, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.rate = rate
        self.now = now
        self._buckets: dict[str, list[float]] = {}  # format -> [tokens, last refill, left out]

    def emit(self, level: LogLevel, format: str, **kwargs: Any) -> None:
        """Log one line, unless its format has used up its share; then count it."""
        now = self.now()
        bucket = self._buckets.get(format)
        if bucket is None:
            bucket = self._buckets[format] = [float(self.burst), now, 0]
        bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if bucket[0] < 1:
            bucket[2] += 1
            return
        bucket[0] -= 1
        if bucket[2]:
            self.logger.emit(level, "({count} more lines like the next were left out)", count=int(bucket[2]))
            bucket[2] = 0
        self.logger.emit(level, format, **kwargs)

    def reset(self) -> None:
        """Every format gets its whole share again, and nothing is counted as left out."""
        self._buckets.clear()

    def debug(self, format: str, **kwargs: Any) -> None:
        self.emit(LogLevel.debug, format, **kwargs)

    def info(self, format: str, **kwargs: Any) -> None:
        self.emit(LogLevel.info, format, **kwargs)

    def warn(self, format: str, **kwargs: Any) -> None:
        self.emit(LogLevel.warn, format, **kwargs)


def peerName(transport) -> str:
    """C{host:port} of a transport's peer (or what the transport says of it)."""
    peer = transport.getPeer()
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    return str(peer) if host is None else f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
