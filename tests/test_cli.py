"""The devicehub command-line client, run as a subprocess against a real hub."""

import json
import os
import sys
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from .support import Hub, eventually, online

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "devicehub")


@pytest_twisted.async_yield_fixture
async def hub():
    hub = await Hub(api=False).start()
    yield hub
    await hub.stop()


async def cli(*args, frontend=None):
    """Exit code and parsed output line of one run of the CLI."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if frontend is not None:
        env["DEVICEHUB_FRONTEND"] = frontend
    out, err, code = await getProcessOutputAndValue(CLI, args, env=env, reactor=reactor)
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
async def test_usage_errors_are_exit_64():
    for args in [(), ("send",), ("send", "bad imei", "x"), ("send", "abc", "x", "{not json"), ("list", "--num", "-1"),
                 ("fly",), ("--timeout", "0", "total")]:
        code, output, err = await cli(*args)
        assert code == 64 and output is None and "usage:" in err, args
