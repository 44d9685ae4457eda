"""
Every device protocol end to end (issue 13): simulated devices of each protocol over real
TCP to a real hub, driven from Demand, HTTP and the CLI, with events and the queue.
"""

import json
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.threads import deferToThread

from devicehub import OK, TIMEOUT, Demand, Events, Reply
from devicehub.devices.simulate import model
from devicehub.devices.simulate.fleet import SimulatedDevice, Tally

from .support import ROOT, Hub, eventually

# protocol -> a command a real device of it answers, its data, and the device's identity
COMMANDS = {
    "jsonl": ("0x10", {"interval": 60}, "861234567890123"),
    "watch": ("CR", None, "8800000015"),
    "gt06": ("Relay,1#", None, "868120145233604"),
    "teltonika": ("getinfo", None, "356307042441013"),
}
PROTOCOLS = [p for p in COMMANDS if p != "jsonl"]


def expected(protocol: str, device) -> object:
    """The reply data the simulated device gives to the protocol's command."""
    instruct, data, _ = COMMANDS[protocol]
    return {"jsonl": lambda: device.reply, "watch": lambda: [], "gt06": lambda: device.answerTo(instruct),
            "teltonika": lambda: device.answer(instruct)}[protocol]()


async def connect(hub: Hub, protocol: str, imei: str, **options) -> SimulatedDevice:
    device = SimulatedDevice(model(protocol)(imei, **options), 0, reactor, Tally())
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", hub.port(protocol)), device)
    return device


@pytest_twisted.async_yield_fixture(params=PROTOCOLS)
async def hub(request, tmp_path):
    hub = await Hub(listen=[request.param], commandTimeout=2.0, brokerOptions={"store": str(tmp_path / "q.db")}).start()
    hub.protocol = request.param
    yield hub
    await hub.stop()


@pytest.fixture
def demand(hub):
    demand = Demand(hub.frontend, timeout=5)
    yield demand
    demand.close()


@pytest_twisted.ensureDeferred
async def test_a_device_of_each_protocol_is_online_answers_commands_and_reports_positions(hub, demand, http):
    protocol = hub.protocol
    instruct, data, imei = COMMANDS[protocol]
    events = []
    subscriber = Events(hub.events, imei, callback=events.append)
    try:
        device = await connect(hub, protocol, imei)
        await eventually(lambda: hub.directory.owner(imei) is not None)
        assert hub.directory.owner(imei).protocol == protocol
        assert await demand.find(imei) == OK and await demand.getlist(10, 0) == [imei]
        # from Demand
        assert await demand.request(imei, instruct, data) == Reply(OK, expected(protocol, device.device))
        # two at once: answered in order, one at a time
        both = [demand.request(imei, instruct, data), demand.request(imei, instruct, data)]
        assert [await answer for answer in both] == [Reply(OK, expected(protocol, device.device))] * 2
        # from HTTP
        body = json.dumps({"instruct": instruct, "data": data}).encode()
        response = await http.post(f"{hub.url}/devices/{imei}/commands", data=body)
        assert (response.code, json.loads(await response.content())) == (
            200, {"result": "ok", "reply": expected(protocol, device.device)})
        # from the CLI
        cli = await deferToThread(subprocess.run, [sys.executable, "-m", "devicehub.cli.main", "--frontend", hub.frontend,
                                                    "send", imei, instruct, *([json.dumps(data)] if data else [])],
                                  capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert (cli.returncode, json.loads(cli.stdout)) == (0, {"result": "ok", "reply": expected(protocol, device.device)})
        assert len(device.device.commands) == 5
        # its positions reach the event stream, with its protocol
        device.transport.write(device.device.position(52.5, 4.25, speed=36.0, course=90.0))
        await eventually(lambda: any(event["type"] == "location" and event["data"]["lat"] > 52.49 for event in events))
        location = [event for event in events if event["type"] == "location"][-1]
        assert location["protocol"] == protocol
        assert (round(location["data"]["lat"], 4), round(location["data"]["lon"], 4)) == (52.5, 4.25)
        assert all(event["protocol"] == protocol for event in events)
        # counted by protocol
        response = await http.get(f"{hub.url}/metrics")
        text = (await response.content()).decode()
        for metric in ("devicehub_device_connections_total", "devicehub_device_logins_total",
                       "devicehub_device_frames_total"):
            [value] = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith(f'{metric}{{protocol="{protocol}"}}')]
            assert value >= 1, metric
        # a disconnect answers what waits at once
        device.device.silent = True
        waiting = demand.request(imei, instruct, data, timeout=30)
        await eventually(lambda: len(device.device.commands) == 6)
        device.transport.loseConnection()
        assert await waiting == Reply(TIMEOUT)
    finally:
        subscriber.close()


@pytest_twisted.ensureDeferred
async def test_a_silent_device_times_out_and_queued_commands_wait_for_its_login(hub, demand):
    protocol = hub.protocol
    instruct, data, imei = COMMANDS[protocol]
    queued = await demand.request(imei, instruct, data, queue=True)
    assert queued.result == "queued"
    device = await connect(hub, protocol, imei)
    await eventually(lambda: device.device.commands)  # delivered at its login
    await eventually(lambda: hub.broker.store is not None and not hub.broker.broker.deliveries)
    assert (await demand.status(queued.id))["state"] == "acked"
    device.transport.loseConnection()
    await device.closed
    mute = await connect(hub, protocol, imei, silent=True)
    await eventually(lambda: hub.directory.owner(imei) is not None and hub.directory.owner(imei).conn > 1)
    assert await demand.send(imei, instruct, data, timeout=0.5) == TIMEOUT
    mute.transport.loseConnection()
    await mute.closed
