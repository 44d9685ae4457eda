"""The command store when its database fails, and the broker service around it (issue 12)."""

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from devicehub import NO, Demand
from devicehub.common.errors import RequestRejected
from devicehub.broker.store import interface as storeModule
from devicehub.broker.service import STORE_SWEEP, BrokerService
from devicehub.tap import Options, makeService
from devicehub.broker.store import MAX_ATTEMPTS, CommandStore, StoreFailed
from devicehub.broker.settings import BrokerSettings
from devicehub.common.metrics import Metrics

from .support import LOCAL, Hub, eventually, free_ports, start_twistd


@pytest.fixture
def storeLog(monkeypatch) -> list[dict]:
    """What the store module logs, kept from the process log (where an error fails the test)."""
    events: list[dict] = []
    monkeypatch.setattr(storeModule, "log", Logger(namespace="devicehub.broker.store", observer=events.append), raising=False)
    return events


def failures(events) -> list[str]:
    """The logged failures among C{events}: their message and the error's text."""
    return [f"{formatEvent(event)}: {event['log_failure'].getErrorMessage()}" for event in events if "log_failure" in event]


@pytest_twisted.ensureDeferred
async def test_a_failing_sweep_is_logged_and_the_sweep_goes_on(tmp_path, storeLog):
    clock = Clock()
    service = BrokerService(reactor, BrokerSettings(frontend=LOCAL, backend=LOCAL, events=None, store=str(tmp_path / "q.sqlite3")),
                            Metrics(), clock=clock)
    service.startService()
    try:
        store = service.store
        id = await store.add("gone", "0x10", None, 1, False, clock.seconds())
        await store._pool.runOperation("PRAGMA query_only = ON")  # the disk turns read-only
        clock.advance(STORE_SWEEP)
        await store.get(id)  # one database thread: the sweep's call has finished before this one
        assert failures(storeLog) == [
            "Sweeping the expired queued commands failed: the command store failed: attempt to write a readonly database"
        ]
        assert not store.healthy  # and a read that works does not hide it
        await store._pool.runOperation("PRAGMA query_only = OFF")  # the disk recovers
        clock.advance(STORE_SWEEP)
        await store.get(id)
        assert store.healthy and (await store.get(id))["state"] == "expired"
    finally:
        await service.stopService()


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda tmp: tmp / "missing" / "q.sqlite3", "unable to open database file"),
        (lambda tmp: tmp, "unable to open database file"),  # a directory
        (lambda tmp: (tmp / "q.sqlite3").write_bytes(b"no database\n" * 100) and tmp / "q.sqlite3",
         "file is not a database"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_store_that_cannot_be_opened_stops_the_broker_start(tmp_path, make, reason):
    path = str(make(tmp_path))
    service = BrokerService(reactor, BrokerSettings(frontend=LOCAL, backend=LOCAL, events=None, store=path), Metrics())
    try:
        with pytest.raises(RuntimeError) as raised:
            service.privilegedStartService()
    finally:
        if service.broker is not None:  # started after all (without the fix): stop it
            await service.stopService()
    assert str(raised.value) == f"cannot open the command store {path!r}: {reason}"
    assert service.frontendSocket is None and service.store is None and not service.running


@pytest_twisted.ensureDeferred
async def test_the_store_is_opened_at_start(tmp_path):
    path = tmp_path / "q.sqlite3"
    service = BrokerService(reactor, BrokerSettings(frontend=LOCAL, backend=LOCAL, events=None, store=str(path)),
                            Metrics())
    service.startService()
    try:
        assert path.exists()  # at start, not at the first command
        assert not service.store.mayHaveWaiting("dev")  # and its index is loaded before any login
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_failing_store_call_says_the_store_failed(tmp_path):
    store = CommandStore(str(tmp_path / "q.sqlite3"), reactor)
    await store.open(0.0)
    try:
        await store._pool.runOperation("PRAGMA query_only = ON")
        with pytest.raises(StoreFailed) as raised:
            await store.add("dev", "0x10", None, 60, False, 1.0)
        assert str(raised.value) == "the command store failed: attempt to write a readonly database"
        assert not store.healthy
    finally:
        store.close()


@pytest_twisted.ensureDeferred
async def test_twistd_stops_with_a_message_when_the_store_cannot_be_opened(tmp_path):
    frontend, backend = free_ports(2)
    path = str(tmp_path / "missing" / "q.sqlite3")
    process = start_twistd(
        ["--roles", "broker", "--frontend", f"tcp://127.0.0.1:{frontend}", "--backend", f"tcp://127.0.0.1:{backend}",
         "--store", path]
    )
    try:
        await eventually(lambda: process.ended.called, timeout=20)
    finally:
        await process.stop()
    assert process.exitCode not in (0, None)
    assert f"cannot open the command store {path!r}: unable to open database file" in process.output


@pytest_twisted.ensureDeferred
async def test_the_index_of_waiting_devices_forgets_devices_whose_commands_are_gone(tmp_path):
    store = CommandStore(str(tmp_path / "q.sqlite3"), reactor)
    await store.open(0.0)
    try:
        acked = await store.add("acked", "0x10", None, 100, False, 1.0)
        cancelled = await store.add("cancelled", "0x10", None, 100, False, 1.0)
        failed = await store.add("failed", "0x10", None, 100, False, 1.0)
        retried = await store.add("retried", "0x10", None, 100, False, 1.0)
        for n in range(50):
            await store.add(f"gone-{n}", "0x10", None, 10, False, 1.0)
        await store.add("kept", "0x10", None, 100, False, 1.0)
        await store.sending(acked, 2.0)
        await store.delivered(acked, True, 3.0)
        await store.cancel(cancelled, 3.0)
        for attempt in range(MAX_ATTEMPTS):
            await store.sending(failed, 4.0)
            await store.delivered(failed, False, 4.0)
        await store.sending(retried, 4.0)
        assert store.mayHaveWaiting("retried")  # sent, its ack not in yet: a login must still look
        await store.delivered(retried, False, 5.0)
        await store.expire(20.0)  # what the periodic sweep does
        assert [imei for imei in ("acked", "cancelled", "failed", "retried", "kept") if store.mayHaveWaiting(imei)] == [
            "retried", "kept"
        ]
        assert not any(store.mayHaveWaiting(f"gone-{n}") for n in range(50))
        assert store.depth == 2
    finally:
        store.close()


@pytest.mark.parametrize(
    "argv, environ",
    [(["--no-store"], {}), (["--store", ""], {}), ([], {"DEVICEHUB_STORE": ""}), (["--no-store"], {"DEVICEHUB_STORE": "q.sqlite3"})],
)
def test_the_broker_can_run_without_a_store(argv, environ):
    options = Options(environ=environ)
    options.parseOptions(["--roles", "broker", *argv])
    assert options["store"] is None
    [broker] = makeService(options)
    assert broker.settings.store is None


@pytest_twisted.ensureDeferred
async def test_a_broker_without_a_store_says_so():
    options = Options(environ={})
    options.parseOptions(["--no-store"])
    hub = await Hub(brokerOptions={"store": options["store"]}).start()
    demand = Demand(hub.frontend, timeout=5)
    try:
        assert (await demand.health())["store"] == "none"
        assert await demand.send("offline", "0x10", queue=True) == NO  # nothing to queue it in
        with pytest.raises(RequestRejected, match="keeps no queue"):
            await demand.status("an-id")
    finally:
        demand.close()
        await hub.stop()


@pytest_twisted.ensureDeferred
async def test_a_store_failing_later_is_reported_by_queued_sends_and_health(tmp_path, monkeypatch, http):
    """Issue 12.7: not 'broker unavailable' and not a healthy hub, but the store, in words."""
    import json

    import devicehub.broker.queue as brokerModule

    from devicehub import CommandStoreFailed, Demand

    from .support import Hub

    logged: list[dict] = []
    monkeypatch.setattr(brokerModule, "log", Logger(namespace="devicehub.broker.queue", observer=logged.append))
    hub = await Hub(brokerOptions={"store": str(tmp_path / "q.sqlite3")}).start()
    demand = Demand(hub.frontend)
    try:
        await hub.broker.store._pool.runOperation("PRAGMA query_only = ON")  # the disk turns read-only
        response = await http.post(hub.url + "/devices/away/commands", data=b'{"instruct":"0x10","queue":true}')
        assert (response.code, json.loads(await response.content())) == (
            503, {"error": "the command store failed: attempt to write a readonly database"})
        with pytest.raises(CommandStoreFailed, match="attempt to write a readonly database"):
            await demand.send("away", "0x10", queue=True)
        response = await http.get(hub.url + "/health")
        assert (response.code, json.loads(await response.content())) == (503, {
            "status": "store failing", "error": "the command store failed", "nodes": 1, "devices": 0,
            "store": "failing"})
        assert len(failures(logged)) == 2
    finally:
        demand.close()
        await hub.stop()
