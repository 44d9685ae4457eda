"""
L{Brokers}: the brokers a client can reach, which of them answer, and the one it uses.

With several frontends (CONTRACT §6), a client pings each broker every L{Brokers.interval}
seconds; a broker it has not heard from for L{Brokers.silence} seconds (or whose socket
has no connection) is down. The client uses the first broker, in the order given, that is
up and has warmed up (else the first that is up), and moves its unanswered calls there
when theirs goes down: the ZeroMQ guide's "freelance" pattern with a heartbeat. With one
frontend there is nothing to choose: no pings, a plain link.
"""

from functools import partial
from typing import Callable

import zmq
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from devicehub.wire.frames import Message
from devicehub.wire.link import Attach, Link

log = Logger()

PING = b"~ping"
"""The request id of pings (a call's id never starts with C{~})."""


class Brokers:
    """One L{Link} per frontend, and which broker answers."""

    interval = 0.25
    """Seconds between pings to each broker."""
    silence = 1.0
    """Seconds without a word from a broker after which it is taken for down."""

    def __init__(
        self, reactor, clock, frontends: tuple[str, ...], deliver: Callable[[int, Message], None], *,
        curve=None, local: Attach | None = None, onChange: Callable[[], None] = lambda: None,
        notSent: Callable[[Message], None] | None = None,
    ) -> None:
        """
        @param deliver: takes the index of the broker and each message it sent but the pongs.
        @param local: the broker of this process, reached in-process; it binds the first frontend.
        @param onChange: called when the broker in use changes, or one goes down.
        @param notSent: takes what a link held while it handled a batch of answers and
            then could not send (L{Link}); without it, links hold nothing.
        """
        self.clock = clock
        self.frontends = frontends
        self.deliver = deliver
        self.onChange = onChange
        self.links = [
            Link(reactor, address, partial(self._received, index), local=local if index == 0 else None, curve=curve,
                 notSent=notSent)
            for index, address in enumerate(frontends)
        ]
        self.heard: list[float | None] = [None] * len(frontends)
        self.warm: list[bool | None] = [None] * len(frontends)
        """Whether each broker said it warmed up (None: not asked yet)."""
        self.current = 0
        """The broker calls go to."""
        self._wasUp: frozenset[int] = frozenset()
        self._pinger: LoopingCall | None = None
        if len(frontends) > 1:
            self._pinger = LoopingCall(self._ping)
            self._pinger.clock = clock
            self._pinger.start(self.interval, now=True)

    @property
    def several(self) -> bool:
        return len(self.links) > 1

    def up(self, index: int) -> bool:
        """Whether broker C{index} answered lately (with one broker: always)."""
        heard = self.heard[index]
        return not self.several or (heard is not None and self.clock.seconds() - heard <= self.silence)

    def send(self, message: Message, avoid: frozenset[int] = frozenset()) -> int:
        """
        Send C{message} to the broker in use (or the next one up, not in C{avoid}); return
        its index. Raises C{zmq.Again} when no broker can take it now.
        """
        if len(self.links) == 1:
            self.links[0].send(message)
            return 0
        candidates = [self.current] + [index for index in self._preferred() if index != self.current]
        for index in candidates:
            if index in avoid or (index != self.current and not self.up(index)):
                continue
            try:
                self.links[index].send(message)
            except zmq.Again:
                self._down(index)
                continue
            return index
        raise zmq.Again()

    def states(self) -> dict[str, str]:
        """Each frontend's state: C{ok}, C{warming} (answers, not warmed up yet) or C{down}."""
        return {
            address: ("warming" if self.warm[index] is False else "ok") if self.up(index) and self.heard[index] else "down"
            for index, address in enumerate(self.frontends)
        }

    def close(self) -> None:
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        for link in self.links:
            link.close()

    def _preferred(self) -> list[int]:
        """Brokers up and warm first, then those up, in the order given."""
        up = [index for index in range(len(self.links)) if self.up(index)]
        return sorted(up, key=lambda index: {True: 0, None: 1, False: 2}[self.warm[index]])

    def _ping(self) -> None:
        for index, link in enumerate(self.links):
            try:
                link.send(Message(b"ping", PING, {}))
            except zmq.Again:
                self.heard[index] = None  # no connection to it
        self._choose()

    def _choose(self) -> None:
        preferred = self._preferred()
        best = preferred[0] if preferred else self.current
        up = frozenset(preferred)
        changed = best != self.current or not up >= self._wasUp
        self._wasUp = up
        if best != self.current:
            log.info("Using the broker at {frontend}", frontend=self.frontends[best])
            self.current = best
        if changed:
            self.onChange()

    def _down(self, index: int) -> None:
        self.heard[index] = None
        self._choose()

    def _received(self, index: int, message: Message) -> None:
        if message.rid == PING:
            wasUp = self.up(index)
            self.heard[index] = self.clock.seconds()
            self.warm[index] = message.kind == b"reply" and message.body.get("warm") is True
            if not wasUp:
                self._choose()
            return
        self.heard[index] = self.clock.seconds()
        self.deliver(index, message)
