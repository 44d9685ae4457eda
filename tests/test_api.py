"""The HTTP API over real HTTP, against a real hub with devices over real TCP."""

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from .support import Hub, eventually, online


@pytest_twisted.async_yield_fixture(params=[False, True], ids=["zeromq", "pipes"])
async def hub(request):
    """Node and API reach the broker over ZeroMQ, or in-process (as roles in one twistd do)."""
    hub = await Hub(commandTimeout=3.0, pipes=request.param).start()
    yield hub
    await hub.stop()




async def call(http, hub, method, path, body=None, raw=None):
    """Status and decoded JSON body of one request; every answer must be JSON."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    response = await http.request(method, hub.url + path, data=data)
    assert response.headers.getRawHeaders("content-type") == ["application/json"], path
    return response.code, json.loads(await response.content())


@pytest_twisted.ensureDeferred
async def test_list_devices_with_paging(hub, http):
    devices = [await online(hub, f"dev{i:02}") for i in reversed(range(12))]
    assert await call(http, hub, "GET", "/devices") == (
        200,
        {"total": 12, "num": 50, "page": 0, "devices": [f"dev{i:02}" for i in range(12)]},
    )
    assert await call(http, hub, "GET", "/devices?num=5&page=2") == (
        200,
        {"total": 12, "num": 5, "page": 2, "devices": ["dev10", "dev11"]},
    )
    assert await call(http, hub, "GET", "/devices?num=0") == (200, {"total": 12, "num": 0, "page": 0, "devices": []})
    for query in ["num=1001", "num=-1", "num=abc", "page=-1", "page=1.5", "num=%ff"]:
        code, body = await call(http, hub, "GET", f"/devices?{query}")
        assert code == 400 and body["error"], query
    for device in devices:
        await device.close()


@pytest_twisted.ensureDeferred
async def test_device_presence(hub, http):
    device = await online(hub, "861234567890123")
    assert await call(http, hub, "GET", "/devices/861234567890123") == (
        200,
        {"imei": "861234567890123", "online": True},
    )
    assert await call(http, hub, "GET", "/devices/000") == (404, {"imei": "000", "online": False})
    code, body = await call(http, hub, "GET", "/devices/not%20valid")
    assert code == 400 and body["error"]
    await device.close()


@pytest_twisted.ensureDeferred
async def test_a_devices_session_and_the_cluster(hub, http):
    """For the console (CONTRACT §7): where a device is connected, and the devices of each node."""
    device = await online(hub, "861234567890123")
    code, body = await call(http, hub, "GET", "/devices/861234567890123/session")
    since = hub.node.node.devices["861234567890123"].since
    assert (code, body) == (200, {"imei": "861234567890123", "online": True, "node": "node-1", "protocol": "jsonl",
                                  "since": since})
    assert await call(http, hub, "GET", "/devices/000/session") == (404, {"imei": "000", "online": False})
    await hub.addNode("node-2")
    assert await call(http, hub, "GET", "/cluster") == (
        200, {"nodes": {"node-1": 1, "node-2": 0}, "devices": 1, "store": "none"}
    )
    await device.close()


@pytest_twisted.ensureDeferred
async def test_commands_and_their_status_codes(hub, http):
    device = await online(hub, "acker", reply={"battery": 77})
    silent = await online(hub, "mute", silent=True)
    path = "/devices/acker/commands"
    assert await call(http, hub, "POST", path, {"instruct": "0x10", "data": {"a": 1}}) == (
        200,
        {"result": "ok", "reply": {"battery": 77}},
    )
    assert device.commands[-1]["instruct"] == "0x10" and device.commands[-1]["data"] == {"a": 1}
    # strings with lone surrogates (legal JSON escapes) reach the device intact
    assert await call(http, hub, "POST", path, raw=b'{"instruct":"\\udcad","data":["\\ud800"]}') == (
        200,
        {"result": "ok", "reply": {"battery": 77}},
    )
    assert device.commands[-1]["instruct"] == "\udcad" and device.commands[-1]["data"] == ["\ud800"]
    assert await call(http, hub, "POST", path, {"instruct": "0x11", "wait": False}) == (202, {"result": "ok"})
    await eventually(lambda: len(device.commands) == 3)
    assert await call(http, hub, "POST", "/devices/ghost/commands", {"instruct": "0x10"}) == (404, {"result": "no"})
    assert await call(http, hub, "POST", "/devices/ghost/commands", {"instruct": "0x10", "wait": False}) == (
        404,
        {"result": "no"},
    )
    started = reactor.seconds()
    assert await call(http, hub, "POST", "/devices/mute/commands", {"instruct": "0x10", "timeout": 0.3}) == (
        504,
        {"result": "timeout"},
    )
    assert reactor.seconds() - started < 1.5
    await device.close()
    await silent.close()


@pytest_twisted.ensureDeferred
async def test_default_timeout_is_the_hubs_command_timeout(hub, http):
    silent = await online(hub, "mute", silent=True)
    started = reactor.seconds()
    assert await call(http, hub, "POST", "/devices/mute/commands", {"instruct": "0x10"}) == (504, {"result": "timeout"})
    assert 3.0 <= reactor.seconds() - started < 4.0
    await silent.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[1, 2]",
        b'"text"',
        b"",
        b"{}",
        b'{"instruct": 16}',
        b'{"instruct": null}',
        b'{"instruct": "x", "wait": "yes"}',
        b'{"instruct": "x", "timeout": 0}',
        b'{"instruct": "x", "timeout": 301}',
        b'{"instruct": "x", "timeout": "5"}',
        b'{"instruct": "x", "timeout": true}',
        b'{"instruct": "x", "timeout": NaN}',
        b"\xff\xfe",
        b"[" * 50000,
        b'{"instruct": ""}',
        b'{"instruct": "x", "queu": true}',
        b'{"instruct": "x", "Wait": false}',
        b'{"instruct": "x", "data": 1, "extra": null}',
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_command_bodies_are_400(hub, http, raw):
    device = await online(hub, "abc")
    code, body = await call(http, hub, "POST", "/devices/abc/commands", raw=raw)
    assert code == 400 and isinstance(body["error"], str)
    await device.close()
    assert device.commands == []


@pytest_twisted.ensureDeferred
async def test_an_unknown_field_is_named_in_the_error(hub, http):
    code, body = await call(http, hub, "POST", "/devices/abc/commands", {"instruct": "x", "queu": True})
    assert code == 400 and body["error"].startswith("unknown field 'queu' (known: coalesce, data, instruct,")


@pytest_twisted.ensureDeferred
async def test_unknown_paths_wrong_methods_and_bad_urls(hub, http):
    for method, path, code in [
        ("GET", "/nothing", 404),
        ("GET", "/devices/", 404),
        ("GET", "/devices/a/b/c", 404),
        ("DELETE", "/devices", 405),
        ("POST", "/devices/abc", 405),
        ("GET", "/devices/abc/commands", 405),
        ("PUT", "/health", 405),
        ("GET", "/devices/%ff", 400),
        ("POST", "/devices/%ff%fe/commands", 400),
    ]:
        status, body = await call(http, hub, method, path)
        assert (status, bool(body["error"])) == (code, True), (method, path)


@pytest_twisted.ensureDeferred
async def test_device_disconnecting_while_caller_waits(hub, http):
    silent = await online(hub, "leaver", silent=True)
    started = reactor.seconds()
    waiting = ensureDeferred(call(http, hub, "POST", "/devices/leaver/commands", {"instruct": "0x10", "timeout": 60}))
    await eventually(lambda: silent.commands)
    await silent.close()
    assert await waiting == (504, {"result": "timeout"})
    assert reactor.seconds() - started < 2


@pytest_twisted.ensureDeferred
async def test_a_client_hanging_up_while_it_waits_lets_go_of_the_call(hub, http):
    silent = await online(hub, "mute", silent=True)
    demand = hub.api.api.demand
    body = b'{"instruct": "0x10", "timeout": 60}'
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", hub.api.listener.port.getHost().port)
    client = await connectProtocol(endpoint, Protocol())
    client.transport.write(b"POST /devices/mute/commands HTTP/1.1\r\nHost: hub\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await eventually(lambda: silent.commands and demand._calls.pending and hub.api.root.inflight == 1)
    client.transport.loseConnection()
    await eventually(lambda: not demand._calls.pending and hub.api.root.inflight == 0)
    assert await call(http, hub, "POST", "/devices/mute/commands", {"instruct": "0x11", "timeout": 0.2}) == (
        504,
        {"result": "timeout"},
    )
    await silent.close()


@pytest_twisted.ensureDeferred
async def test_two_hundred_concurrent_requests_each_get_their_own_reply(hub, http):
    imeis = [f"c{i:03}" for i in range(200)]
    devices = [await online(hub, imei, reply=lambda command, imei=imei: {"me": imei, "n": command["data"]}) for imei in imeis]
    answers = await gatherResults(
        [
            ensureDeferred(call(http, hub, "POST", f"/devices/{imei}/commands", {"instruct": "0x10", "data": n}))
            for n, imei in enumerate(imeis)
        ]
    )
    assert answers == [(200, {"result": "ok", "reply": {"me": imei, "n": n}}) for n, imei in enumerate(imeis)]
    for device in devices:
        await device.close()


@pytest_twisted.ensureDeferred
async def test_health_and_broker_down_is_503_not_504(hub, http):
    device = await online(hub, "dev1")
    assert await call(http, hub, "GET", "/health") == (200, {"status": "ok", "nodes": 1, "devices": 1, "store": "none"})
    hub.api.api.queryTimeout = 0.2
    hub.api.api.demand.margin = 0.2
    await hub.node.stopService()
    await hub.broker.stopService()
    await device.closed
    for method, path, body in [
        ("GET", "/health", None),
        ("GET", "/devices", None),
        ("GET", "/devices/dev1", None),
        ("POST", "/devices/dev1/commands", {"instruct": "x", "timeout": 0.2}),
        ("POST", "/devices/dev1/commands", {"instruct": "x", "wait": False}),
    ]:
        hub.api.api.demand.timeout = 0.2  # the wait=false path uses the Demand's default
        code, answer = await call(http, hub, method, path, body)
        assert code == 503 and "broker" in answer["error"], path


@pytest_twisted.ensureDeferred
async def test_openapi_document_lists_every_route(hub, http):
    code, document = await call(http, hub, "GET", "/openapi.json")
    assert code == 200 and document["openapi"].startswith("3.")
    assert document["paths"].keys() == {
        "/devices",
        "/devices/{imei}",
        "/devices/{imei}/commands",
        "/devices/{imei}/queue",
        "/devices/{imei}/session",
        "/commands/{id}",
        "/commands",
        "/jobs/{id}",
        "/jobs/{id}/events",
        "/cluster",
        "/health",
        "/events",
        "/metrics",
        "/openapi.json",
    }
    responses = document["paths"]["/devices/{imei}/commands"]["post"]["responses"]
    assert {"200", "202", "400", "404", "408", "413", "503", "504"} <= responses.keys()
    command = document["components"]["schemas"]["Command"]
    assert command["additionalProperties"] is False and command["properties"]["instruct"]["minLength"] == 1
    assert {"200", "404", "409"} <= document["paths"]["/commands/{id}"]["delete"]["responses"].keys()


@pytest_twisted.ensureDeferred
async def test_cancelling_a_command_twice_is_200_then_409(tmp_path, http):
    hub = await Hub(brokerOptions={"store": str(tmp_path / "q.sqlite3")}).start()
    try:
        code, queued = await call(http, hub, "POST", "/devices/away/commands", {"instruct": "0x10", "queue": True})
        assert code == 202 and queued["result"] == "queued"
        path = f"/commands/{queued['id']}"
        code, cancelled = await call(http, hub, "DELETE", path)
        assert code == 200 and cancelled["state"] == "cancelled"
        code, again = await call(http, hub, "DELETE", path)
        assert code == 409 and again == {"error": "the command is cancelled, not queued", "command": cancelled}
        assert await call(http, hub, "DELETE", "/commands/nonexistent") == (404, {"error": "no such command"})
    finally:
        await hub.stop()


@pytest_twisted.ensureDeferred
async def test_the_bearer_scheme_is_case_insensitive(http):
    hub = await Hub(apiToken="s3cr3t").start()
    try:
        for authorization, code in [
            ("Bearer s3cr3t", 200),
            ("bearer s3cr3t", 200),
            ("BEARER s3cr3t", 200),
            ("bEaReR  s3cr3t", 200),  # RFC 7235: 1*SP
            ("bearer S3CR3T", 401),  # the token itself is not
            ("bearer wrong", 401),
            ("bearers3cr3t", 401),
            ("Basic s3cr3t", 401),
            ("s3cr3t", 401),
        ]:
            response = await http.get(hub.url + "/devices", headers={"Authorization": authorization})
            assert response.code == code, authorization
            await response.content()
    finally:
        await hub.stop()


@pytest_twisted.ensureDeferred
async def test_body_over_a_mebibyte_is_413(hub, http):
    big = json.dumps({"instruct": "x", "data": "a" * (1 << 20)}).encode()
    code, body = await call(http, hub, "POST", "/devices/abc/commands", raw=big)
    assert code == 413 and body["error"]


@pytest_twisted.ensureDeferred
async def test_stopping_the_api_flushes_and_closes_its_connections(hub):
    """Left to the reactor's shutdown, a finished response still in a buffer would be dropped."""
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    from .support import Device  # any line protocol will do as an HTTP client here

    client = Device(None)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", hub.api.listener.port.getHost().port), client)
    await eventually(lambda: hub.api.site.channels)
    await hub.api.stopService()
    assert hub.api.site.channels == set()
    await client.closed  # closed by the server as part of the stop


@pytest_twisted.ensureDeferred
async def test_access_log_goes_to_the_file_asked_for_and_nowhere_by_default(tmp_path, http):
    from twisted.logger import formatEvent, globalLogPublisher

    logged = []
    globalLogPublisher.addObserver(logged.append)
    path = tmp_path / "access.log"
    quiet, logging = Hub(), Hub(accessLog=str(path))
    try:
        for hub in (await quiet.start(), await logging.start()):
            response = await http.get(hub.url + "/devices?num=1")
            assert response.code == 200
            await response.content()
    finally:
        await quiet.stop()
        await logging.stop()
        globalLogPublisher.removeObserver(logged.append)
    [line] = path.read_text().splitlines()
    assert '"GET /devices?num=1 HTTP/1.1" 200' in line
    assert not any("GET /devices" in formatEvent(event) for event in logged)
