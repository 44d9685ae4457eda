"""
Limits that every way in applies alike: the HTTP API, the CLI and twistd's options
(CONTRACT §4). One place, so that no interface accepts what another refuses.
"""

import math

DEFAULT_NUM = 50
"""Imeis in one page of a listing when the caller does not say."""
MAX_NUM = 1000
"""Most imeis in one page of a listing (C{num} 0..MAX_NUM; C{page} >= 0, unbounded)."""
MAX_TIMEOUT = 300.0
"""Longest wait, in seconds, a caller may ask for: for an ack, or for the broker (0 < timeout <= MAX_TIMEOUT)."""
MAX_TTL = 30 * 86_400.0
"""Longest life, in seconds, of a queued command (0 < ttl <= MAX_TTL); the same as L{devicehub.broker.store.MAX_TTL}."""


def isSeconds(value: object, maximum: float = math.inf) -> bool:
    """
    Whether C{value} is a number of seconds in 0 < value <= C{maximum}: an int or a float
    (not a bool), finite. The one rule behind every interface's timeouts and ttls.
    """
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value <= maximum
    )


def parseSeconds(text: str, maximum: float = math.inf) -> float | None:
    """C{text} (an option's or argument's value) as seconds under L{isSeconds}, or None."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if isSeconds(number, maximum) else None
