"""
L{BrokerLink}: the node's link to one broker's backend (L{devicehub.node.upstreams} holds one per broker). It registers with a full snapshot of
the node's devices, reports presence changes and uplinks, heartbeats, and turns the broker's
C{command} messages into L{devicehub.node.node.Node.execute} calls.
"""

import secrets
from functools import partial
from typing import Any

import zmq
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from devicehub.common.logs import Throttled
from devicehub.common.results import Reply
from devicehub.node.node import Node
from devicehub.wire.frames import Message
from devicehub.wire.link import Attach, Link

log = Logger()
throttled = Throttled(log)

SNAPSHOT_PART = 5000
"""Rows of a node's snapshot per message: ~10 ms for the broker to decode each."""


class BrokerLink(Service):
    """
    The node's connection to the broker: over ZeroMQ to its backend, or, when
    the broker runs in this process, through an in-process pipe, with commands
    handed over as calls of L{execute}.
    """

    # Seconds between hello attempts while unregistered, doubling up to the heartbeat.
    firstRetry = 0.05
    # Missed heartbeats after which the broker is taken for gone.
    missedBeats = 3

    def __init__(
        self, node: Node, backend: str, reactor, heartbeat: float = 1.0, curve=None,
        local: Attach | None = None,
    ) -> None:
        """
        @param local: the broker of this process (its C{connectNode}), to link to in-process
            (C{backend} is then unused); it calls L{execute} for each command.
        """
        self.node = node
        self.backend = backend
        self.curve = curve
        self.local = local
        self.reactor = reactor
        self.heartbeat = heartbeat
        self.registered = False
        self.refused: str | None = None
        """Why the broker refused to register this node, while it does."""
        self.instance = secrets.token_hex(8)
        """This process's own id: tells a node from another that has the same name."""
        self.leaving = False
        self.connection: Link | None = None
        self._timer = None
        self._retry = self.firstRetry
        self._lastHeard = 0.0
        self._helloSent = True

    def startService(self) -> None:
        super().startService()
        # On close, ZeroMQ's own thread (or the pipe) still delivers what was sent for a second.
        # The broker of this process hands its commands to execute() as calls.
        local = None if self.local is None else partial(self.local, execute=self.execute)
        self.connection = Link(self.reactor, self.backend, self.handle, local=local, curve=self.curve, linger=1.0)
        self._tick()

    def leave(self) -> None:
        """
        Tell the broker this node is going: its devices leave the directory now,
        while results of commands in flight still go through.
        """
        if not self.leaving:
            self.leaving = True
            self._send(b"bye", {})

    def stopService(self) -> Deferred | None:
        """Leave, and close the link once what this node sent has gone (or timed out)."""
        super().stopService()
        self.leave()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        connection, self.connection = self.connection, None
        return connection.close()

    # -- to the broker

    def online(self, imei: str, conn: int, since: float, protocol: str = "jsonl") -> None:
        self._send(b"online", {"imei": imei, "conn": conn, "since": since, "protocol": protocol})

    def offline(self, imei: str, conn: int, reason: str = "closed") -> None:
        self._send(b"offline", {"imei": imei, "conn": conn, "reason": reason})

    def uplink(self, imei: str, message: dict[str, Any], ts: float, protocol: str | None = None) -> None:
        body = {"imei": imei, "message": message, "ts": ts}
        if protocol is not None:
            body["protocol"] = protocol
        self._send(b"uplink", body)

    def _send(self, kind: bytes, body: dict[str, Any], rid: bytes = b"") -> bool:
        try:
            self.connection.send(Message(kind, rid, body))
            return True
        except zmq.Again:
            # Not connected (or the broker is not reading): the next hello carries the state.
            self.registered = False
        except zmq.ZMQError as e:
            throttled.warn("Cannot send {kind} to the broker: {error}", kind=kind, error=e)
            self.registered = False
        return False

    def _tick(self) -> None:
        now = self.reactor.seconds()
        if self.registered and now - self._lastHeard > self.missedBeats * self.heartbeat:
            log.warn("The broker at {backend} is silent; registering again", backend=self.backend)
            self.registered = False
        if self.registered or self.leaving:
            self._send(b"ping", {})
            delay = self.heartbeat
        else:
            self._hello()
            delay = self._retry
            self._retry = min(self._retry * 2, self.heartbeat)
        self._timer = self.reactor.callLater(delay, self._tick)

    def _hello(self) -> None:
        """
        Register with the node's whole snapshot: a big one in parts of L{SNAPSHOT_PART} rows
        (C{hello} with the first, then C{snapshot} messages), which the broker reads as they
        come instead of decoding one huge message in one turn.
        """
        rows = self.node.snapshot()
        parts = [rows[start:start + SNAPSHOT_PART] for start in range(SNAPSHOT_PART, len(rows), SNAPSHOT_PART)]
        body = {"node": self.node.name, "instance": self.instance, "devices": rows[:SNAPSHOT_PART]}
        if parts:
            body["parts"] = len(parts)
        self._helloSent = self._send(b"hello", body)
        for number, part in enumerate(parts, 1):
            self._helloSent = self._helloSent and self._send(b"snapshot", {"devices": part, "part": number})

    def _registerAgain(self) -> None:
        self.registered = False
        self._retry = self.firstRetry
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._tick()

    # -- from the broker

    def handle(self, message: Message) -> None:
        """Handle one decoded message from the broker."""
        if self.connection is None:
            return  # stopped
        self._lastHeard = self.reactor.seconds()
        kind, body = message.kind, message.body
        if kind == b"command":
            self.execute(body).addCallback(self._answer, message.rid, body["imei"])
        elif kind == b"pong":
            pass
        elif kind == b"drop":
            self.node.drop(body["imei"], body["conn"])
        elif kind == b"welcome":
            if not self._helloSent:
                return  # the welcome of a hello whose snapshot did not all go: the next hello's counts
            if not self.registered:
                log.info("Registered with the broker at {backend}", backend=self.backend)
            self.registered = True
            self.refused = None
            self.heartbeat = body["heartbeat"]
            self._retry = self.firstRetry
        elif kind == b"reset":
            if not self.leaving:  # a leaving node does not come back
                log.info("The broker does not know this node; registering again")
                self._registerAgain()
        elif kind == b"refused":
            if self.refused != body["error"]:
                log.error("The broker at {backend} refused this node: {error}", backend=self.backend, error=body["error"])
            self.refused = body["error"]
            self.registered = False
            self._retry = self.heartbeat  # it may be taken once the other node is gone
        else:
            throttled.warn("Dropped an unexpected {kind} from the broker", kind=kind)

    def execute(self, body: dict[str, Any]) -> "Deferred[Reply] | None":
        """
        Execute the broker's command C{body} on the node: its reply (None once this link
        is stopped: the command is dropped, as a message would be, and the broker's deadline
        answers it).
        """
        if self.connection is None:
            return None
        return self.node.execute(body["imei"], body["instruct"], body["data"], body["timeout"], body["wait"],
                                 body.get("request"))

    def _answer(self, reply: Reply, rid: bytes, imei: str) -> None:
        if self.connection is not None:
            self._send(b"result", {"imei": imei, "result": reply.result, "data": reply.data}, rid)
