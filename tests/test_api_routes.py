"""
The API's own dispatch of C{POST /devices/{imei}/commands} (it bypasses Klein
for speed) answers byte for byte as Klein's route does, and lets go of a call
whose HTTP client has gone, as Klein does.
"""

import gc
import json
import re
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from devicehub.api import routes as api_module
from devicehub.api.root import ApiRoot
from devicehub.api.routes import DeviceAPI
from devicehub.api.site import ApiSite
from devicehub.common.errors import BrokerUnavailable, Busy, RequestRejected
from devicehub.common.metrics import Metrics
from devicehub.common.results import NO, OK, QUEUED, TIMEOUT, Reply

OUTCOMES = {
    "ok": Reply(OK, {"battery": 77}),
    "no": Reply(NO),
    "timeout": Reply(TIMEOUT),
    "queued": Reply(QUEUED, id="c1"),
}
ERRORS = {
    "busy": Busy("too many calls in flight"),
    "down": BrokerUnavailable("no answer from the broker"),
    "rejected": RequestRejected("bad ttl"),
    "bug": RuntimeError("a bug"),
}


class FakeDemand:
    """Answers a command at once by its instruct, an outcome or an error; C{"hang"} is never answered."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.hanging: list[Deferred] = []
        self.cancelled: list[Deferred] = []

    def request(self, imei, instruct, data=None, timeout=None, **queueing):
        self.calls.append(("request", imei, instruct, data, timeout, queueing))
        return self._answer(instruct)

    def request_nowait(self, imei, instruct, data=None, **queueing):
        self.calls.append(("request_nowait", imei, instruct, data, queueing))
        return self._answer(instruct)

    def _answer(self, instruct):
        if instruct == "hang":
            self.hanging.append(Deferred(self.cancelled.append))
            return self.hanging[-1]
        if instruct in ERRORS:
            return fail(ERRORS[instruct])
        return succeed(OUTCOMES.get(instruct, Reply(OK)))


def klein(api: DeviceAPI):
    return api.app.resource()


ROUTES = {"fast": DeviceAPI.resource, "klein": klein}


class Exchange:
    """
    One HTTP connection, in memory, to a fresh API whose routes are C{routes(api)};
    what C{devicehub.api.routes} logs meanwhile is kept in C{logged}.
    """

    def __init__(self, routes) -> None:
        self.logged: list[dict] = []
        self.api = DeviceAPI(FakeDemand(), commandTimeout=5.0, metrics=Metrics())
        self.root = ApiRoot(routes(self.api))
        self.channel = ApiSite(self.root, reactor=Clock()).buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def send(self, raw: bytes) -> bytes:
        """What the API writes back for C{raw} (its C{Date} header left out)."""
        with self.logging():
            self.channel.dataReceived(raw)
        return re.sub(rb"\r\nDate: [^\r]*", b"", self.transport.value())

    def hangUp(self) -> None:
        with self.logging():
            self.channel.connectionLost(Failure(ConnectionDone()))
            gc.collect()  # an unhandled error in a Deferred would be logged now

    @contextmanager
    def logging(self):
        observer, api_module.log.observer = api_module.log.observer, self.logged.append
        try:
            yield
        finally:
            api_module.log.observer = observer


def post(path: bytes, body: bytes, method: bytes = b"POST") -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: hub\r\nContent-Length: %d\r\n\r\n%s" % (method, path, len(body), body)


def answerBoth(raw: bytes) -> list:
    """The response, Demand calls and log lines of each kind of routes for C{raw}."""
    seen = []
    for routes in ROUTES.values():
        exchange = Exchange(routes)
        response = exchange.send(raw)
        exchange.hangUp()
        seen.append((response, exchange.api.demand.calls, [event["log_format"] for event in exchange.logged]))
    return seen


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
command_fields = st.fixed_dictionaries(
    {},
    optional={
        "instruct": st.sampled_from([*OUTCOMES, *ERRORS, "0x10"]) | json_values,
        "data": json_values,
        "wait": st.booleans() | json_values,
        "timeout": st.sampled_from([0.2, 5, 300, 301, 0, -1, "5", True]) | json_values,
        "queue": st.booleans() | json_values,
        "ttl": st.sampled_from([1, 60.5, 0, 1e9]) | json_values,
        "coalesce": st.booleans() | json_values,
        "queu": json_values,  # not a field: refused
    },
)
bodies = command_fields.map(lambda fields: json.dumps(fields).encode()) | st.binary(max_size=20)
imeis = st.sampled_from(
    [b"861234567890123", b"a.b_c:d-e", b"x" * 64, b"x" * 65, b"%38%36", b"a%2Fb", b"bad%20imei", b"", b"caf%C3%A9", b"%ff"]
) | st.text("0123456789AZaz._:-/%", max_size=8).map(str.encode)
paths = st.builds(
    lambda imei, tail, query: b"/devices/" + imei + tail + query,
    imeis,
    st.sampled_from([b"/commands", b"/commands/", b"/command"]),
    st.sampled_from([b"", b"?wait=false"]),
)


@given(path=paths, body=bodies, method=st.sampled_from([b"POST", b"POST", b"POST", b"GET", b"PUT"]))
def test_the_command_route_answers_as_kleins_route_does(path, body, method):
    fast, viaKlein = answerBoth(post(path, body, method))
    assert fast == viaKlein
    assert fast[0].startswith(b"HTTP/1.1 ")


@pytest.mark.parametrize("instruct", [*OUTCOMES, *ERRORS])
def test_every_outcome_and_error_has_the_same_answer_both_ways(instruct):
    body = json.dumps({"instruct": instruct, "data": [1], "timeout": 2, "queue": instruct == "queued"}).encode()
    fast, viaKlein = answerBoth(post(b"/devices/861234567890123/commands", body))
    assert fast == viaKlein
    expected = {"ok": 200, "no": 404, "timeout": 504, "queued": 202, "busy": 429, "down": 503, "rejected": 400, "bug": 500}
    assert fast[0].startswith(b"HTTP/1.1 %d " % expected[instruct])
    assert fast[1] == [("request", "861234567890123", instruct, [1], 2.0, {"queue": instruct == "queued", "ttl": None, "coalesce": False})]
    assert fast[2] == (["Unexpected error answering {method} {uri}"] if instruct == "bug" else [])


@pytest.mark.parametrize("routes", ROUTES)
def test_a_client_gone_while_it_waits_cancels_the_call_and_nothing_is_written(routes):
    exchange = Exchange(ROUTES[routes])
    assert exchange.send(post(b"/devices/861234567890123/commands", b'{"instruct": "hang"}')) == b""
    [call] = exchange.api.demand.hanging
    assert exchange.api.demand.cancelled == [] and exchange.root.inflight == 1
    exchange.hangUp()
    assert exchange.api.demand.cancelled == [call]
    assert exchange.transport.value() == b"" and exchange.root.inflight == 0
    assert exchange.logged == []
