"""
Limits that every way in applies alike: the HTTP API, the CLI and twistd's options
(CONTRACT §4). One place, so that no interface accepts what another refuses.
"""

DEFAULT_NUM = 50
"""Imeis in one page of a listing when the caller does not say."""
MAX_NUM = 1000
"""Most imeis in one page of a listing (C{num} 0..MAX_NUM; C{page} >= 0, unbounded)."""
MAX_TIMEOUT = 300.0
"""Longest wait, in seconds, a caller may ask for: for an ack, or for the broker (0 < timeout <= MAX_TIMEOUT)."""
MAX_TTL = 30 * 86_400.0
"""Longest life, in seconds, of a queued command (0 < ttl <= MAX_TTL); the same as L{devicehub.broker.store.MAX_TTL}."""
