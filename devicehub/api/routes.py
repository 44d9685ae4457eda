"""
The HTTP routes of CONTRACT §4 (L{DeviceAPI}, a Klein app over a L{Demand}) and the
fast path that serves C{POST /devices/{imei}/commands} without Klein.

Every answer, errors included, is JSON. Device outcomes map to 200/202 (ok),
404 (no) and 504 (timeout); bad input to 400; a broker that does not answer to 503.
"""

from collections.abc import Coroutine
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from werkzeug.exceptions import HTTPException

from devicehub.api.jobbody import jobRequest
from devicehub.api.jobs import Jobs, TooManyJobs
from devicehub.api.jobstream import streamJob
from devicehub.api.jsonio import MAX_JOB_BODY, BadInput, boolField, checkedImei, intArg, jsonBody, respond, secondsField
from devicehub.api.openapi import openapi
from devicehub.client.demand import Demand
from devicehub.client.many import DEFAULT_INFLIGHT
from devicehub.common.errors import BrokerUnavailable, Busy, CommandStoreFailed, RequestRejected
from devicehub.common.imei import is_valid_imei
from devicehub.common.limits import MAX_NUM, MAX_TIMEOUT, MAX_TTL
from devicehub.common.metrics import CONTENT_TYPE_LATEST, Metrics
from devicehub.common.results import NO, OK, QUEUED, TIMEOUT

log = Logger()

# The fields of a command's body: any other is refused (a typo must not go unnoticed).
COMMAND_FIELDS = frozenset({"instruct", "data", "wait", "timeout", "queue", "ttl", "coalesce"})
# Seconds a directory query (list, presence, health) waits for the broker.
QUERY_TIMEOUT = 2.0

_WAIT_STATUS = {OK: 200, NO: 404, TIMEOUT: 504}


