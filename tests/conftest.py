import fcntl
import gc
import os
import shutil
import tempfile

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.logger import globalLogPublisher
from twisted.web.client import Agent, HTTPConnectionPool

_scratch = pytest.StashKey[tuple[str, str | None]]()
_left = pytest.StashKey[list[str]]()
_ALONE = "alone.lock"
"""In the session's directory: the lock that runs a test marked C{alone} while no other test runs."""


def _worker(config) -> bool:
    """Whether this is one of pytest-xdist's workers (the suite runs on two: setup.cfg)."""
    return hasattr(config, "workerinput")


def pytest_configure(config):
    """
    Give the session a temporary directory of its own, removed at the end: TMPDIR for this
    process and the processes it starts, and the root of pytest's C{tmp_path} directories
    (unless C{--basetemp} is given, which keeps them for a look after the run). pytest-xdist's
    workers use their controller's, which checks and removes it once they are done: a
    directory of their own inside it would make Chromium's socket path too long (108 bytes).
    """
    config.addinivalue_line("markers", "alone: runs while no other test runs (it bounds a latency, which another test's load would move)")
    if _worker(config):
        config.stash[_scratch] = os.environ["TMPDIR"], None
        return
    scratch = tempfile.mkdtemp(prefix="devicehub-pytest-")
    config.stash[_scratch] = scratch, os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = scratch
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """
    Each test holds the session's lock, shared, from its setup to its teardown (the module's
    fixtures it starts or stops included); one marked C{alone} holds it exclusively, so that
    the other worker runs nothing meanwhile.
    """
    with open(os.path.join(item.config.stash[_scratch][0], _ALONE), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if item.get_closest_marker("alone") else fcntl.LOCK_SH)
        return (yield)  # closing the file releases the lock


def pytest_collection_finish(session):
    """
    Freeze what collecting imported out of the collector's scans: the collection each test
    ends with (to surface unhandled errors in Deferreds) then only scans what tests made.
    """
    gc.collect()
    gc.freeze()


def pytest_sessionfinish(session):
    """Fail a passing run whose tests left anything but C{tmp_path} directories behind."""
    if _worker(session.config):  # the other worker may be using the directory now: the controller checks it after both
        return
    scratch, _ = session.config.stash[_scratch]
    left = sorted(name for name in os.listdir(scratch) if not name.startswith("pytest-of-") and name != _ALONE)
    session.config.stash[_left] = left
    if left and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    left = config.stash.get(_left, [])
    if left:
        terminalreporter.section("temporary files left behind", red=True)
        terminalreporter.line(f"in {config.stash[_scratch][0]}: {', '.join(left)}")


def pytest_unconfigure(config):
    if _worker(config):
        return
    scratch, previous = config.stash[_scratch]
    shutil.rmtree(scratch, ignore_errors=True)
    if previous is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = previous
    tempfile.tempdir = None


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
