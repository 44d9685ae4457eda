"""devicehub.common.reactor: Twisted's epoll reactor without a log context per event."""

import json
import os
import socket
import subprocess
import sys
import textwrap

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol

from devicehub.common.reactor import LeanEPollReactor

from .support import ROOT


def iterate(reactor, until, turns: int = 200) -> None:
    """Run C{reactor}'s loop a turn at a time until C{until()} is true."""
    for _ in range(turns):
        if until():
            return
        reactor.runUntilCurrent()
        reactor.doIteration(0.05)
    raise AssertionError("not done in time")


def run_script(source: str, *args: str) -> str:
    """Standard output of a Python process running C{source} on this work tree's code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(source), *args], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout


def test_connections_read_write_and_close_as_on_twisted_epoll_reactor():
    reactor = LeanEPollReactor()  # a reactor of its own, never installed: the tests' one is untouched
    received, lost = [], []

    class Upper(Protocol):
        def dataReceived(self, data):
            received.append(data)
            self.transport.write(data.upper())

        def connectionLost(self, reason):
            lost.append(reason)

    port = reactor.listenTCP(0, Factory.forProtocol(Upper), interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
    client.setblocking(False)
    answer = []

    def answered():
        try:
            answer.append(client.recv(100))
        except BlockingIOError:
            pass
        return answer

    try:
        client.sendall(b"ping")
        iterate(reactor, answered)
        assert received == [b"ping"] and answer == [b"PING"]
        client.close()
        iterate(reactor, lambda: lost)
        assert lost[0].check(ConnectionDone)
    finally:
        client.close()
        port.stopListening()
        iterate(reactor, lambda: not port.connected)
        reactor.waker.connectionLost(None)
        reactor._poller.close()


def test_it_is_installed_unless_a_reactor_was_chosen_before():
    script = """
        import sys
        if sys.argv[1] == "poll":
            from twisted.internet import pollreactor
            pollreactor.install()
        from devicehub.common.reactor import installUnlessChosen
        installUnlessChosen()
        from twisted.internet import reactor
        print(type(reactor).__module__ + "." + type(reactor).__name__)
    """
    assert run_script(script, "none") == "devicehub.common.reactor.LeanEPollReactor\n"
    assert run_script(script, "poll") == "twisted.internet.pollreactor.PollReactor\n"


def test_a_read_that_raises_is_logged_and_closes_only_its_connection():
    # In a process of its own: the error logged would fail this test run's clean-reactor check.
    script = """
        import json, socket
        from devicehub.common.reactor import installUnlessChosen
        installUnlessChosen()
        from twisted.internet import reactor
        from twisted.internet.protocol import Factory, Protocol
        from twisted.logger import globalLogPublisher

        failures, got, lost = [], [], []
        def observe(event):  # Twisted's own logging of the read's error is a legacy event: "failure"
            failure = event.get("log_failure") or event.get("failure")
            if failure is not None:
                failures.append(str(failure.value))
        globalLogPublisher.addObserver(observe)

        class Picky(Protocol):
            def dataReceived(self, data):
                if data == b"bad":
                    raise ValueError("cannot read that")
                got.append(data)

            def connectionLost(self, reason):
                lost.append(reason.type.__name__)

        port = reactor.listenTCP(0, Factory.forProtocol(Picky), interface="127.0.0.1")
        good, bad = (socket.create_connection(("127.0.0.1", port.getHost().port)) for _ in range(2))
        bad.sendall(b"bad")
        outcome = {}
        def check():
            if not lost:
                return reactor.callLater(0.01, check)
            good.sendall(b"good")
            reactor.callLater(0.2, end)
        def end():
            outcome.update(failures=failures, got=got and got[0].decode(), lost=lost[:])
            reactor.stop()
        reactor.callLater(0.1, check)
        reactor.run()
        print(json.dumps(outcome))
    """
    outcome = json.loads(run_script(script))
    assert outcome == {"failures": ["cannot read that"], "got": "good", "lost": ["ValueError"]}