class DeviceAPI:
    """The HTTP routes; C{demand} reaches the broker."""

    app = Klein()

    def __init__(
        self,
        demand: Demand | None,
        commandTimeout: float,
        metrics: Metrics,
        queryTimeout: float = QUERY_TIMEOUT,
        clock=None,
        jobInflight: int = DEFAULT_INFLIGHT,
    ) -> None:
        """@param jobInflight: the commands a job keeps in flight (C{--job-inflight})."""
        if clock is None:
            from twisted.internet import reactor as clock
        self.demand = demand
        self.commandTimeout = commandTimeout
        self.queryTimeout = queryTimeout
        self.metrics = metrics
        self.jobs = Jobs(clock, lambda: self.demand, jobInflight)

    @app.route("/devices", methods=["GET"])
    async def listDevices(self, request) -> bytes:
        num = intArg(request, "num", 50, MAX_NUM)
        page = intArg(request, "page", 0, None)
        found = await self.demand.getpage(num, page, timeout=self.queryTimeout)
        return respond(request, 200, {"total": found.total, "num": num, "page": page, "devices": found.devices})

    @app.route("/devices/<imei>", methods=["GET"])
    async def findDevice(self, request, imei: str) -> bytes:
        result = await self.demand.find(checkedImei(imei), timeout=self.queryTimeout)
        online = result == OK
        return respond(request, 200 if online else 404, {"imei": imei, "online": online})

    @app.route("/devices/<imei>/session", methods=["GET"])
    async def deviceSession(self, request, imei: str) -> bytes:
        found = await self.demand.locate(checkedImei(imei), timeout=self.queryTimeout)
        return respond(request, 200 if found["online"] else 404, {"imei": imei, **found})

    @app.route("/devices/<imei>/commands", methods=["POST"])
    async def postCommand(self, request, imei: str) -> bytes:
        checkedImei(imei)
        body = jsonBody(request)
        unknown = body.keys() - COMMAND_FIELDS
        if unknown:
            raise BadInput(f"unknown field {min(unknown)!r} (known: {', '.join(sorted(COMMAND_FIELDS))})")
        instruct = body.get("instruct")
        if not isinstance(instruct, str) or not instruct:
            raise BadInput("instruct must be a non-empty string")
        wait = boolField(body, "wait", True)
        timeout = secondsField(body, "timeout", MAX_TIMEOUT)
        queueing = {
            "queue": boolField(body, "queue", False),
            "ttl": secondsField(body, "ttl", MAX_TTL),
            "coalesce": boolField(body, "coalesce", False),
        }
        data = body.get("data")
        if wait:
            reply = await self.demand.request(imei, instruct, data, timeout or self.commandTimeout, **queueing)
        else:
            reply = await self.demand.request_nowait(imei, instruct, data, **queueing)
        if reply.result == QUEUED:
            return respond(request, 202, {"result": QUEUED, "id": reply.id})
        if not wait:
            return respond(request, 202 if reply.result == OK else 404, {"result": reply.result})
        answer: dict[str, Any] = {"result": reply.result}
        if reply.result == OK:
            answer["reply"] = reply.data
        return respond(request, _WAIT_STATUS[reply.result], answer)

    @app.route("/devices/<imei>/queue", methods=["GET"])
    async def deviceQueue(self, request, imei: str) -> bytes:
        commands = await self.demand.queued(checkedImei(imei), timeout=self.queryTimeout)
        return respond(request, 200, {"imei": imei, "commands": commands})

    @app.route("/commands/<id>", methods=["GET"])
    async def commandStatus(self, request, id: str) -> bytes:
        command = await self.demand.status(id, timeout=self.queryTimeout)
        if command is None:
            return respond(request, 404, {"error": "no such command"})
        return respond(request, 200, command)

    @app.route("/commands/<id>", methods=["DELETE"])
    async def cancelCommand(self, request, id: str) -> bytes:
        # The broker answers a command's record after the attempt, "cancelled" whether this
        # call cancelled it or an earlier one did: only its state before tells them apart.
        command = await self.demand.status(id, timeout=self.queryTimeout)
        if command is not None and command["state"] == "queued":
            command = await self.demand.cancel(id, timeout=self.queryTimeout)
            if command is not None and command["state"] == "cancelled":
                return respond(request, 200, command)
        if command is None:
            return respond(request, 404, {"error": "no such command"})
        return respond(request, 409, {"error": f"the command is {command['state']}, not queued", "command": command})

    @app.route("/health", methods=["GET"])
    async def health(self, request) -> bytes:
        state = await self.demand.health(timeout=self.queryTimeout)
        if state["store"] == "failing":
            return respond(request, 503, {"status": "store failing", "error": "the command store failed", **state})
        return respond(request, 200, {"status": "ok", **state})

    @app.route("/commands", methods=["POST"])
    async def postJob(self, request) -> bytes:
        targets, command = jobRequest(jsonBody(request, MAX_JOB_BODY), self.commandTimeout)
        try:
            job = await self.jobs.start(targets, command, self.queryTimeout)
        except TooManyJobs as e:
            return respond(request, 429, {"error": str(e)})
        except ValueError as e:
            raise BadInput(str(e)) from None
        request.setHeader(b"Location", f"/jobs/{job.id}".encode())
        return respond(request, 202, {"id": job.id, "devices": len(job.imeis)})

    @app.route("/jobs/<id>", methods=["GET"])
    def getJob(self, request, id: str) -> bytes:
        job = self._job(id)
        body = job.summary()
        if b"num" in request.args or b"page" in request.args:
            num, page = intArg(request, "num", 50, MAX_NUM), intArg(request, "page", 0, None)
            body.update(num=num, page=page, outcomes=job.page(num, page))
        return respond(request, 200, body)

    @app.route("/jobs/<id>/events", methods=["GET"])
    def jobEvents(self, request, id: str):
        return streamJob(request, self._job(id))

    def _job(self, id: str):
        job = self.jobs.get(id)
        if job is None:
            raise BadInput("no such job", 404)
        return job

    @app.route("/cluster", methods=["GET"])
    async def cluster(self, request) -> bytes:
        state = await self.demand.health(timeout=self.queryTimeout)
        body = {"nodes": await self.demand.nodes(timeout=self.queryTimeout), "devices": state["devices"],
                "store": state["store"]}
        if "brokers" in state:
            body["brokers"] = state["brokers"]
        return respond(request, 200, body)

    @app.route("/metrics", methods=["GET"])
    def metricsText(self, request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return self.metrics.exposition()

    @app.route("/openapi.json", methods=["GET"])
    def openapiDocument(self, request) -> bytes:
        return respond(request, 200, openapi())

    @app.handle_errors(Exception)
    def error(self, request, failure) -> bytes:
        """The JSON answer to a failed request, whichever route it took."""
        error = failure.value
        if isinstance(error, BadInput):
            return respond(request, error.status, {"error": str(error)})
        if isinstance(error, CommandStoreFailed):
            return respond(request, 503, {"error": str(error)})
        if isinstance(error, BrokerUnavailable):
            return respond(request, 503, {"error": f"broker unavailable: {error}"})
        if isinstance(error, RequestRejected):
            return respond(request, 400, {"error": str(error)})
        if isinstance(error, Busy):
            return respond(request, 429, {"error": str(error)})
        if isinstance(error, HTTPException):
            if error.code == 405 and error.valid_methods:
                request.setHeader(b"Allow", ", ".join(error.valid_methods).encode())
            return respond(request, error.code, {"error": error.name.lower()})
        log.failure("Unexpected error answering {method} {uri}", failure, method=request.method, uri=request.uri)
        return respond(request, 500, {"error": "internal error"})

    def resource(self) -> Resource:
        """The routes as a Twisted Web resource."""
        return _Routes(self)


class _Routes(Resource):
    """
    Klein's resource for L{DeviceAPI}, except that C{POST /devices/{imei}/commands},
    the route that carries the load, is called directly: Klein's own work for each
    request (binding its URL map to the request's host, adapting the request, two
    C{maybeDeferred}s) was a third of the hub's CPU per HTTP command (see
    docs/performance.md). Both ways give the same answers (tests/test_api_routes.py).
    """

    isLeaf = True

    def __init__(self, api: DeviceAPI) -> None:
        super().__init__()
        self.api = api
        self.klein = api.app.resource()

    def render(self, request):
        path = request.postpath  # its segments, percent-decoded
        if request.method == b"POST" and len(path) == 3 and path[0] == b"devices" and path[2] == b"commands":
            imei = path[1].decode("latin-1")
            if is_valid_imei(imei):  # anything else takes Klein's way, to the same answer
                return self._answer(request, self.api.postCommand(request, imei))
        return self.klein.render(request)

    def _answer(self, request, handler: Coroutine[Any, Any, bytes]) -> int:
        """Run a route's coroutine as Klein would: its bytes or its error as the response."""
        answer = Deferred.fromCoroutine(handler)
        gone = False

        def clientGone(failure) -> None:
            nonlocal gone
            gone = True
            answer.cancel()

        def respond(body: bytes) -> None:
            if not gone:
                request.write(body)
                request.finish()

        request.notifyFinish().addErrback(clientGone)
        answer.addErrback(lambda failure: b"" if gone else self.api.error(request, failure))
        answer.addCallback(respond)
        return NOT_DONE_YET

