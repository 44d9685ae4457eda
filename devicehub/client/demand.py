"""
L{Demand}: the Python client of the broker frontend (CONTRACT §3).

One DEALER socket per broker carries any number of calls at once, each matched to its
answer by a request id (L{devicehub.client.calls}). Every call has a deadline (its timeout
plus L{Demand.margin}); a call the broker does not answer by then fails with
L{BrokerUnavailable}. The socket only queues to a connected broker, so a call made while
the broker is down is never delivered late, after its caller was told it failed.
"""

import sys
from typing import Any, Callable, NamedTuple, Sequence

from twisted.internet.defer import Deferred, fail

from devicehub.client.calls import Calls
from devicehub.client.many import DEFAULT_INFLIGHT, Pace, each
from devicehub.common.addresses import addresses
from devicehub.common.errors import BrokerUnavailable, Busy, CommandStoreFailed, DevicehubError, RequestRejected
from devicehub.common.imei import is_valid_imei
from devicehub.common.limits import MAX_TIMEOUT, isSeconds
from devicehub.common.results import OK, QUEUED, RESULTS, Reply
from devicehub.wire.curve import clientKeys
from devicehub.wire.link import Attach

__all__ = ["Demand", "Page", "DevicehubError", "BrokerUnavailable", "Busy", "CommandStoreFailed", "RequestRejected"]

DEFAULT_TIMEOUT = 10.0


class Page(NamedTuple):
    """One page of the online devices, and how many are online in all."""

    total: int
    devices: list[str]


def _checkedTimeout(timeout: object, maximum: float = MAX_TIMEOUT, name: str = "timeout") -> float:
    if not isSeconds(timeout, maximum):
        raise ValueError(f"{name} must be seconds, 0 < {name} <= {maximum:g}, not {timeout!r}")
    return float(timeout)


