"""
L{Calls}: a client's requests in flight to its brokers, each matched to its answer by a
request id, with a deadline (its wait plus L{Calls.margin}), sent again when ZeroMQ had
no broker to queue it for, and moved to another broker when theirs goes down
(L{devicehub.client.failover}). L{devicehub.client.demand.Demand} makes the requests.
"""

import secrets
from collections import deque
from functools import partial
from typing import Any, Callable, NamedTuple

import zmq
from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from devicehub.client.failover import Brokers
from devicehub.common.deadlines import Deadline, Deadlines
from devicehub.common.errors import BrokerUnavailable, Busy, CommandStoreFailed, RequestRejected
from devicehub.common.jsoncodec import MAX_DEPTH, dumps
from devicehub.wire import frames
from devicehub.wire.frames import Message
from devicehub.wire.link import Attach

RESEND_INTERVAL = 0.02
"""Seconds between attempts to hand ZeroMQ a call it could not queue (no broker connected)."""


class _Call:
    """One call waiting for its answer: its Deferred, what the answer's body is made into, its deadline."""

    __slots__ = ("answer", "convert", "deadline")

    def __init__(self, answer: "Deferred[Any]", convert: Callable[[dict[str, Any]], Any] | None,
                 deadline: Deadline) -> None:
        self.answer = answer
        self.convert = convert
        self.deadline = deadline


class _Sent(NamedTuple):
    message: Message
    broker: int
    tried: frozenset[int]


