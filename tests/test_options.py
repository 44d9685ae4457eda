"""Options of twistd devicehub, from the command line and the environment."""

import gc

import pytest
from twisted.python.usage import UsageError

from devicehub.broker import BrokerService
from devicehub.node import NodeService
from devicehub.api import ApiService
from devicehub.service import GC_THRESHOLD, Options, Roles, makeService


def parse(argv, environ=None):
    options = Options(environ=environ or {})
    options.parseOptions(argv)
    return options


def test_defaults_are_the_contracts():
    options = parse([])
    assert options["roles"] == ("broker", "node", "api")
    assert options["devices"] == "tcp:7700"
    assert options["http"] == "tcp:8080:interface=127.0.0.1"
    assert options["frontend"] == "tcp://127.0.0.1:5555"
    assert options["backend"] == "tcp://127.0.0.1:5556"
    assert options["command-timeout"] == 10
    assert options["login-timeout"] == 30
    assert options["idle-timeout"] == 300
    assert options["max-line"] == 65536
    assert options["node-id"]


def test_environment_sets_options_and_command_line_wins():
    environ = {"DEVICEHUB_COMMAND_TIMEOUT": "5", "DEVICEHUB_ROLES": "node", "DEVICEHUB_NODE_ID": "n7"}
    options = parse(["--roles=broker,api"], environ)
    assert options["command-timeout"] == 5.0
    assert options["roles"] == ("broker", "api")
    assert options["node-id"] == "n7"


def test_environment_values_are_validated_too():
    with pytest.raises(UsageError):
        parse([], {"DEVICEHUB_MAX_LINE": "lots"})


@pytest.mark.parametrize(
    "argv",
    [
        ["--roles", "broker,cook"],
        ["--roles", ","],
        ["--command-timeout", "0"],
        ["--login-timeout", "-1"],
        ["--idle-timeout", "nan"],
        ["--max-line", "0"],
        ["--frontend", "localhost:5555"],
        ["--backend", ""],
        ["--devices", "carrier-pigeon:7700"],
        ["--http", "tcp:notaport"],
        ["--devices", "ssl:7443:privateKey=/nonexistent.pem"],
    ],
)
def test_bad_values_are_refused_with_a_usage_error(argv):
    with pytest.raises(UsageError):
        parse(argv)


def test_roles_select_services():
    hub = makeService(parse(["--roles", "api,broker"]))
    assert [type(service) for service in hub] == [BrokerService, ApiService]
    hub = makeService(parse([]))
    assert [type(service) for service in hub] == [BrokerService, NodeService, ApiService]


def test_a_started_process_collects_garbage_less_often():
    before = gc.get_threshold()
    try:
        Roles().startService()
        assert gc.get_threshold() == (GC_THRESHOLD, *before[1:]) and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_roles_in_one_process_reach_the_broker_in_process():
    broker, node, api = makeService(parse([]))
    assert node.link.broker is broker and api.broker is broker
    node, api = makeService(parse(["--roles", "node,api"]))
    assert node.link.broker is None and api.broker is None  # over ZeroMQ, to --backend and --frontend