class Demand:
    """
    Send commands to devices and query the directory through the broker at
    C{frontend}; C{timeout} is the default wait for a command's ack.
    Every method returns a L{Deferred}.
    """

    def __init__(
        self, frontend: "str | Sequence[str]", timeout: float = DEFAULT_TIMEOUT, *, reactor=None, clock=None,
        curve_keys=None, local: Attach | None = None,
    ) -> None:
        """
        @param frontend: the broker's frontend; or several brokers' (a comma list, or a
            list): the Demand uses one and moves to another when it stops answering, and
            no command is executed twice because it moved (L{devicehub.client.failover}).
        @param curve_keys: a key directory (C{devicehub keygen DIR}) when the broker
            requires CURVE: its C{client.key_secret} and C{broker.key} are used.
        @param local: a broker running in this process (the api role's C{connectClient}),
            to reach in-process instead of over ZeroMQ at the (first) frontend.
        """
        if reactor is None:
            from twisted.internet import reactor
        frontends = addresses(frontend) if isinstance(frontend, str) else tuple(frontend)
        if not frontends:
            raise ValueError(f"no broker frontend in {frontend!r}")
        self.frontend = ",".join(frontends)
        self.timeout = _checkedTimeout(timeout)
        self._clock = clock if clock is not None else reactor  # the calls' deadlines
        # Secrets are read only when a ZeroMQ link needs them.
        curve = None if curve_keys is None or (local is not None and len(frontends) == 1) else clientKeys(curve_keys)
        self._calls: Calls | None = Calls(reactor, self._clock, frontends, curve=curve, local=local)

    # -- the contract's calls

    def send(
        self, imei: str, instruct: str, data: Any = None, timeout: float | None = None, **queueing: Any
    ) -> "Deferred[str]":
        """
        Fires with OK (acked), NO (not online) or TIMEOUT (not acked in time).
        With C{queue=True} (and optional C{ttl} seconds, C{coalesce=True}), a device
        that is offline gets the command when it logs in: fires with QUEUED.
        """
        return self._command(imei, instruct, data, timeout, True, _result, **queueing)

    def request(
        self,
        imei: str,
        instruct: str,
        data: Any = None,
        timeout: float | None = None,
        *,
        queue: bool = False,
        ttl: float | None = None,
        coalesce: bool = False,
    ) -> "Deferred[Reply]":
        """Like L{send}, with the ack's C{data} (or the queued command's C{id}): fires with a L{Reply}."""
        return self._command(imei, instruct, data, timeout, True, _reply, queue=queue, ttl=ttl, coalesce=coalesce)

    def send_nowait(self, imei: str, instruct: str, data: Any = None, **queueing: Any) -> "Deferred[str]":
        """Fires with OK once the device's node has written the command, NO if not online (or QUEUED)."""
        return self._command(imei, instruct, data, None, False, _result, **queueing)

    def request_nowait(
        self, imei: str, instruct: str, data: Any = None, *, queue: bool = False, ttl: float | None = None,
        coalesce: bool = False,
    ) -> "Deferred[Reply]":
        """Like L{send_nowait}; fires with a L{Reply} (with the C{id} when queued)."""
        return self._command(imei, instruct, data, None, False, _reply, queue=queue, ttl=ttl, coalesce=coalesce)

    def send_many(
        self, imeis, instruct: str, data: Any = None, timeout: float | None = None, *,
        inflight: int = DEFAULT_INFLIGHT, queue: bool = False, onResult=None, pace: "Pace | None" = None,
    ) -> "Deferred[dict[str, str]]":
        """
        L{send} to every device of C{imeis}, at most C{inflight} unanswered at a time (so that
        other callers are not kept waiting); fires with a dict imei -> result (C{error} for a
        device whose command the broker refused or did not answer). C{onResult(outcome)} is
        called with each device's outcome (C{{"imei", "result", ...}}) as it comes; a
        L{devicehub.client.many.Pace} makes it yield to other callers when the hub is busy.
        """
        imeis = list(dict.fromkeys(imeis))
        bad = next((imei for imei in imeis if not isinstance(imei, str) or not is_valid_imei(imei)), None)
        if bad is not None:
            return fail(ValueError(f"invalid imei {bad!r}"))
        results: dict[str, str] = {}

        def answered(index: int, outcome: dict[str, Any]) -> None:
            results[outcome["imei"]] = outcome["result"]
            if onResult is not None:
                onResult(outcome)

        send = lambda imei: self.request(imei, instruct, data, timeout, queue=queue)  # noqa: E731
        return Deferred.fromCoroutine(each(imeis, send, answered, inflight, pace)).addCallback(lambda _: results)

    def status(self, id: str, *, timeout: float | None = None) -> "Deferred[dict[str, Any] | None]":
        """Fires with a queued command's record (C{state}: queued, sent, acked, …), or None."""
        return self._query(b"status", {"id": id}, timeout).addCallback(_field, "command")

    def queued(self, imei: str, *, timeout: float | None = None) -> "Deferred[list[dict[str, Any]]]":
        """Fires with the commands waiting for C{imei}, oldest first."""
        return self._query(b"queue", {"imei": imei}, timeout).addCallback(_field, "commands")

    def cancel(self, id: str, *, timeout: float | None = None) -> "Deferred[dict[str, Any] | None]":
        """Cancel a queued command; fires with its record afterwards (None if unknown)."""
        return self._query(b"cancel", {"id": id}, timeout).addCallback(_field, "command")

    def find(self, imei: str, *, timeout: float | None = None) -> "Deferred[str]":
        """Fires with OK when the device is online, NO when not."""
        if not is_valid_imei(imei):
            return fail(ValueError(f"invalid imei {imei!r}"))
        return self._query(b"find", {"imei": imei}, timeout).addCallback(_result)

    def locate(self, imei: str, *, timeout: float | None = None) -> "Deferred[dict[str, Any]]":
        """
        Fires with C{{"online": False}}, or C{{"online": True, "node", "protocol", "since"}}:
        the node holding the device, its protocol and when it logged in (seconds since the epoch).
        """
        if not is_valid_imei(imei):
            return fail(ValueError(f"invalid imei {imei!r}"))
        return self._query(b"locate", {"imei": imei}, timeout).addCallback(_located)

    def getlist(self, num: int, page: int = 0, *, timeout: float | None = None) -> "Deferred[list[str]]":
        """Fires with page C{page} (0 first) of C{num} online imeis, sorted, across all nodes."""
        return self.getpage(num, page, timeout=timeout).addCallback(lambda found: found.devices)

    def getpage(self, num: int, page: int = 0, *, timeout: float | None = None) -> "Deferred[Page]":
        """Like L{getlist}, with the total from the same directory state: fires with a L{Page}."""
        for name, value in (("num", num), ("page", page)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return fail(ValueError(f"{name} must be a whole number >= 0, not {value!r}"))
        answer = self._query(b"list", {"num": num, "page": page}, timeout)
        return answer.addCallback(lambda body: Page(_field(body, "total"), _field(body, "devices")))

    def gettotal(self, *, timeout: float | None = None) -> "Deferred[int]":
        """Fires with the number of online devices across all nodes."""
        return self._query(b"total", {}, timeout).addCallback(_field, "total")

    def health(self, *, timeout: float | None = None) -> "Deferred[dict[str, Any]]":
        """
        Fires with C{{"nodes": K, "devices": T, "store": S}} as the broker sees them;
        S is C{"ok"}, C{"failing"} (the queue's database) or C{"none"} (no queue).
        """
        answer = self._query(b"health", {}, timeout)
        return answer.addCallback(self._health)

    def _health(self, body: dict[str, Any]) -> dict[str, Any]:
        health = {"nodes": _field(body, "nodes"), "devices": _field(body, "total"), "store": body.get("store", "none")}
        if self._calls is not None and self._calls.brokers.several:
            health["brokers"] = self._calls.brokers.states()
        return health

    def nodes(self, *, timeout: float | None = None) -> "Deferred[dict[str, int]]":
        """Fires with the devices online on each node, by node name."""
        return self._query(b"cluster", {}, timeout).addCallback(_field, "perNode")

    def close(self) -> None:
        """Release the socket; calls still waiting fail with L{BrokerUnavailable}."""
        if self._calls is not None:
            calls, self._calls = self._calls, None
            calls.close()

    @property
    def margin(self) -> float:
        """Seconds past a call's timeout before it fails with L{BrokerUnavailable}."""
        return Calls.margin if self._calls is None else self._calls.margin

    @margin.setter
    def margin(self, seconds: float) -> None:
        self._calls.margin = seconds

    # -- plumbing

    def _command(
        self, imei: str, instruct: str, data: Any, timeout: float | None, wait: bool,
        convert: Callable[[dict[str, Any]], Any], *,
        queue: bool = False, ttl: float | None = None, coalesce: bool = False,
    ) -> "Deferred[Any]":
        """
        A C{send} request; fires with C{convert} of the broker's answer. C{timeout} is the
        wait for the ack (with C{wait}).
        """
        try:
            seconds = self.timeout if timeout is None else _checkedTimeout(timeout)
            if not is_valid_imei(imei):
                raise ValueError(f"invalid imei {imei!r}")
            if not isinstance(instruct, str):
                raise ValueError(f"instruct must be a string, not {instruct!r}")
            body = {"imei": imei, "instruct": instruct, "data": data, "timeout": seconds, "wait": wait}
            if queue:
                body.update(queue=True, coalesce=bool(coalesce))
                if ttl is not None:
                    body["ttl"] = _checkedTimeout(ttl, sys.float_info.max, "ttl")
        except ValueError as e:
            return fail(e)
        return self._call(b"send", body, seconds, convert)

    def _query(self, kind: bytes, body: dict[str, Any], timeout: float | None) -> "Deferred[dict[str, Any]]":
        try:
            wait = self.timeout if timeout is None else _checkedTimeout(timeout)
        except ValueError as e:
            return fail(e)
        return self._call(kind, body, wait)

    def _call(
        self, kind: bytes, body: dict[str, Any], wait: float, convert: Callable[[dict[str, Any]], Any] | None = None
    ) -> "Deferred[Any]":
        if self._calls is None:
            return fail(BrokerUnavailable("the Demand is closed"))
        return self._calls.call(kind, body, wait, convert)


def _field(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise BrokerUnavailable(f"the broker's answer lacks {name!r}")
    return body[name]


def _result(body: dict[str, Any]) -> str:
    result = _field(body, "result")
    if result not in RESULTS and result != QUEUED:
        raise BrokerUnavailable(f"the broker answered an unknown result {result!r}")
    return result


def _located(body: dict[str, Any]) -> dict[str, Any]:
    if _result(body) != OK:
        return {"online": False}
    return {"online": True, "node": body.get("node"), "protocol": body.get("protocol"), "since": body.get("since")}


def _reply(body: dict[str, Any]) -> Reply:
    return Reply(_result(body), body.get("data"), body.get("id"))