class Calls:
    """The requests of one client that wait for their answers."""

    margin = 1.0
    """Seconds past a call's wait before it fails with L{BrokerUnavailable}."""

    def __init__(self, reactor, clock, frontends: tuple[str, ...], *, curve=None, local: Attach | None = None) -> None:
        self.frontend = ",".join(frontends)
        self._reactor = reactor
        self._clock = clock
        self.brokers = Brokers(reactor, clock, frontends, self._answered, curve=curve, local=local, onChange=self._rescue,
                               notSent=self._notSent)
        self.pending: dict[bytes, _Call] = {}
        """The calls waiting for their answers, by request id (one map: a call costs one entry)."""
        self._deadlines = Deadlines(clock)
        self._sent: dict[bytes, _Sent] = {}
        """With several brokers: each unanswered call, and the brokers it went to."""
        self._unsent: deque[Message] = deque()
        self._resend = None
        self._lastId = 0
        # Several brokers: ids unique across clients, for the nodes to recognise a repeat.
        self._prefix = secrets.token_hex(8).encode() + b"." if self.brokers.several else b""

    def close(self) -> None:
        """Release the sockets; calls still waiting fail with L{BrokerUnavailable}."""
        self.brokers.close()
        if self._resend is not None and self._resend.active():
            self._resend.cancel()
        self._unsent.clear()
        pending, self.pending = self.pending, {}
        self._sent.clear()
        self._deadlines.stop()
        for waiting in pending.values():
            waiting.answer.errback(BrokerUnavailable("the Demand was closed"))

    def call(
        self, kind: bytes, body: dict[str, Any], wait: float, convert: Callable[[dict[str, Any]], Any] | None = None
    ) -> "Deferred[Any]":
        """
        Send request C{kind}; fires with the answer's body, or with C{convert(body)} (its
        exception, if it raises, is the failure), or fails (L{BrokerUnavailable} after
        C{wait} + L{margin}). C{convert} costs a call less than a callback of the caller's.
        """
        self._lastId += 1
        rid = b"%s%x" % (self._prefix, self._lastId)
        if self._prefix and kind == b"send":
            body["request"] = rid.decode()  # the node answers a repeat through another broker from what it did
        try:
            message = Message(kind, rid, body, dumps(body))
        except (TypeError, ValueError) as e:  # data that is not JSON
            return fail(e)
        except RecursionError:
            return fail(ValueError(f"data nested deeper than {MAX_DEPTH} levels"))
        if len(message.payload) > frames.MAX_MESSAGE:
            return fail(ValueError(f"request larger than {frames.MAX_MESSAGE} bytes"))
        answer: Deferred[Any] = Deferred(partial(self._cancelled, rid))
        deadline = self._deadlines.callLater(wait + self.margin, self._expire, rid, wait + self.margin)
        self.pending[rid] = _Call(answer, convert, deadline)
        if self._resend is None and not self._unsent:  # nothing waits before it: straight to ZeroMQ
            try:
                self._sendNow(message)
                return answer
            except zmq.Again:
                pass
        self._unsent.append(message)
        if self._resend is None:
            self._flush()
        return answer

    def _expire(self, rid: bytes, timeout: float) -> None:
        self._forget(rid).errback(BrokerUnavailable(f"no answer from the broker at {self.frontend} within {timeout:g} s"))

    def _forget(self, rid: bytes) -> "Deferred[Any]":
        """The call's Deferred, which nothing else waits for now (a callback of its own would cost each call ~0.4 us)."""
        waiting = self.pending.pop(rid)
        waiting.deadline.cancel()
        if self._sent:
            self._sent.pop(rid, None)
        return waiting.answer

    def _cancelled(self, rid: bytes, answer: "Deferred[dict[str, Any]]") -> None:
        """The caller gave up on the call: it is forgotten now (its answer, if one comes, is dropped)."""
        waiting = self.pending.get(rid)
        if waiting is not None and waiting.answer is answer:
            self._forget(rid)

    def _sendNow(self, message: Message, avoid: frozenset[int] = frozenset()) -> None:
        """Send to the broker in use (raises C{zmq.Again}); with several, remember which one."""
        broker = self.brokers.send(message, avoid)
        if self._prefix:
            tried = self._sent[message.rid].tried if message.rid in self._sent else frozenset()
            self._sent[message.rid] = _Sent(message, broker, tried | {broker})

    def _notSent(self, message: Message) -> None:
        """A call held for the end of a batch of answers found no broker to take it: it waits its turn."""
        if message.rid in self.pending:
            self._unsent.append(message)
            if self._resend is None:
                self._resend = self._reactor.callLater(RESEND_INTERVAL, self._flush)

    def _rescue(self) -> None:
        """Calls sent to a broker that went down go to the one in use now, with the same id."""
        brokers = self.brokers
        for sent in list(self._sent.values()):
            if sent.broker != brokers.current and not brokers.up(sent.broker) and brokers.up(brokers.current):
                try:
                    self._sendNow(sent.message)
                except zmq.Again:
                    return

    def _flush(self) -> None:
        """Hand queued calls to ZeroMQ, oldest first, skipping those already failed."""
        self._resend = None
        while self._unsent:
            message = self._unsent[0]
            if message.rid in self.pending:
                try:
                    self._sendNow(message)
                except zmq.Again:
                    # No broker connected yet (or its queue is full): try again shortly.
                    self._resend = self._reactor.callLater(RESEND_INTERVAL, self._flush)
                    return
            self._unsent.popleft()

    def _answered(self, broker: int, message: Message) -> None:
        waiting = self.pending.get(message.rid)
        if waiting is None:
            return  # the call already failed with BrokerUnavailable (or another broker answered it)
        sent = self._sent.get(message.rid)
        if sent is not None and message.kind == b"error" and message.body.get("code") == "unavailable":
            # Warming up or shutting down: another broker may answer it.
            try:
                self._sendNow(sent.message, avoid=sent.tried)
                return
            except zmq.Again:
                pass
        convert = waiting.convert
        answer = self._forget(message.rid)
        if message.kind == b"reply":
            if convert is None:
                answer.callback(message.body)
                return
            try:
                value = convert(message.body)
            except Exception:
                answer.errback(Failure())
            else:
                answer.callback(value)
        elif message.kind == b"error" and message.body["code"] == "invalid":
            answer.errback(RequestRejected(message.body["error"]))
        elif message.kind == b"error" and message.body["code"] == "busy":
            answer.errback(Busy(message.body["error"]))
        elif message.kind == b"error" and message.body["code"] == "store":
            answer.errback(CommandStoreFailed(message.body["error"]))
        elif message.kind == b"error":
            answer.errback(BrokerUnavailable(message.body["error"]))
        else:
            answer.errback(BrokerUnavailable(f"unexpected {message.kind!r} from the broker"))

