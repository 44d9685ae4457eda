"""The queue of commands for offline devices: the store, and delivery through a real hub, on SQLite and PostgreSQL."""

import json

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.client import Agent, HTTPConnectionPool

from devicehub import OK, QUEUED, Demand
from devicehub.broker.store import MAX_ATTEMPTS, CommandStore

from .support import Hub, connect, eventually, online, pause
from .test_pgstore import makeStore, pgdatabase, postgres, queueAt  # noqa: F401 (fixtures: SQLite and PostgreSQL)


@pytest_twisted.async_yield_fixture
async def store(queueAt):
    store = makeStore(queueAt)
    await store.open(0.0)
    yield store
    store.close()


@pytest_twisted.ensureDeferred
async def test_store_keeps_order_states_and_depth(store):
    first = await store.add("dev", "0x10", {"a": 1}, 100, False, 1.0)
    second = await store.add("dev", "0x11", None, 100, False, 2.0)
    other = await store.add("other", "0x10", [1], 100, False, 3.0)
    assert store.depth == 3
    assert [c["id"] for c in await store.due("dev", 4.0)] == [first, second]
    await store.sending(first, 5.0)
    await store.delivered(first, True, 6.0)
    assert (await store.get(first))["state"] == "acked" and store.depth == 2
    assert (await store.cancel(other, 7.0))["state"] == "cancelled"
    assert (await store.cancel(first, 7.0))["state"] == "acked"  # too late to cancel
    assert await store.cancel("nope", 7.0) is None and await store.get("nope") is None
    assert [c["id"] for c in await store.waiting("dev")] == [second]
    assert (await store.get(second))["data"] is None and store.depth == 1


@pytest_twisted.ensureDeferred
async def test_store_coalesce_expiry_and_failure(store):
    old = await store.add("dev", "interval", 60, 100, False, 1.0)
    new = await store.add("dev", "interval", 30, 100, True, 2.0)
    assert (await store.get(old))["state"] == "replaced"
    short = await store.add("dev", "ping", None, 5, False, 3.0)
    assert [c["id"] for c in await store.due("dev", 9.0)] == [new]  # the short one expired at 8
    assert (await store.get(short))["state"] == "expired"
    for attempt in range(MAX_ATTEMPTS):
        await store.sending(new, 10.0 + attempt)
        await store.delivered(new, False, 10.0 + attempt)
    assert (await store.get(new))["state"] == "failed" and (await store.get(new))["attempts"] == MAX_ATTEMPTS


@pytest_twisted.ensureDeferred
async def test_store_requeues_what_was_sent_when_reopened(tmp_path):
    path = str(tmp_path / "queue.sqlite3")
    store = CommandStore(path, reactor)
    await store.open(0.0)
    id = await store.add("dev", "0x10", None, 100, False, 1.0)
    await store.sending(id, 2.0)
    store.close()
    reopened = CommandStore(path, reactor)
    await reopened.open(3.0)  # e.g. the broker restarted before the ack came
    assert (await reopened.get(id))["state"] == "queued" and reopened.depth == 1
    reopened.close()


@pytest_twisted.ensureDeferred
async def test_store_knows_which_imeis_need_no_query_at_login(tmp_path):
    path = str(tmp_path / "queue.sqlite3")
    store = CommandStore(path, reactor)
    assert store.mayHaveWaiting("dev")  # not opened yet: it cannot tell
    await store.open(0.0)
    assert not store.mayHaveWaiting("dev")
    id = await store.add("dev", "0x10", None, 100, False, 1.0)
    assert store.mayHaveWaiting("dev") and not store.mayHaveWaiting("other")
    await store.sending(id, 2.0)
    await store.delivered(id, True, 3.0)
    assert await store.due("dev", 4.0) == [] and not store.mayHaveWaiting("dev")
    # A command added while a query that finds none is under way is not forgotten.
    empty, added = store.due("dev", 5.0), store.add("dev", "0x11", None, 100, False, 5.0)
    assert await empty == [] and await added
    assert store.mayHaveWaiting("dev")
    store.close()
    reopened = CommandStore(path, reactor)
    await reopened.open(6.0)
    assert reopened.mayHaveWaiting("dev") and not reopened.mayHaveWaiting("other")
    reopened.close()


def delivered(hub) -> bool:
    """Nothing queued, and the last delivery's outcome recorded (a pooled store may answer a read before that)."""
    return hub.broker.store.depth == 0 and not hub.broker.broker.deliveries


@pytest_twisted.async_yield_fixture
async def hub(queueAt):
    hub = await Hub(commandTimeout=1.0, brokerOptions={"store": queueAt, "deliveryTimeout": 1.0}).start()
    yield hub
    await hub.stop()


@pytest.fixture
def demand(hub):
    demand = Demand(hub.frontend)
    yield demand
    demand.close()


