"""The command store when its database fails, and the broker service around it (issue 12)."""

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from devicehub import store as storeModule
from devicehub.broker import STORE_SWEEP, BrokerService

from .support import LOCAL


@pytest.fixture
def storeLog(monkeypatch) -> list[dict]:
    """What the store module logs, kept from the process log (where an error fails the test)."""
    events: list[dict] = []
    monkeypatch.setattr(storeModule, "log", Logger(namespace="devicehub.store", observer=events.append), raising=False)
    return events


def failures(events) -> list[str]:
    """The logged failures among C{events}: their message and the error's text."""
    return [f"{formatEvent(event)}: {event['log_failure'].getErrorMessage()}" for event in events if "log_failure" in event]


@pytest_twisted.ensureDeferred
async def test_a_failing_sweep_is_logged_and_the_sweep_goes_on(tmp_path, storeLog):
    clock = Clock()
    service = BrokerService(reactor, frontend=LOCAL, backend=LOCAL, store=str(tmp_path / "q.sqlite3"), clock=clock)
    service.startService()
    try:
        store = service.store
        id = await store.add("gone", "0x10", None, 1, False, clock.seconds())
        await store._pool.runOperation("PRAGMA query_only = ON")  # the disk turns read-only
        clock.advance(STORE_SWEEP)
        await store.get(id)  # one database thread: the sweep's call has finished before this one
        assert failures(storeLog) == [
            "The command store's sweep for expired commands failed: attempt to write a readonly database"
        ]
        assert not store.healthy  # and a read that works does not hide it
        await store._pool.runOperation("PRAGMA query_only = OFF")  # the disk recovers
        clock.advance(STORE_SWEEP)
        await store.get(id)
        assert store.healthy and (await store.get(id))["state"] == "expired"
    finally:
        await service.stopService()
