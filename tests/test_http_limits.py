"""Limits of the HTTP listener: its listen backlog, request deadlines and the body limit."""

import pytest
from twisted.internet.testing import MemoryReactor

from devicehub.api import ApiService
from devicehub.backlog import LISTEN_BACKLOG, withBacklog


@pytest.mark.parametrize(
    "http, backlog",
    [("tcp:8080:interface=127.0.0.1", LISTEN_BACKLOG), ("tcp:8080", LISTEN_BACKLOG), ("tcp:8080:backlog=7", 7)],
)
def test_the_http_listener_has_a_backlog_of_1024_unless_its_endpoint_sets_one(http, backlog):
    reactor = MemoryReactor()
    service = ApiService(reactor, http=http, frontend="tcp://127.0.0.1:5555", commandTimeout=5.0)
    service.listener.startService()
    [(port, factory, listened, interface)] = reactor.tcpServers
    assert (port, factory, listened) == (8080, service.site, backlog)


@pytest.mark.parametrize(
    "description, expected",
    [
        ("tcp:0", "tcp:0:backlog=1024"),
        ("tcp6:80:interface=\\:\\:1", "tcp6:80:interface=\\:\\:1:backlog=1024"),
        ("ssl:7443:privateKey=key.pem:certKey=cert.pem", "ssl:7443:privateKey=key.pem:certKey=cert.pem:backlog=1024"),
        ("unix:/run/backlog=x", "unix:/run/backlog=x:backlog=1024"),  # a path is not an option
        ("tcp:80:backlog=5", "tcp:80:backlog=5"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),  # takes no backlog
    ],
)
def test_with_backlog(description, expected):
    assert withBacklog(description) == expected
