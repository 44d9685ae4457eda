import gc

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.logger import globalLogPublisher
from twisted.web.client import Agent, HTTPConnectionPool


@pytest.fixture(autouse=True)
def clean_reactor():
    """
    Fail a test that leaves timers behind or logs an error (an unhandled error
    in a Deferred included): pytest-twisted checks neither.
    """
    before = set(reactor.getDelayedCalls())
    errors = []

    def observe(event):
        if event.get("log_failure") is not None or event.get("isError"):
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    yield
    gc.collect()
    globalLogPublisher.removeObserver(observe)
    left = [call for call in reactor.getDelayedCalls() if call not in before and call.active()]
    described = [str(call) for call in left]
    for call in left:
        call.cancel()
    assert not left, f"test left delayed calls: {described}"
    assert not errors, f"test logged errors: {[e.get('log_failure') or e for e in errors]}"


@pytest.fixture
def http():
    """A treq client over a pool that keeps no connections (nothing left behind)."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    yield treq.client.HTTPClient(Agent(reactor, pool=pool))
    pytest_twisted.blockon(pool.closeCachedConnections())