@pytest_twisted.ensureDeferred
async def test_queued_commands_are_delivered_oldest_first_at_login(hub, demand):
    first = await demand.request("sleeper", "0x10", {"n": 1}, queue=True)
    assert first.result == QUEUED and first.id
    second = await demand.request_nowait("sleeper", "0x11", {"n": 2}, queue=True)
    assert second.result == QUEUED
    assert [c["instruct"] for c in await demand.queued("sleeper")] == ["0x10", "0x11"]
    device = await connect(hub.devicePort, "sleeper", reply="done")
    await eventually(lambda: len(device.commands) == 2)
    assert [(c["instruct"], c["data"]) for c in device.commands] == [("0x10", {"n": 1}), ("0x11", {"n": 2})]
    await eventually(lambda: delivered(hub))
    assert (await demand.status(first.id))["state"] == "acked"
    assert (await demand.status(second.id))["state"] == "acked"
    await device.close()
    again = await connect(hub.devicePort, "sleeper")  # acked ones are never sent again
    await pause(0.3)
    assert again.commands == []
    # an online device: queue=True behaves as today
    assert await demand.send("sleeper", "0x12", queue=True) == OK
    await again.close()


@pytest_twisted.ensureDeferred
async def test_unacked_delivery_is_sent_again_at_the_next_login(hub, demand):
    reply = await demand.request("flaky", "0x10", queue=True)
    silent = await connect(hub.devicePort, "flaky", silent=True)
    await eventually(lambda: silent.commands)
    await silent.close()  # gone before acking: the command goes back to the queue
    await eventually(lambda: hub.broker.store.depth == 1)
    record = await demand.status(reply.id)
    assert record["state"] == "queued" and record["attempts"] == 1
    device = await connect(hub.devicePort, "flaky", reply="finally")
    await eventually(lambda: device.commands)
    await eventually(lambda: delivered(hub))
    assert (await demand.status(reply.id))["state"] == "acked"
    await device.close()


@pytest_twisted.ensureDeferred
async def test_coalesce_cancel_and_expiry(hub, demand):
    old = await demand.request("dev", "interval", 60, queue=True, coalesce=True)
    new = await demand.request("dev", "interval", 30, queue=True, coalesce=True)
    dropped = await demand.request("dev", "reboot", None, queue=True)
    stale = await demand.request("dev", "locate", None, queue=True, ttl=0.1)
    assert (await demand.status(old.id))["state"] == "replaced"
    assert (await demand.cancel(dropped.id))["state"] == "cancelled"
    await pause(0.2)
    device = await connect(hub.devicePort, "dev", reply=1)
    await eventually(lambda: device.commands)
    await pause(0.2)
    assert [(c["instruct"], c["data"]) for c in device.commands] == [("interval", 30)]
    assert (await demand.status(stale.id))["state"] == "expired"
    assert (await demand.status(new.id))["state"] == "acked"
    await device.close()


