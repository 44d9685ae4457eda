"""Options of twistd devicehub, from the command line and the environment."""

import gc

import pytest
from twisted.application.service import Service
from twisted.python.usage import UsageError

from devicehub.broker.service import BrokerService
from devicehub.node.service import NodeService
from devicehub.api.service import ApiService
from devicehub.tap import GC_THRESHOLD, Options, Roles, TwistdOptions, makeService
from devicehub.common.startup import EXIT_STARTUP, EXIT_USAGE, StartupError, StartupFailed


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
        ["--frontend", "tcp://127.0.0.1:99999"],
        ["--events", "tcp://127.0.0.1"],
        ["--command-timeout", "301"],
        ["--max-line", "lots"],
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
    assert node.link.local == broker.connectNode and api.local == broker.connectClient
    node, api = makeService(parse(["--roles", "node,api"]))
    assert node.link.local is None and api.local is None  # over ZeroMQ, to --backend and --frontend


def test_several_brokers_the_broker_binds_the_first_the_others_use_all():
    """CONTRACT §6: a node reports to every backend, an api uses every frontend; a broker binds the first."""
    options = parse(["--frontend", "tcp://127.0.0.1:5555, tcp://b2:5555", "--backend", "tcp://127.0.0.1:5556,tcp://b2:5556"])
    assert options.brokerSettings().frontend == "tcp://127.0.0.1:5555"
    assert options.brokerSettings().backend == "tcp://127.0.0.1:5556"
    assert options.nodeSettings().backends == ("tcp://127.0.0.1:5556", "tcp://b2:5556")
    assert options.apiSettings().frontend == "tcp://127.0.0.1:5555,tcp://b2:5555"
    broker, node, api = makeService(options)
    first, second = node.upstreams.links
    assert (first.local, second.local) == (broker.connectNode, None)  # the broker of this process binds the first
    assert (first.backend, second.backend) == ("tcp://127.0.0.1:5556", "tcp://b2:5556")
    assert api.local == broker.connectClient


@pytest.mark.parametrize("value", ["tcp://a:1,nonsense", ",", "tcp://a:1,tcp://b"])
def test_every_broker_of_a_list_is_checked(value):
    with pytest.raises(UsageError, match="--backend"):
        parse(["--backend", value])


@pytest.mark.parametrize(
    "argv, environ, says",
    [
        (["--command-timeout", "0"], {}, "--command-timeout: '0' is not a positive number"),
        ([], {"DEVICEHUB_COMMAND_TIMEOUT": "soon"}, "DEVICEHUB_COMMAND_TIMEOUT: 'soon' is not a positive number"),
        (["--command-timeout", "301"], {}, "--command-timeout: '301' is more than 300 seconds"),
        ([], {"DEVICEHUB_MAX_LINE": "lots"}, "DEVICEHUB_MAX_LINE: 'lots' is not a positive whole number"),
        ([], {"DEVICEHUB_ROLES": "broker,kitchen"}, "DEVICEHUB_ROLES takes a comma list of broker, node, api"),
        ([], {"DEVICEHUB_FRONTEND": "localhost:5555"}, "DEVICEHUB_FRONTEND: 'localhost:5555' is not a ZeroMQ address"),
        (["--backend", "tcp://:5556"], {}, "--backend: 'tcp://:5556' lacks a host"),
        ([], {"DEVICEHUB_HTTP": "tcp:notaport"}, "DEVICEHUB_HTTP: 'tcp:notaport' is not a usable endpoint"),
        ([], {"DEVICEHUB_API_TOKEN": ""}, "DEVICEHUB_API_TOKEN must not be empty"),
        ([], {"DEVICEHUB_CURVE_KEYS": "/nonexistent"}, "DEVICEHUB_CURVE_KEYS: /nonexistent/broker.key_secret is missing"),
        (["--access-log", "/nonexistent/access.log"], {}, "--access-log: cannot append to '/nonexistent/access.log'"),
    ],
)
def test_an_error_names_the_option_or_the_environment_variable_at_fault(argv, environ, says):
    with pytest.raises(UsageError) as raised:
        parse(argv, environ)
    assert str(raised.value).startswith(says)


def test_an_option_on_the_command_line_ignores_its_variable():
    options = parse(["--frontend", "tcp://127.0.0.1:6555"], {"DEVICEHUB_FRONTEND": "localhost:5555"})
    assert options["frontend"] == "tcp://127.0.0.1:6555"
    assert options.environment == {}
    options = parse(["--front", "tcp://127.0.0.1:6555"], {"DEVICEHUB_FRONTEND": "localhost:5555"})  # abbreviated
    assert options["frontend"] == "tcp://127.0.0.1:6555"
    assert parse([], {"DEVICEHUB_NODE_ID": "n7"}).environment == {"DEVICEHUB_NODE_ID": "n7"}


