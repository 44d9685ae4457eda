"""L{BadFrameBudget}: how many bad frames a device connection may send before it is closed."""

BAD_LINE_WINDOW = 60.0
"""The window of the bad-frame budget, in seconds."""


class BadFrameBudget:
    """
    Counts bad frames in windows of C{window} seconds: a window opens at the first bad
    frame more than C{window} seconds after the last window opened.
    """

    __slots__ = (
        "_clock", "_count", "_limit", "_start", "_window",
    )

    def __init__(self, clock, limit: int, window: float = BAD_LINE_WINDOW) -> None:
        self._clock = clock
        self._limit = limit
        self._window = window
        self._start = 0.0
        self._count = 0

    def spend(self) -> bool:
        """Count one bad frame; False once more than C{limit} were counted in the current window."""
        now = self._clock.seconds()
        if now - self._start > self._window:
            self._start, self._count = now, 0
        self._count += 1
        return self._count <= self._limit
