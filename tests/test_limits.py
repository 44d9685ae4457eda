"""One set of limits: what the HTTP API refuses, the CLI and the store refuse too."""

from devicehub import api, limits, store


def test_every_interface_has_the_same_limits():
    assert (api.MAX_NUM, api.MAX_TIMEOUT) == (limits.MAX_NUM, limits.MAX_TIMEOUT)
    assert store.MAX_TTL == limits.MAX_TTL
