"""The uplink event stream: ZeroMQ PUB, the Events subscriber, Server-Sent Events and the CLI."""

import json
import os
import sys
from pathlib import Path

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool

from devicehub import OK, Demand, Events

from .support import ROOT, Hub, Twistd, eventually, online, pause


@pytest_twisted.async_yield_fixture
async def hub():
    hub = await Hub().start()
    yield hub
    await hub.stop()


def without_ts(event):
    assert isinstance(event["ts"], float)
    return {key: value for key, value in event.items() if key != "ts"}


@pytest_twisted.ensureDeferred
async def test_uplinks_and_presence_reach_subscribers(hub):
    seen, only = [], []
    everything = Events(hub.events, callback=seen.append)
    filtered = Events(hub.events, "dev1", callback=only.append)  # must not see dev10
    await pause(0.2)  # let the subscriptions reach the publisher (ZeroMQ slow joiner)
    try:
        device = await online(hub, "dev1")
        other = await online(hub, "dev10")
        device.send({"type": "location", "lat": 52.1, "lon": 4.3})
        await eventually(lambda: len(only) == 2)
        await device.close()
        await eventually(lambda: len(only) == 3)
        assert [without_ts(event) for event in only] == [
            {"imei": "dev1", "node": "node-1", "type": "online", "data": {"reason": "login"}, "n": 1, "protocol": "jsonl"},
            {"imei": "dev1", "node": "node-1", "type": "location", "data": {"lat": 52.1, "lon": 4.3}, "n": 2, "protocol": "jsonl"},
            {"imei": "dev1", "node": "node-1", "type": "offline", "data": {"reason": "closed"}, "n": 3, "protocol": "jsonl"},
        ]
        await eventually(lambda: len(seen) == 4)
        assert [(e["imei"], e["type"]) for e in seen] == [
            ("dev1", "online"), ("dev10", "online"), ("dev1", "location"), ("dev1", "offline")
        ]
        assert everything.dropped == filtered.dropped == 0
        await other.close()
    finally:
        everything.close()
        filtered.close()


@pytest_twisted.ensureDeferred
async def test_async_iteration(hub):
    events = Events(hub.events, "it")
    await pause(0.2)

    async def first_two():
        found = []
        async for event in events:
            found.append(event["type"])
            if len(found) == 2:
                return found

    collecting = ensureDeferred(first_two())
    device = await online(hub, "it")
    device.send({"type": "battery", "level": 80})
    assert await collecting == ["online", "battery"]
    events.close()
    await device.close()


@pytest_twisted.ensureDeferred
async def test_slow_subscriber_loses_events_and_slows_nobody(hub):
    slow = Events(hub.events, maxQueue=5)  # never read
    demand = Demand(hub.frontend)
    await pause(0.2)
    try:
        device = await online(hub, "chatty", reply="fast")
        for i in range(200):
            device.send({"type": "tick", "i": i})
        started = reactor.seconds()
        assert await demand.send("chatty", "0x10") == OK
        assert reactor.seconds() - started < 0.5
        await eventually(lambda: slow.dropped >= 196)  # 201 events, 5 kept
        assert slow._queue.pending[0]["type"] == "online"
        await device.close()
    finally:
        slow.close()
        demand.close()


class Collect(Protocol):
    def __init__(self):
        self.data = b""
        self.done = Deferred()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback(None)


@pytest_twisted.ensureDeferred
async def test_server_sent_events_over_http(hub):
    pool = HTTPConnectionPool(reactor, persistent=False)
    http = treq.client.HTTPClient(Agent(reactor, pool=pool))
    try:
        response = await http.get(hub.url + "/events?imei=sse1")
        assert response.code == 200
        assert response.headers.getRawHeaders("content-type") == ["text/event-stream"]
        body = Collect()
        response.deliverBody(body)
        await eventually(lambda: body.data.startswith(b": connected"))
        await pause(0.2)
        device = await online(hub, "sse1")
        other = await online(hub, "sse10")
        device.send({"type": "sos", "where": "park"})
        await eventually(lambda: body.data.count(b"data: ") == 2)
        events = [json.loads(chunk[len("data: "):]) for chunk in body.data.decode().split("\n\n") if chunk.startswith("data: ")]
        assert [(e["imei"], e["type"], e["data"]) for e in events] == [
            ("sse1", "online", {"reason": "login"}),
            ("sse1", "sos", {"where": "park"}),
        ]
        bad = await http.get(hub.url + "/events?imei=not%20valid")
        assert bad.code == 400 and json.loads(await bad.content())["error"]
        wrong = await http.post(hub.url + "/events")
        assert wrong.code == 405
        await device.close()
        await other.close()
    finally:
        hub.api.streams.closeAll()  # ends the stream from the server side
        await pool.closeCachedConnections()
    await body.done


@pytest_twisted.ensureDeferred
async def test_cli_prints_events_as_json_lines(hub):
    cli = Twistd()  # any process: collects its output
    command = str(Path(sys.executable).parent / "devicehub")
    reactor.spawnProcess(cli, command, [command, "--events", hub.events, "events", "cli1"],
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        device = await online(hub, "cli1")
        # The CLI hears events only once its subscription has reached the broker, some time
        # after it starts (longer on a loaded machine): until it prints one, each may be missed.
        lines = lambda: cli.output[:cli.output.rfind("\n") + 1].splitlines()  # noqa: E731 (whole lines only)
        for _ in range(300):
            device.send({"type": "probe"})
            await pause(0.1)
            if '"probe"' in cli.output:
                break
        assert '"probe"' in cli.output, cli.output
        heard = len(lines())
        await device.close()
        device = await online(hub, "cli1")
        device.send({"type": "step", "count": 3})
        events = lambda: [e for e in map(json.loads, lines()[heard:]) if e["type"] != "probe"]  # noqa: E731
        await eventually(lambda: len(events()) >= 3, timeout=10)
        offline, again, step = events()[:3]
        assert (offline["type"], again["type"], step["type"], step["data"]) == ("offline", "online", "step", {"count": 3})
        assert offline["imei"] == again["imei"] == step["imei"] == "cli1"
        await device.close()
    finally:
        await cli.stop()


@pytest_twisted.ensureDeferred
async def test_published_events_are_counted(hub):
    device = await online(hub, "counted")
    device.send({"type": "a"})
    published = lambda: hub.metrics.registry.get_sample_value("devicehub_events_published_total")  # noqa: E731
    await eventually(lambda: published() >= 2)
    await device.close()
