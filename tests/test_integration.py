"""Broker, node and Demand in one process over real ZeroMQ and TCP sockets."""

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater

from devicehub import NO, OK, TIMEOUT, BrokerUnavailable, Demand, Reply

from .support import Hub, connect, eventually, online


@pytest_twisted.async_yield_fixture(params=[False, True], ids=["zeromq", "pipes"])
async def hub(request):
    """The node reaches the broker over ZeroMQ, or in-process (as roles in one twistd do)."""
    hub = await Hub(api=False, pipes=request.param).start()
    yield hub
    await hub.stop()


@pytest.fixture
def demand(hub):
    demand = Demand(hub.frontend, timeout=5)
    yield demand
    demand.close()


@pytest_twisted.ensureDeferred
async def test_every_demand_call_against_a_real_device(hub, demand):
    device = await online(hub, "861234567890123", reply={"battery": 81})
    assert await demand.send("861234567890123", "0x10", {"interval": 30}) == OK
    assert device.commands[-1]["instruct"] == "0x10" and device.commands[-1]["data"] == {"interval": 30}
    assert await demand.request("861234567890123", "0x11") == Reply(OK, {"battery": 81})
    assert await demand.send_nowait("861234567890123", "0x12", [1, 2]) == OK
    await eventually(lambda: len(device.commands) == 3)
    assert device.commands[-1]["data"] == [1, 2]
    assert await demand.find("861234567890123") == OK
    assert await demand.find("000000000000000") == NO
    assert await demand.getlist(10, 0) == ["861234567890123"]
    assert await demand.gettotal() == 1
    assert await demand.health() == {"nodes": 1, "devices": 1, "store": "none"}
    await device.close()
    await eventually(lambda: len(hub.directory) == 0)
    assert await demand.find("861234567890123") == NO
    assert await demand.send("861234567890123", "0x10") == NO
    assert await demand.send_nowait("861234567890123", "0x10") == NO


@pytest_twisted.ensureDeferred
async def test_silent_device_times_out(hub, demand):
    device = await online(hub, "silent1", silent=True)
    started = reactor.seconds()
    assert await demand.request("silent1", "0x10", timeout=0.3) == Reply(TIMEOUT)
    assert 0.3 <= reactor.seconds() - started < 1.0
    assert len(device.commands) == 1
    await device.close()


@pytest_twisted.ensureDeferred
async def test_disconnect_resolves_waiting_command_at_once(hub, demand):
    device = await online(hub, "leaver", silent=True)
    started = reactor.seconds()
    waiting = demand.send("leaver", "0x10", timeout=30)
    await eventually(lambda: device.commands)
    await device.close()
    assert await waiting == TIMEOUT
    assert reactor.seconds() - started < 2


@pytest_twisted.ensureDeferred
async def test_broker_unavailable_when_no_broker_runs():
    demand = Demand("tcp://127.0.0.1:1", timeout=0.2)
    started = reactor.seconds()
    calls = [
        demand.send("abc", "0x10"),
        demand.request("abc", "0x10", timeout=0.1),
        demand.send_nowait("abc", "0x10"),
        demand.find("abc"),
        demand.getlist(10, 0),
        demand.gettotal(),
    ]
    for call in calls:
        with pytest.raises(BrokerUnavailable):
            await call
    elapsed = reactor.seconds() - started
    assert demand.timeout + demand.margin <= elapsed < demand.timeout + demand.margin + 1
    demand.close()


@pytest_twisted.ensureDeferred
async def test_thousand_concurrent_commands_over_hundred_devices(hub, demand):
    imeis = [f"dev{i:03}" for i in range(100)]
    devices = [
        await online(hub, imei, reply=lambda command, imei=imei: {"imei": imei, "echo": command["data"]})
        for imei in imeis
    ]
    calls = [(imeis[i % 100], i) for i in range(1000)]
    replies = await gatherResults([demand.request(imei, "0x10", {"n": n}) for imei, n in calls])
    assert replies == [Reply(OK, {"imei": imei, "echo": {"n": n}}) for imei, n in calls]
    assert sum(len(device.commands) for device in devices) == 1000
    for device in devices:
        await device.close()


@pytest_twisted.ensureDeferred
async def test_login_on_a_second_node_replaces_the_first(hub, demand):
    second = await hub.addNode("node-2")
    first = await online(hub, "mover", reply="from first")
    replaced = first.nextLine()
    moved = await connect(second.listener.port.getHost().port, "mover", reply="from second")
    assert await replaced == {"type": "error", "error": "replaced"}
    await first.closed
    await eventually(lambda: hub.directory.owner("mover").node.name == "node-2")
    assert await demand.request("mover", "0x10") == Reply(OK, "from second")
    assert await demand.gettotal() == 1
    await moved.close()


@pytest_twisted.ensureDeferred
async def test_paging_is_sorted_across_nodes(hub, demand):
    second = await hub.addNode("node-2")
    secondPort = second.listener.port.getHost().port
    imeis = [f"imei{i:02}" for i in range(25)]
    devices = [await connect(hub.devicePort if i % 2 else secondPort, imei) for i, imei in enumerate(imeis)]
    await eventually(lambda: len(hub.directory) == 25)
    pages = [await demand.getlist(10, page) for page in range(4)]
    assert pages == [imeis[0:10], imeis[10:20], imeis[20:25], []]
    assert await demand.health() == {"nodes": 2, "devices": 25, "store": "none"}
    for device in devices:
        await device.close()


