"""The listen backlog of devicehub's own listeners (devices and HTTP)."""

import re

# Pending connections the kernel keeps for a listener. Twisted's default is 50, so a
# burst of connects would see SYNs dropped and retried a second later.
LISTEN_BACKLOG = 1024

_KINDS = ("tcp", "tcp6", "ssl", "unix")


def withBacklog(description: str, backlog: int = LISTEN_BACKLOG) -> str:
    """
    The server endpoint string C{description} with a listen backlog of C{backlog},
    unless it sets one itself or is of a kind that takes no C{backlog} option.
    """
    parts = re.split(r"(?<!\\):", description)  # a backslash escapes a colon
    if parts[0] not in _KINDS:
        return description
    if any(part.partition("=")[0] == "backlog" for part in parts[1:]):
        return description
    return f"{description}:backlog={backlog}"