@pytest_twisted.ensureDeferred
async def test_queue_over_http(hub):
    pool = HTTPConnectionPool(reactor, persistent=False)
    http = treq.client.HTTPClient(Agent(reactor, pool=pool))

    async def call(method, path, body=None):
        response = await http.request(method, hub.url + path, data=None if body is None else json.dumps(body).encode())
        return response.code, json.loads(await response.content())

    try:
        code, queued = await call("POST", "/devices/watch1/commands", {"instruct": "0x10", "queue": True, "ttl": 60})
        assert code == 202 and queued["result"] == "queued"
        code, other = await call("POST", "/devices/watch1/commands", {"instruct": "0x11", "queue": True, "wait": False})
        assert code == 202
        code, listing = await call("GET", "/devices/watch1/queue")
        assert code == 200 and [c["id"] for c in listing["commands"]] == [queued["id"], other["id"]]
        code, record = await call("GET", f"/commands/{queued['id']}")
        assert code == 200 and record["state"] == "queued" and record["expires"] - record["created"] == 60
        assert (await call("DELETE", f"/commands/{other['id']}"))[1]["state"] == "cancelled"
        assert (await call("DELETE", f"/commands/{other['id']}"))[0] == 409  # already cancelled
        assert (await call("GET", "/commands/nonexistent"))[0] == 404
        assert (await call("DELETE", "/commands/nonexistent"))[0] == 404
        for bad in [{"instruct": "x", "queue": "yes"}, {"instruct": "x", "queue": True, "ttl": 0},
                    {"instruct": "x", "queue": True, "ttl": 10**9}, {"instruct": "x", "coalesce": 1}]:
            assert (await call("POST", "/devices/watch1/commands", bad))[0] == 400
        device = await online(hub, "watch1", reply="ok")
        await eventually(lambda: device.commands)
        await eventually(lambda: delivered(hub))
        assert (await call("GET", f"/commands/{queued['id']}"))[1]["state"] == "acked"
        code, body = await call("DELETE", f"/commands/{queued['id']}")
        assert code == 409 and body["command"]["state"] == "acked"
        assert (await call("GET", "/health"))[1]["store"] == "ok"
        await device.close()
    finally:
        await pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_queue_metrics_and_cli(hub, demand):
    import os
    import sys
    from pathlib import Path

    from twisted.internet.utils import getProcessOutputAndValue

    from .support import ROOT

    cli = str(Path(sys.executable).parent / "devicehub")
    out, err, code = await getProcessOutputAndValue(
        cli, ["--frontend", hub.frontend, "send", "later", "0x10", '{"x": 1}', "--queue", "--ttl", "60", "--coalesce"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, reactor=reactor,
    )
    assert code == 0, err
    output = json.loads(out)
    assert output["result"] == "queued"
    assert (await demand.status(output["id"]))["data"] == {"x": 1}
    sample = hub.metrics.registry.get_sample_value
    assert sample("devicehub_queue_depth") == 1
    assert sample("devicehub_commands_total", {"result": "queued"}) == 1
    device = await connect(hub.devicePort, "later", reply=1)
    # (with PostgreSQL the depth can reach 0 when the command is sent, before its ack counts)
    await eventually(lambda: sample("devicehub_commands_total", {"result": "ok"}) == 1)  # the delivery
    await eventually(lambda: sample("devicehub_queue_depth") == 0)
    await device.close()


@pytest_twisted.ensureDeferred
async def test_a_repeated_request_queues_one_command_through_any_broker(store):
    """CONTRACT §6: a caller that moved to another broker repeats its request; one command is queued."""
    from devicehub.broker.queue import queuedId

    id = queuedId("caller.1")
    assert await store.add("dev", "0x10", {"n": 1}, 60.0, False, 1.0, id) == id
    assert await store.add("dev", "0x10", {"n": 1}, 60.0, True, 2.0, id) == id  # a coalescing repeat changes nothing
    [command] = await store.waiting("dev")
    assert (command["id"], command["state"], command["data"], command["created"]) == (id, "queued", {"n": 1}, 1.0)
    assert store.depth == 1
    assert queuedId("caller.2") != id and len(id) == 32


@pytest_twisted.ensureDeferred
async def test_a_queued_commands_outcome_keeps_its_reply_and_is_pushed_as_an_event(hub, demand):
    """CONTRACT §7: acked (with the reply), expired or failed, a command event for its device."""
    from devicehub import Events

    seen = []
    events = Events(hub.events, callback=seen.append)
    await pause(0.2)  # the subscription reaches the publisher
    acked = await demand.request("later", "0x10", {"n": 1}, queue=True)
    stale = await demand.request("never", "locate", None, queue=True, ttl=0.1)
    device = await connect(hub.devicePort, "later", reply={"battery": 80})
    await eventually(lambda: any(e["type"] == "command" for e in seen))
    [event] = [e for e in seen if e["type"] == "command"]
    assert (event["imei"], event["node"]) == ("later", "node-1")
    assert event["data"] == {"id": acked.id, "instruct": "0x10", "state": "acked", "reply": {"battery": 80}}
    record = await demand.status(acked.id)
    assert (record["state"], record["reply"]) == ("acked", {"battery": 80})
    assert (await demand.status(stale.id))["reply"] is None
    await pause(0.2)
    await hub.broker.store.sweep(hub.broker.clock.seconds())  # the periodic sweep, now
    await eventually(lambda: any(e["type"] == "command" and e["imei"] == "never" for e in seen))
    [expired] = [e["data"] for e in seen if e["type"] == "command" and e["imei"] == "never"]
    assert expired == {"id": stale.id, "instruct": "locate", "state": "expired", "reply": None}
    # expired while its device was away, found at its login (before any sweep): pushed too
    late = await demand.request("returning", "reboot", None, queue=True, ttl=0.1)
    await pause(0.2)
    back = await connect(hub.devicePort, "returning")
    await eventually(lambda: any(e["type"] == "command" and e["imei"] == "returning" for e in seen))
    [found] = [e["data"] for e in seen if e["type"] == "command" and e["imei"] == "returning"]
    assert (found["id"], found["state"]) == (late.id, "expired") and back.commands == []
    events.close()
    await device.close()
    await back.close()


@pytest_twisted.ensureDeferred
async def test_an_older_sqlite_queue_is_migrated_and_keeps_its_commands(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:  # the schema before replies were kept (user_version 0)
        old.execute("""CREATE TABLE commands (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            imei TEXT NOT NULL, instruct TEXT NOT NULL, data TEXT NOT NULL, state TEXT NOT NULL,
            created REAL NOT NULL, expires REAL NOT NULL, updated REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0)""")
        old.execute("INSERT INTO commands (id, imei, instruct, data, state, created, expires, updated) "
                    "VALUES ('a1', 'dev', 'x', '7', 'queued', 1, 1000, 1)")
    store = makeStore(str(path))
    await store.open(2.0)
    [command] = await store.waiting("dev")
    assert (command["id"], command["data"], command["reply"]) == ("a1", 7, None)
    after = await store.delivered("a1", True, 3.0, reply="yes")
    assert (after["state"], after["reply"]) == ("acked", "yes")
    store.close()
    with sqlite3.connect(path) as reopened:
        assert reopened.execute("PRAGMA user_version").fetchone()[0] == 2
