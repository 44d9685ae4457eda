"""
The reactor C{twistd devicehub} runs on: Twisted's epoll reactor, without a log context per event.

Twisted's reactor hands each ready file descriptor to C{log.callWithLogger}, which asks the
connection for its log prefix and pushes a legacy log context (a dict copied and updated)
around the read. devicehub logs through C{twisted.logger}, whose events do not read that
context, and at 1 000 devices a command costs two such events (the command's read from the
caller is shared; the device's ack is one of its own): 6 % of the hub's CPU per command
end to end, 23 000 instructions per event (docs/performance.md). L{LeanEPollReactor} calls the same C{_doReadOrWrite} directly.
"""

import errno
import select
import sys

from twisted.internet import main
from twisted.logger import Logger

log = Logger()

if hasattr(select, "epoll"):
    from twisted.internet.epollreactor import EPollReactor
else:  # not Linux: the platform's default reactor, untouched
    EPollReactor = None


if EPollReactor is not None:

    class LeanEPollReactor(EPollReactor):
        """
        C{EPollReactor}, except that a ready descriptor's read or write is called without
        C{log.callWithLogger}. What that adds is not lost: C{_doReadOrWrite} still logs
        what a read or write raises and disconnects that descriptor. Only the C{system}
        of Twisted's legacy C{log.msg} calls made inside one becomes C{"-"}.
        """

        def doPoll(self, timeout: float | None) -> None:
            """Poll for events and handle each (C{EPollReactor.doPoll}, with no log context)."""
            try:
                events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
            except OSError as error:
                if error.errno == errno.EINTR:
                    return
                raise
            handle = self._doReadOrWrite
            selectable = self._selectables.get
            for fd, event in events:
                ready = selectable(fd)  # looked up now: an earlier event may have closed it
                if ready is not None:
                    try:
                        handle(ready, fd, event)
                    except KeyboardInterrupt:  # as log.callWithLogger does
                        raise
                    except BaseException:
                        log.failure("Handling an event of {selectable!r}", selectable=ready)

        doIteration = doPoll


def install() -> None:
    """Install L{LeanEPollReactor} as the global reactor (on a platform without epoll, the default one)."""
    if EPollReactor is None:
        from twisted.internet import default

        default.install()
    else:
        main.installReactor(LeanEPollReactor())


def installUnlessChosen() -> None:
    """Install L{install}'s reactor unless one is installed already (C{twistd -r NAME}, a test's)."""
    if "twisted.internet.reactor" not in sys.modules:
        install()
