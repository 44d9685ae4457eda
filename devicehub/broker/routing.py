"""
Commands handed to nodes and waiting for their results: ids, deadlines and in-flight limits.
"""

import secrets
from collections import Counter
from typing import Any, Callable, NamedTuple

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from devicehub.broker.directory import NodeRecord
from devicehub.common.deadlines import Deadlines
from devicehub.common.drain import Idle
from devicehub.common.metrics import Metrics
from devicehub.common.logs import Throttled
from devicehub.common.results import BUSY, REJECTED, RESULTS, TIMEOUT, Reply
from devicehub.wire.frames import Message

log = Logger()
throttled = Throttled(log)

Send = Callable[[bytes, Message], bool]

Execute = Callable[[dict[str, Any]], "Deferred[Reply] | None"]
"""A node of the broker's own process: executes a command's body at once and returns its reply
(None: the node is stopping and drops it, as its link would)."""


class Routed(NamedTuple):
    """A command handed to a node, waiting for its result."""

    client: bytes | None
    """The client to answer, or None for the broker's own delivery of a queued command."""
    rid: bytes
    node: NodeRecord
    imei: str
    timer: Any
    started: float
    waiter: Deferred | None = None
    """For the broker's own deliveries: fires with the result."""


class Routes:
    """
    The commands in flight. Each gets an id that is unique across broker incarnations (a
    node may still answer a command routed by this broker's previous run, CONTRACT §6), a
    deadline of its timeout plus C{grace}, and counts against its client's in-flight limit.
    """

    def __init__(
        self, clock, toNode: Send, answer: Callable[[Routed, dict[str, Any], bytes], None], metrics: Metrics,
        grace: float, maxClientInflight: int, local: dict[bytes, Execute] | None = None,
    ) -> None:
        """
        @param toNode: sends a message to a node; False when it cannot be reached.
        @param answer: answers a routed command's caller with a body and a message kind.
        @param local: the nodes of this process, by identity: their commands are handed to
            them as calls, and their replies come back as the calls' results, with no message
            either way (the fused path of docs/architecture.md).
        """
        self.clock = clock
        self._deadlines = Deadlines(clock)
        self.toNode = toNode
        self.answer = answer
        self.metrics = metrics
        self.grace = grace
        self.maxClientInflight = maxClientInflight
        self.routed: dict[bytes, Routed] = {}
        self.onNodeIdle: Callable[[NodeRecord], None] = lambda node: None
        """Called when a leaving node's last command is answered."""
        self._perClient: Counter[bytes] = Counter()
        self._idle = Idle()
        self._ridPrefix = secrets.token_hex(8).encode() + b"."
        self._lastRid = 0
        self.local: dict[bytes, Execute] = {} if local is None else local
        self._toExecute: list[tuple[Execute, dict[str, Any], bytes]] = []
        self._executing = None
        self._executedNow: list[tuple[bytes, Reply]] = []
        self._answering = None

    def __len__(self) -> int:
        return len(self.routed)

    def whenEmpty(self) -> "Deferred[None]":
        """Fires once no command is in flight (at once when none is)."""
        return self._idle.wait(bool(self.routed))

    def full(self, client: bytes) -> bool:
        """Has C{client} as many commands in flight as it may?"""
        return self._perClient[client] >= self.maxClientInflight

    def route(
        self, node: NodeRecord, body: dict[str, Any], payload: bytes | None, client: bytes | None, rid: bytes,
        waiter: Deferred | None = None,
    ) -> bool:
        """Hand a command to C{node}; False if it cannot be reached."""
        self._lastRid += 1
        brid = b"%s%x" % (self._ridPrefix, self._lastRid)
        execute = self.local.get(node.identity)
        if execute is None and not self.toNode(node.identity, Message(b"command", brid, body, payload)):
            return False
        timer = self._deadlines.callLater(body["timeout"] + self.grace, self._expire, brid)
        self.routed[brid] = Routed(client, rid, node, body["imei"], timer, self.clock.seconds(), waiter)
        node.inflight.add(brid)
        if client is not None:
            self._perClient[client] += 1
        if execute is not None:
            self._executeLocally(execute, body, brid)
        return True

    def _executeLocally(self, execute: Execute, body: dict[str, Any], rid: bytes) -> None:
        # On the next turn, with every other command of this one: the devices' writes then
        # leave in one burst, as the node's pipe delivered them (each one as it is routed
        # would cost the devices' side a wake-up each, docs/performance.md).
        self._toExecute.append((execute, body, rid))
        if self._executing is None:
            self._executing = self.clock.callLater(0, self._executeNow)

    def _executeNow(self) -> None:
        self._executing = None
        toExecute, self._toExecute = self._toExecute, []
        for execute, body, rid in toExecute:
            try:
                done = execute(body)
            except Exception:
                log.failure("A node of this process failed to execute a command")  # its deadline answers it
                continue
            if done is not None:
                done.addCallback(self._executed, rid)

    def _executed(self, reply: Reply, rid: bytes) -> None:
        # Answered on the next turn, with every other reply of this one: never inside the
        # call that routed the command (as no message from a node would be), and the
        # answers then leave together (ZeroMQ's I/O thread is woken once for them).
        self._executedNow.append((rid, reply))
        if self._answering is None:
            self._answering = self.clock.callLater(0, self._answerExecuted)

    def _answerExecuted(self) -> None:
        self._answering = None
        executed, self._executedNow = self._executedNow, []
        routed = self.routed
        for rid, reply in executed:
            one = routed.get(rid)
            if one is None:
                log.debug("Dropped a late result from node {node}", node="(this process)")
            else:
                self._answerResult(rid, one, reply.result, reply.data)

    def resultFor(self, rid: bytes, node: NodeRecord, imei: str) -> Routed | None:
        """The command a result of C{node} for C{imei} answers, or None (late, or not its own)."""
        routed = self.routed.get(rid)
        if routed is None or routed.node is not node or routed.imei != imei:
            return None
        return routed

    def result(self, node: NodeRecord, rid: bytes, body: dict[str, Any]) -> None:
        """C{node}'s result for routed command C{rid}: answer its caller (a late or foreign one is dropped)."""
        routed = self.resultFor(rid, node, body["imei"])
        if routed is None:
            log.debug("Dropped a late result from node {node}", node=node.name)
            return
        self._answerResult(rid, routed, body["result"], body["data"])

    def _answerResult(self, rid: bytes, routed: Routed, result: str, data: Any) -> None:
        self.finish(rid, result if result in RESULTS or result in (BUSY, REJECTED) else "invalid")
        if result in RESULTS:
            self.answer(routed, {"result": result, "data": data}, b"reply")
        elif result == BUSY:
            self.answer(routed, {"error": "the device has too many unanswered commands", "code": "busy"}, b"error")
        elif result == REJECTED:
            self.answer(routed, {"error": str(data), "code": "invalid"}, b"error")
        else:
            throttled.warn("Node {node} sent an invalid result {result!r}", node=routed.node.name, result=result)
            self.answer(routed, {"error": "invalid result from node", "code": "unavailable"}, b"error")

    def finish(self, rid: bytes, result: str) -> Routed:
        """Forget routed command C{rid}, whose caller is about to be answered C{result}."""
        routed = self.routed.pop(rid)
        self.count(result)
        self.metrics.commands.observe(self.clock.seconds() - routed.started)
        routed.timer.cancel()
        node = routed.node
        node.inflight.discard(rid)
        if routed.client is not None:
            self._perClient[routed.client] -= 1
            if not self._perClient[routed.client]:
                del self._perClient[routed.client]
        if node.leaving and not node.inflight:
            self.onNodeIdle(node)
        if self._idle.waiting and not self.routed:
            # Next turn: the caller of finish() still has to answer this command's client.
            self.clock.callLater(0, self._fireIfEmpty)
        return routed

    def _fireIfEmpty(self) -> None:
        if not self.routed:
            self._idle.fire()

    def count(self, result: str) -> None:
        """Count an answer of C{result} in the metrics."""
        self.metrics.commands.count(result)

    def _expire(self, rid: bytes) -> None:
        routed = self.finish(rid, TIMEOUT)
        log.debug("No result from node {node} in time", node=routed.node.name)
        self.answer(routed, {"result": TIMEOUT}, b"reply")

    def failNode(self, node: NodeRecord) -> None:
        """C{node} is gone: its commands time out now."""
        for rid in list(node.inflight):
            self.answer(self.finish(rid, TIMEOUT), {"result": TIMEOUT}, b"reply")

    def failAll(self, code: str, error: str) -> None:
        """Answer every command in flight with an error (the broker is going away)."""
        for rid in list(self.routed):
            self.answer(self.finish(rid, code), {"error": error, "code": code}, b"error")