@pytest_twisted.ensureDeferred
async def test_node_shutdown_closes_devices_politely_and_leaves_directory(hub, demand):
    device = await online(hub, "polite")
    goodbye = device.nextLine()
    await hub.node.stopService()
    assert await goodbye == {"type": "error", "error": "shutting down"}
    await device.closed
    await eventually(lambda: len(hub.directory) == 0 and not hub.broker.broker.nodes)
    assert await demand.find("polite") == NO


@pytest_twisted.ensureDeferred
async def test_invalid_arguments_fail_without_reaching_the_broker(hub, demand):
    for call in [
        lambda: demand.send("bad imei", "0x10"),
        lambda: demand.send("abc", 16),
        lambda: demand.send("abc", "0x10", timeout=0),
        lambda: demand.send("abc", "0x10", timeout=1e300),  # would pin the device's slots (issue 12.16)
        lambda: demand.find("abc", timeout=301),
        lambda: demand.send("abc", "0x10", data=object()),
        lambda: demand.send("abc", "0x10", data="x" * (9 << 20)),
        lambda: demand.getlist(-1, 0),
        lambda: demand.find(""),
    ]:
        with pytest.raises((ValueError, TypeError)):
            await call()


@pytest_twisted.ensureDeferred
async def test_close_fails_waiting_calls_and_later_calls(hub):
    demand = Demand(hub.frontend)
    device = await online(hub, "slow", silent=True)
    waiting = demand.send("slow", "0x10", timeout=30)
    await eventually(lambda: device.commands)
    demand.close()
    with pytest.raises(BrokerUnavailable):
        await waiting
    with pytest.raises(BrokerUnavailable):
        await demand.gettotal()
    await device.close()


@pytest_twisted.ensureDeferred
async def test_broker_bounds_what_any_client_sends(hub, demand):
    """Issue 12.16: a timeout past 300 s is refused; an oversized message only costs its sender."""
    import zmq

    from devicehub.wire import frames
    from devicehub.wire.zmqsocket import ZmqSocket

    answers = []
    rogue = ZmqSocket(reactor, zmq.DEALER, answers.append, connect=[hub.frontend])
    try:
        body = {"imei": "abc", "instruct": "0x10", "data": None, "timeout": 1e300, "wait": True}
        rogue.sendFrames(frames.encode(b"send", b"1", body))
        await eventually(lambda: answers)
        assert frames.decode(answers.pop()).body["code"] == "invalid"
        rogue.sendFrames(frames.encode(b"find", b"2", {"imei": "abc", "pad": "x" * (9 << 20)}))
        rogue.sendFrames(frames.encode(b"find", b"3", {"imei": "abc"}))
        assert await demand.find("abc") == NO  # everyone else is served meanwhile
        await deferLater(reactor, 0.3, lambda: None)
        # dropped, its sender disconnected (ZeroMQ reconnects it: what followed may be answered)
        assert b"2" not in [frames.decode(answer).rid for answer in answers]
    finally:
        rogue.shutdown()


@pytest_twisted.ensureDeferred
async def test_a_second_node_with_a_taken_name_is_refused_and_steals_nothing(hub, demand):
    """Issue 12.18: before, two live nodes with one --node-id took devices from each other."""
    from devicehub.node.service import NodeService
    from devicehub.node.settings import NodeSettings

    device = await online(hub, "steady")
    settings = NodeSettings(name="node-1", devices="tcp:0:interface=127.0.0.1", backend=hub.backend,
                            commandTimeout=5.0, device=hub.settings)
    twin = NodeService(reactor, settings, hub.metrics)
    twin.startService()
    try:
        await eventually(lambda: twin.link.refused is not None)
        assert twin.link.refused == "node id 'node-1' is in use by another live node"
        twinDevice = await connect(twin.listener.port.getHost().port, "steady")
        await deferLater(reactor, 1.0, lambda: None)  # several heartbeats and hellos
        assert len(hub.broker.broker.nodes) == 1
        assert hub.directory.owner("steady").node.name == "node-1" and not twin.link.registered
        assert not device.closed.called  # never replaced by the twin's device
        await twinDevice.close()
    finally:
        await twin.stopService()
    await device.close()


@pytest_twisted.ensureDeferred
async def test_in_one_process_commands_go_to_the_node_as_calls_and_other_messages_through_its_pipe():
    """The fused path: a node of the broker's process gets no command message and sends no result."""
    hub = await Hub(api=False, pipes=True).start()
    demand = Demand(hub.frontend, timeout=5)
    try:
        [(identity, toNode)] = hub.broker._localNodes.items()
        assert hub.broker.broker.routes.local[identity] == hub.node.link.execute
        kinds = []
        handler, nodeMessage = toNode.handler, hub.broker.broker.nodeMessage
        toNode.handler = lambda message: (kinds.append(message.kind), handler(message))
        hub.broker.broker.nodeMessage = lambda peer, message: (kinds.append(message.kind), nodeMessage(peer, message))
        device = await online(hub, "861234567890124", reply={"battery": 80})
        silent = await online(hub, "861234567890125", silent=True)
        assert await demand.request("861234567890124", "0x11") == Reply(OK, {"battery": 80})
        assert await demand.send_nowait("861234567890124", "0x12") == OK
        assert await demand.send("861234567890125", "0x13", timeout=0.2) == TIMEOUT
        assert [command["instruct"] for command in device.commands + silent.commands] == ["0x11", "0x12", "0x13"]
        assert b"online" in kinds and b"command" not in kinds and b"result" not in kinds
    finally:
        demand.close()
        await hub.stop()
