"""The devicehub command-line client, run as a subprocess against a real hub."""

import json
import os
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
import zmq

import devicehub
from devicehub.cli import main as devicehub_cli
from devicehub.broker.service import BrokerService
from devicehub.wire.curve import keygen
from devicehub.wire.handshake import PATIENCE, HandshakeWatch
from devicehub.common.limits import MAX_NUM, MAX_TIMEOUT
from devicehub.broker.settings import BrokerSettings
from devicehub.common.metrics import Metrics

from .support import LOCAL, Hub, eventually, online

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "devicehub")


@pytest_twisted.async_yield_fixture
async def hub():
    hub = await Hub(api=False).start()
    yield hub
    await hub.stop()


async def cli(*args, frontend=None, environ=None, limit=None):
    """Exit code, parsed output line and stderr of one run of the CLI (killed after C{limit} seconds)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(environ or {})}
    if frontend is not None:
        env["DEVICEHUB_FRONTEND"] = frontend
    command, args = (CLI, args) if limit is None else ("timeout", ("-s", "KILL", str(limit), CLI, *args))
    out, err, code = await getProcessOutputAndValue(command, args, env=env, reactor=reactor)
    lines = out.decode().splitlines()
    return code, (json.loads(lines[0]) if lines else None), err.decode()


@pytest_twisted.ensureDeferred
async def test_send_find_list_total(hub):
    device = await online(hub, "861234567890123", reply={"v": 2})
    mute = await online(hub, "mute", silent=True)
    frontend = hub.frontend
    assert (await cli("send", "861234567890123", "0x10", '{"k": 1}', frontend=frontend))[:2] == (
        0,
        {"result": "ok", "reply": {"v": 2}},
    )
    assert device.commands[-1]["data"] == {"k": 1}
    assert (await cli("--frontend", frontend, "send", "861234567890123", "0x11", "--nowait"))[:2] == (
        0,
        {"result": "ok"},
    )
    await eventually(lambda: len(device.commands) == 2)
    assert (await cli("send", "ghost", "0x10", frontend=frontend))[:2] == (1, {"result": "no"})
    assert (await cli("send", "mute", "0x10", "--timeout", "0.3", frontend=frontend))[:2] == (
        2,
        {"result": "timeout"},
    )
    assert (await cli("find", "mute", frontend=frontend))[:2] == (0, {"imei": "mute", "online": True})
    assert (await cli("find", "ghost", frontend=frontend))[:2] == (1, {"imei": "ghost", "online": False})
    assert (await cli("list", "--num", "1", "--page", "1", frontend=frontend))[:2] == (
        0,
        {"total": 2, "num": 1, "page": 1, "devices": ["mute"]},
    )
    assert (await cli("total", frontend=frontend))[:2] == (0, {"total": 2})
    await device.close()
    await mute.close()


@pytest_twisted.ensureDeferred
async def test_broker_unavailable_is_exit_3():
    code, output, _ = await cli("--timeout", "0.2", "total", frontend="tcp://127.0.0.1:1")
    assert code == 3 and "broker unavailable" in output["error"]


@pytest_twisted.ensureDeferred
async def test_usage_and_configuration_mistakes_are_exit_64_with_one_line_on_stderr(tmp_path):
    runs = [
        ((), {}),
        (("send", "bad imei", "x"), {}),
        (("send", "d1", "x", "NaN"), {}),
        (("--frontend", "localhost:5555", "find", "X"), {}),
        (("find", "X"), {"DEVICEHUB_FRONTEND": "localhost:5555"}),
        (("total", "--curve-keys", str(tmp_path / "none")), {}),
        (("keygen", "/proc/no/such/dir"), {}),
    ]
    results = await gatherResults([ensureDeferred(cli(*args, environ=environ)) for args, environ in runs])
    for (args, environ), (code, output, err) in zip(runs, results):
        assert (code, output, len(err.splitlines())) == (64, None, 1), (args, err)
        assert err.startswith("devicehub"), err
    assert "--frontend" in results[3][2] and "DEVICEHUB_FRONTEND" in results[4][2]


@pytest.mark.parametrize(
    "argv, environ, says",
    [
        (["--frontend", "localhost:5555", "find", "X"], {}, "--frontend: 'localhost:5555' is not a ZeroMQ address"),
        (["find", "X"], {"DEVICEHUB_FRONTEND": "localhost:5555"}, "DEVICEHUB_FRONTEND: 'localhost:5555'"),
        (["find", "X"], {"DEVICEHUB_FRONTEND": "tcp://127.0.0.1:99999"}, "'tcp://127.0.0.1:99999' has no valid port"),
        (["total", "--frontend", "tcp://*:5555"], {}, "--frontend: 'tcp://*:5555' lacks a host"),
        (["events"], {"DEVICEHUB_EVENTS": "nowhere"}, "DEVICEHUB_EVENTS: 'nowhere'"),
        (["total"], {"DEVICEHUB_CURVE_KEYS": "/nonexistent"}, "DEVICEHUB_CURVE_KEYS: /nonexistent/client.key_secret"),
        (["total", "--curve-keys", "/nonexistent"], {}, "--curve-keys: /nonexistent/client.key_secret is missing"),
        (["send", "d1", "x", "NaN"], {}, "invalid DATA 'NaN'"),
        (["send", "d1", "x", "[1e400]"], {}, "invalid DATA '[1e400]'"),
        (["send", "d1", "x", "[" * 100_000], {}, "invalid DATA"),
        (["send", "d1", ""], {}, "INSTRUCT must not be empty"),
        (["send", "d1", "x", "--ttl", "60"], {}, "--ttl needs --queue"),
        (["send", "d1", "x", "--queue", "--ttl", "1e9"], {}, "ttl must be in"),
        (["send", "d1", "x", "--timeout", "301"], {}, f"timeout must be in 0 < S <= {MAX_TIMEOUT:g}"),
        (["--timeout", "nan", "total"], {}, "timeout must be in"),
        (["--timeout", "soon", "total"], {}, "'soon' is not a number of seconds"),
        (["list", "--num", str(MAX_NUM + 1)], {}, f"0..{MAX_NUM}"),
        (["list", "--page", "-1"], {}, "must be a whole number >= 0, not '-1'"),
        (["keygen", "keys", "--client", "../elsewhere"], {}, "is not a key name"),
        (["keygen", "keys", "--client", "broker"], {}, "is not a key name"),
    ],
)
def test_every_mistake_is_one_usage_error_naming_its_option_or_variable(argv, environ, says):
    with pytest.raises(devicehub_cli.UsageError) as raised:
        devicehub_cli.parse(argv, environ)
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_options_are_accepted_before_and_after_the_command(tmp_path):
    keygen(tmp_path)
    frontend = "tcp://127.0.0.1:6000"
    after = devicehub_cli.parse(["total", "--curve-keys", str(tmp_path), "--frontend", frontend, "--timeout", "1"], {})
    before = devicehub_cli.parse(["--curve-keys", str(tmp_path), "--frontend", frontend, "--timeout", "1", "total"], {})
    for arguments in (after, before):
        assert (arguments.curve_keys, arguments.frontend, arguments.timeout) == (str(tmp_path), frontend, 1.0)
    events = devicehub_cli.parse(["events", "d1", "--events", "tcp://127.0.0.1:6001"], {"DEVICEHUB_EVENTS": "x"})
    assert events.events == "tcp://127.0.0.1:6001"
    # after the command wins over before it, and both over the environment
    both = devicehub_cli.parse(["--timeout", "1", "find", "d1", "--timeout", "2"], {"DEVICEHUB_FRONTEND": frontend})
    assert (both.timeout, both.frontend) == (2.0, frontend)


@pytest_twisted.ensureDeferred
async def test_options_after_the_command_reach_the_broker(hub):
    assert (await cli("total", "--frontend", hub.frontend, "--timeout", "3"))[:2] == (0, {"total": 0})


@pytest_twisted.ensureDeferred
async def test_version():
    out, _, code = await getProcessOutputAndValue(CLI, ["--version"], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (code, out.decode()) == (0, f"devicehub {devicehub.__version__}\n")
    assert devicehub.__version__ == version("devicehub")


@pytest_twisted.ensureDeferred
async def test_events_without_keys_against_a_curve_broker_says_why_and_exits_64(tmp_path):
    keygen(tmp_path)
    broker = BrokerService(reactor, BrokerSettings(frontend=LOCAL, backend=LOCAL, events=LOCAL, curveKeys=str(tmp_path)), Metrics())
    broker.startService()
    try:
        code, output, err = await cli("events", environ={"DEVICEHUB_EVENTS": broker.eventsSocket.lastEndpoint}, limit=30)
    finally:
        await broker.stopService()
    assert (code, output) == (64, None)
    assert err.splitlines() == [
        f"devicehub: the broker at {broker_address(err)} requires CURVE: give --curve-keys DIR (or DEVICEHUB_CURVE_KEYS)"
    ]


def broker_address(err: str) -> str:
    return err.split("the broker at ", 1)[1].split(" ", 1)[0]


def watch(clock, *, curve=False):
    seen = {"refused": [], "silent": []}
    watcher = HandshakeWatch(
        clock, "tcp://127.0.0.1:5557", curve=curve, refused=seen["refused"].append, silent=seen["silent"].append
    )
    return watcher, seen


def test_a_watch_says_once_that_nothing_answers_and_keeps_watching():
    clock = Clock()
    watcher, seen = watch(clock)
    clock.advance(PATIENCE - 0.1)
    assert seen == {"refused": [], "silent": []}
    clock.advance(0.1)
    assert seen["silent"] == [
        f"nothing answers at tcp://127.0.0.1:5557 after {PATIENCE:g} s (is the broker running?); still waiting"
    ]
    clock.advance(60)
    assert len(seen["silent"]) == 1 and watcher.watching
    # a broker that starts later and wants keys is still reported
    watcher.event(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
    assert seen["refused"] == [
        "the broker at tcp://127.0.0.1:5557 requires CURVE: give --curve-keys DIR (or DEVICEHUB_CURVE_KEYS)"
    ]
    assert not watcher.watching


def test_a_watch_is_quiet_once_the_handshake_is_done():
    clock = Clock()
    watcher, seen = watch(clock)
    watcher.event(zmq.EVENT_CONNECTED, 5)
    watcher.event(zmq.EVENT_HANDSHAKE_SUCCEEDED, 0)
    clock.advance(PATIENCE * 10)
    assert seen == {"refused": [], "silent": []} and not watcher.watching and not clock.getDelayedCalls()


def test_a_watch_tells_refusals_apart():
    clock = Clock()
    reasons = []
    for curve, kind, value in [
        (True, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH),
        (True, zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400),
        (False, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.PROTOCOL_ERROR_ZMTP_UNSPECIFIED),
    ]:
        watcher, seen = watch(clock, curve=curve)
        watcher.event(kind, value)
        reasons += seen["refused"]
    assert reasons == [
        "the broker at tcp://127.0.0.1:5557 does not use CURVE: give no --curve-keys (nor DEVICEHUB_CURVE_KEYS)",
        "the broker at tcp://127.0.0.1:5557 refused this client's key: authorize client.key in the broker's "
        "authorized/ directory",
        "the ZeroMQ handshake with the broker at tcp://127.0.0.1:5557 failed (event 0x2000, code 0x10000000): "
        "is it a devicehub broker?",
    ]
    assert not clock.getDelayedCalls()


def test_a_connected_peer_without_a_handshake_is_told_apart():
    clock = Clock()
    watcher, seen = watch(clock)
    watcher.event(zmq.EVENT_CONNECTED, 5)
    clock.advance(PATIENCE)
    assert seen["silent"] == [
        f"connected to tcp://127.0.0.1:5557 but no handshake completed in {PATIENCE:g} s; still waiting"
    ]


def test_handshakes_failing_without_a_reason_are_a_refusal_once_the_patience_runs_out():
    clock = Clock()
    watcher, seen = watch(clock, curve=True)
    watcher.event(zmq.EVENT_CONNECTED, 5)
    watcher.event(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 32)
    assert seen["refused"] == [] and watcher.watching  # often the first sign of a conclusive refusal
    clock.advance(PATIENCE)
    assert seen == {
        "refused": [
            "the CURVE handshake with the broker at tcp://127.0.0.1:5557 failed: are broker.key and "
            "client.key_secret the broker's?"
        ],
        "silent": [],
    }
    assert not watcher.watching


@pytest_twisted.ensureDeferred
async def test_simulate_runs_devices_of_a_protocol_and_sums_up(hub):
    code, summary, err = await cli("simulate", "--count", "3", "--to", f"tcp:127.0.0.1:{hub.devicePort}",
                                   "--interval", "0.2", "--duration", "1", frontend=hub.frontend)
    assert (code, summary["connected"], summary["failed"]) == (0, 3, 0)
    assert "3 simulated jsonl devices" in err
    # identities a protocol cannot carry are counted as failed, with the reason, not a traceback
    code, summary, err = await cli("simulate", "--protocol", "gt06", "--prefix", "AB", "--count", "2",
                                   "--to", f"tcp:127.0.0.1:{hub.devicePort}", "--duration", "0")
    assert (code, summary["connected"], summary["failed"]) == (1, 0, 2) and summary["errors"]
    assert "Traceback" not in err and "Unhandled" not in err
