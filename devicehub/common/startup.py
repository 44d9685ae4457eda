"""
Start-up failures of C{twistd devicehub}: one clear line on stderr and a non-zero exit.

A role that cannot start (a port taken, an address that cannot be bound, a store that
cannot be opened) raises L{StartupError} with a one-line message from its
C{privilegedStartService} or C{startService}. L{devicehub.tap.Roles} turns it into
that line on stderr (and in the log) and ends twistd with L{EXIT_STARTUP}, without a
traceback; in daemon mode twistd's parent process prints it.
"""

import sys
from typing import Mapping, TextIO

import zmq
from twisted.logger import Logger

log = Logger()

EXIT_STARTUP = 1
"""twistd's exit status when a role cannot start."""
EXIT_USAGE = 64
"""twistd's exit status for a bad option (as the CLI's)."""
PROGRAM = "twistd devicehub"


class StartupError(RuntimeError):
    """A role cannot start; the message is one line that says what and why."""


class StartupFailed(SystemExit, Exception):
    """
    Ends twistd with L{EXIT_STARTUP}, silently: the message was already written. It is
    also an C{Exception}, so that twistd's runner sees it as the failure of the
    application's start (it tells a daemon's parent and removes the pid file) before
    it ends the process.
    """

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_STARTUP)
        self.message = message

    def __str__(self) -> str:
        return self.message


# What a start can fail with, short of a bug: StartupError, the RuntimeError the broker
# raises when it cannot bind, and a ZeroMQ address ZeroMQ refuses.
EXPECTED = (RuntimeError, zmq.ZMQError)


def startupFailed(
    error: BaseException, environment: Mapping[str, str] | None = None, stream: TextIO | None = None
) -> StartupFailed:
    """
    Write the one line that says why twistd cannot start, to stderr and the log, and
    return the L{StartupFailed} to raise. C{environment} maps the C{DEVICEHUB_*}
    variables that set options to their values: the line names those it mentions.
    """
    message = str(error) if isinstance(error, RuntimeError) else f"{type(error).__name__}: {error}"
    causes = [name for name, value in sorted((environment or {}).items()) if value and value in message]
    if causes:
        message += f" (set by {', '.join(causes)})"
    log.critical("Cannot start: {message}", message=message)
    # The real stderr: twistd has redirected sys.stderr into the log.
    stream = stream if stream is not None else sys.__stderr__
    if stream is not None:
        stream.write(f"{PROGRAM}: {message}\n")
        stream.flush()
    return StartupFailed(message)


def usageFailed(message: str, stream: TextIO | None = None) -> SystemExit:
    """Write one line for an option error to stderr; return the C{SystemExit} (L{EXIT_USAGE}) to raise."""
    stream = stream if stream is not None else sys.stderr
    stream.write(f"{PROGRAM}: {message} (see: {PROGRAM} --help)\n")
    stream.flush()
    return SystemExit(EXIT_USAGE)
