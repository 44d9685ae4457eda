"""
The queue of commands for offline devices, on the broker's side: clients' requests about it,
and the delivery of a device's queued commands when it logs in (docs/operations.md).
"""

import hashlib
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from devicehub.broker.directory import Directory, NodeRecord
from devicehub.broker.store import DEFAULT_TTL, NotClaimed, Store, StoreFailed
from devicehub.broker.store.interface import ACKED, FAILED
from devicehub.common.results import NO, OK, QUEUED

log = Logger()

Reply = Callable[[bytes, bytes, dict[str, Any]], None]
Error = Callable[[bytes, bytes, str, str], None]
Route = Callable[[NodeRecord, dict[str, Any], Deferred], bool]


def queuedId(request: str) -> str:
    """
    The id of the command queued for a caller's request C{request} (a L{devicehub.client.Demand}
    with several brokers names each request): the same through every broker, so a request
    repeated to another broker queues no second command.
    """
    return hashlib.sha256(b"devicehub queued " + request.encode()).hexdigest()[:32]


class OfflineQueue:
    """
    Puts commands in the L{Store} and answers about them; delivers a device's
    due commands, oldest first and each acked before the next, when it comes online.
    """

    def __init__(
        self, clock, store: Store, directory: Directory, reply: Reply, error: Error, route: Route,
        count: Callable[[str], None], deliveryTimeout: float, publish: Callable[..., None] = lambda *event: None,
    ) -> None:
        """
        @param route: hands the broker's own command to a node, its result to the Deferred;
            False when the node cannot be reached.
        @param count: counts an answer in the metrics.
        @param deliveryTimeout: seconds a device has to ack a queued command delivered to it.
        @param publish: publishes a device's event (imei, node, type, data): a queued command's
            outcome (acked, expired, failed) is a C{command} event (CONTRACT §7).
        """
        self.clock = clock
        self.store = store
        self.directory = directory
        self.reply = reply
        self.error = error
        self.route = route
        self.count = count
        self.deliveryTimeout = deliveryTimeout
        self.publish = publish
        store.onExpired = self._expired
        self.deliveries: set[Deferred] = set()
        """Deliveries under way."""
        self.calls: set[Deferred] = set()
        """Clients' requests waiting for the store."""
        self._delivering: set[str] = set()
        self._deliverAgain: set[str] = set()

    # -- clients' requests

    def enqueue(self, client: bytes, rid: bytes, body: dict[str, Any], ttl: float | None, coalesce: bool) -> None:
        """Queue a command for an offline device; answer its id."""
        imei = body["imei"]
        request = body.get("request")
        id = queuedId(request) if isinstance(request, str) else None
        added = self.store.add(imei, body["instruct"], body["data"], DEFAULT_TTL if ttl is None else ttl, coalesce,
                               self.clock.seconds(), id)

        def queued(id: str) -> None:
            self.count(QUEUED)
            self.reply(client, rid, {"result": QUEUED, "id": id})
            if self.directory.owner(imei) is not None:  # it logged in while the store wrote
                self.online(imei)

        added.addCallbacks(queued, self._failed, errbackArgs=(client, rid))
        self._track(added)

    def status(self, client: bytes, rid: bytes, id: str) -> None:
        self._query(client, rid, self.store.get(id), lambda command: {"command": command})

    def waiting(self, client: bytes, rid: bytes, imei: str) -> None:
        self._query(client, rid, self.store.waiting(imei), lambda commands: {"commands": commands})

    def cancel(self, client: bytes, rid: bytes, id: str) -> None:
        self._query(client, rid, self.store.cancel(id, self.clock.seconds()), lambda command: {"command": command})

    def _query(self, client: bytes, rid: bytes, query: Deferred, answer) -> None:
        query.addCallbacks(lambda value: self.reply(client, rid, answer(value)), self._failed, errbackArgs=(client, rid))
        self._track(query)

    def _track(self, call: Deferred) -> None:
        self.calls.add(call)
        call.addBoth(lambda _: self.calls.discard(call))

    def _failed(self, failure, client: bytes, rid: bytes) -> None:
        log.failure("The command store failed", failure)
        error = str(failure.value) if failure.check(StoreFailed) else "the command store failed"
        self.error(client, rid, "store", error)

    # -- delivery

    def online(self, imei: str) -> None:
        """C{imei} came online: deliver what waits for it."""
        if not self.store.mayHaveWaiting(imei):
            return
        if imei in self._delivering:
            self._deliverAgain.add(imei)
            return
        delivery = Deferred.fromCoroutine(self._deliver(imei))
        self.deliveries.add(delivery)
        delivery.addBoth(lambda _: self.deliveries.discard(delivery))

    async def _deliver(self, imei: str) -> None:
        """
        Send C{imei} its queued commands; start over when it logged in again meanwhile
        (its new connection gets them).
        """
        self._delivering.add(imei)
        try:
            while True:
                self._deliverAgain.discard(imei)
                await self._deliverDue(imei)
                if imei not in self._deliverAgain:
                    return
        except Exception:
            log.failure("Delivering queued commands to {imei} failed", imei=imei)
        finally:
            self._delivering.discard(imei)

    async def _deliverDue(self, imei: str) -> None:
        """Deliver C{imei}'s due commands until one is not acked: the rest waits for its next login."""
        for command in await self.store.due(imei, self.clock.seconds()):
            owner = self.directory.owner(imei)
            if owner is None:
                return
            try:
                await self.store.sending(command["id"], self.clock.seconds())
            except NotClaimed:  # another broker delivers it (a shared store)
                return
            result, reply = await self._deliverOne(owner.node, command)
            # "invalid": the device's protocol cannot carry it, now or at any later login
            invalid = result == "invalid"
            after = await self.store.delivered(command["id"], result == OK, self.clock.seconds(), final=invalid,
                                               reply=reply if result == OK else None)
            if after is not None and after["state"] in (ACKED, FAILED):
                self._outcome(after, owner.node.name)
            if invalid:
                log.info("Queued command {id} for {imei} failed: its protocol cannot carry it", id=command["id"], imei=imei)
            elif result != OK:
                return

    def _outcome(self, command: dict[str, Any], node: str) -> None:
        data = {"id": command["id"], "instruct": command["instruct"], "state": command["state"],
                "reply": command.get("reply")}
        self.publish(command["imei"], node, "command", data)

    def _expired(self, commands: list[dict[str, Any]]) -> None:
        for command in commands:
            self._outcome(command, "")

    def _deliverOne(self, node: NodeRecord, command: dict[str, Any]) -> "Deferred[tuple[str, Any]]":
        body = {"imei": command["imei"], "instruct": command["instruct"], "data": command["data"],
                "timeout": self.deliveryTimeout, "wait": True}
        waiter: Deferred[tuple[str, Any]] = Deferred()
        if not self.route(node, body, waiter):
            waiter.callback((NO, None))
        return waiter