def test_twistd_gets_a_mistake_as_one_line_on_stderr_and_exit_64(capsys):
    with pytest.raises(SystemExit) as exited:
        TwistdOptions(environ={"DEVICEHUB_COMMAND_TIMEOUT": "0"}).parseOptions([])
    assert exited.value.code == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "twistd devicehub: DEVICEHUB_COMMAND_TIMEOUT: '0' is not a positive number (see: twistd devicehub --help)\n"
    )


def test_version_option(capsys):
    with pytest.raises(SystemExit) as exited:
        parse(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("devicehub 0.1.0 (Twisted ")


def ours(err: str) -> list[str]:
    """Our lines on stderr (before logging begins, as in a test, Twisted echoes critical events there too)."""
    return [line for line in err.splitlines() if not line.startswith("Cannot start: ")]


class Failing(Service):
    def __init__(self, error, privileged=True):
        self.error, self.privileged = error, privileged

    def privilegedStartService(self):
        if self.privileged:
            raise self.error

    def startService(self):
        raise self.error


@pytest.mark.parametrize("privileged", [True, False])
def test_a_role_that_cannot_start_ends_twistd_with_one_line(capfd, privileged):
    hub = Roles({"DEVICEHUB_DEVICES": "tcp:7700", "DEVICEHUB_NODE_ID": "n1"})
    Failing(StartupError("cannot listen for devices on 'tcp:7700:backlog=1024': taken"), privileged).setServiceParent(hub)
    start = hub.privilegedStartService if privileged else hub.startService
    with pytest.raises(StartupFailed) as raised:
        start()
    # an Exception for twistd's runner (daemon parent, pid file), then a silent SystemExit
    assert isinstance(raised.value, SystemExit) and isinstance(raised.value, Exception)
    assert raised.value.code == EXIT_STARTUP
    assert ours(capfd.readouterr().err) == [
        "twistd devicehub: cannot listen for devices on 'tcp:7700:backlog=1024': taken (set by DEVICEHUB_DEVICES)"
    ]


def test_a_broker_that_cannot_bind_ends_twistd_with_one_line(capfd):
    hub = Roles()
    Failing(RuntimeError("cannot bind the broker on 'tcp://127.0.0.1:5555': Address already in use")).setServiceParent(hub)
    with pytest.raises(StartupFailed):
        hub.privilegedStartService()
    assert ours(capfd.readouterr().err) == [
        "twistd devicehub: cannot bind the broker on 'tcp://127.0.0.1:5555': Address already in use"
    ]


def test_a_bug_at_start_keeps_its_traceback():
    hub = Roles()
    Failing(KeyError("a bug")).setServiceParent(hub)
    with pytest.raises(KeyError):
        hub.privilegedStartService()


def test_listen_adds_device_listeners_of_any_protocol():
    options = parse(["--listen", "jsonl=tcp:7701", "--listen=jsonl=tcp:7702:interface=127.0.0.1"])
    assert options["listen"] == [("jsonl", "tcp:7701"), ("jsonl", "tcp:7702:interface=127.0.0.1")]
    assert parse([], {"DEVICEHUB_LISTEN": "jsonl=tcp:1 jsonl=tcp:2"})["listen"] == [("jsonl", "tcp:1"), ("jsonl", "tcp:2")]
    assert parse([])["listen"] == []
    for bad, error in [
        ("tcp:7701", "--listen takes PROTOCOL=ENDPOINT"),
        ("nosuch=tcp:7701", "--listen: unknown protocol 'nosuch'"),
        ("jsonl=nosuch:1", "--listen: 'nosuch:1' is not a usable endpoint"),
    ]:
        with pytest.raises(UsageError, match=error):
            parse(["--listen", bad])
    with pytest.raises(UsageError, match="DEVICEHUB_LISTEN takes"):
        parse([], {"DEVICEHUB_LISTEN": "oops"})
    # --devices '' leaves only the --listen listeners (a node needs one)
    only = parse(["--devices", "", "--listen", "jsonl=tcp:0"])
    assert only["devices"] is None and only["listen"] == [("jsonl", "tcp:0")]
    nodes = [s for s in makeService(only) if isinstance(s, NodeService)]
    assert [f.codec.name for f in nodes[0].factories] == ["jsonl"]
    with pytest.raises(UsageError, match="a node needs a listener"):
        parse(["--devices", ""])
    assert parse(["--devices", "", "--roles", "broker"])["devices"] is None


def test_connections_logging_in_have_their_share_of_the_descriptors(monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda which: (20_000, 20_000))
    options = parse([])
    settings_budget = max(16, options["max-devices"] // 10)
    assert options["max-devices"] + settings_budget <= 20_000 - 200
    assert parse(["--max-logins", "5"])["max-logins"] == 5
    node = [s for s in makeService(parse(["--roles", "node", "--max-logins", "5", "--devices", "tcp:0"]))
            if isinstance(s, NodeService)][0]
    assert node.factory.settings.maxLogins == 5
