"""twistd devicehub run as a user would: a separate process, driven over its sockets."""

import os
import signal
import socket

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.utils import getProcessOutputAndValue

import devicehub
from devicehub import OK, Demand, Reply

from .support import ROOT, TWISTD, connect, eventually, free_ports, pause, start_twistd, until_online


async def twistd_ending(args, environ=None):
    """Exit code, stdout and stderr of a C{twistd -n devicehub ARGS} expected to end by itself (killed after 60 s)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(environ or {})}
    out, err, code = await getProcessOutputAndValue(
        "timeout", ["-s", "KILL", "60", TWISTD, "-n", "--pidfile=", "devicehub", *args], env=env, path=str(ROOT),
        reactor=reactor,
    )
    return code, out.decode(), err.decode()


@pytest_twisted.ensureDeferred
async def test_twistd_runs_all_roles_and_a_device_answers():
    devices, http, frontend, backend = free_ports(4)
    process = start_twistd(
        ["--devices", f"tcp:{devices}:interface=127.0.0.1", "--http", f"tcp:{http}:interface=127.0.0.1"],
        # the environment sets the rest, as DEVICEHUB_<OPTION>
        {
            "DEVICEHUB_FRONTEND": f"tcp://127.0.0.1:{frontend}",
            "DEVICEHUB_BACKEND": f"tcp://127.0.0.1:{backend}",
            "DEVICEHUB_NODE_ID": "subprocess-node",
        },
    )
    demand = Demand(f"tcp://127.0.0.1:{frontend}", timeout=5)
    try:
        await eventually(lambda: "Broker warmed up" in process.output, timeout=20)
        device = await connect(devices, "861234567890123", reply={"ok": 1})
        await until_online(demand, "861234567890123")
        assert await demand.request("861234567890123", "0x10") == Reply(OK, {"ok": 1})
        assert await demand.getlist(10, 0) == ["861234567890123"]
        assert await demand.health() == {"nodes": 1, "devices": 1, "store": "ok"}
        # idle, it sleeps: no descriptor keeps its poll awake
        used = process.cpuSeconds()
        await pause(1.0)
        assert process.cpuSeconds() - used < 0.2
        goodbye = device.nextLine()
        await process.stop()
        # twistd shuts down cleanly, then ends by the signal it received
        assert process.signal == signal.SIGTERM
        assert "Server Shut Down." in process.output
        assert await goodbye == {"type": "error", "error": "shutting down"}
        await device.closed
    finally:
        demand.close()
        await process.stop()
    assert "Node subprocess-node registered with 0 devices" in process.output
    # twistd chose no reactor: devicehub runs on its own (devicehub.common.reactor)
    assert "reactor class: devicehub.common.reactor.LeanEPollReactor." in process.output


@pytest_twisted.ensureDeferred
async def test_twistd_stops_with_one_line_on_stderr_when_a_port_is_taken(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    frontend, backend, events = (f"tcp://127.0.0.1:{port}" for port in free_ports(3))
    try:
        runs = [
            (["--roles", "node", "--devices", f"tcp:{port}:interface=127.0.0.1", "--backend", backend], {}),
            (["--roles", "api", "--http", f"tcp:{port}:interface=127.0.0.1", "--frontend", frontend], {}),
            (
                ["--roles", "broker", "--backend", backend, "--events", events, "--store", str(tmp_path / "q.sqlite3")],
                {"DEVICEHUB_FRONTEND": f"tcp://127.0.0.1:{port}"},
            ),
        ]
        results = await gatherResults([ensureDeferred(twistd_ending(args, environ)) for args, environ in runs])
    finally:
        taken.close()
    for code, out, err in results:
        assert code == 1, (out, err)
        assert "Traceback" not in out + err
    assert [err for _, _, err in results] == [
        f"twistd devicehub: cannot listen for devices on 'tcp:{port}:interface=127.0.0.1': "
        f"Couldn't listen on 127.0.0.1:{port}: [Errno 98] Address already in use.\n",
        f"twistd devicehub: cannot listen for HTTP on 'tcp:{port}:interface=127.0.0.1': "
        f"Couldn't listen on 127.0.0.1:{port}: [Errno 98] Address already in use.\n",
        f"twistd devicehub: cannot bind the broker on 'tcp://127.0.0.1:{port}': Address already in use "
        f"(addr='tcp://127.0.0.1:{port}') (set by DEVICEHUB_FRONTEND)\n",
    ]
    # and the log says it too
    assert "Cannot start: cannot listen for devices" in results[0][1]


@pytest_twisted.ensureDeferred
async def test_twistd_refuses_bad_options_with_one_line_on_stderr():
    runs = [
        (["--roles", "broker,kitchen"], {}),
        (["--bogus"], {}),
        ([], {"DEVICEHUB_COMMAND_TIMEOUT": "soon"}),
        (["--devices", "carrier-pigeon:7700"], {}),
    ]
    results = await gatherResults([ensureDeferred(twistd_ending(args, environ)) for args, environ in runs])
    assert [(code, out) for code, out, _ in results] == [(64, "")] * len(runs)
    assert [err for _, _, err in results] == [
        "twistd devicehub: --roles takes a comma list of broker, node, api; got 'broker,kitchen' "
        "(see: twistd devicehub --help)\n",
        "twistd devicehub: option --bogus not recognized (see: twistd devicehub --help)\n",
        "twistd devicehub: DEVICEHUB_COMMAND_TIMEOUT: 'soon' is not a positive number (see: twistd devicehub --help)\n",
        "twistd devicehub: --devices: 'carrier-pigeon:7700' is not a usable endpoint: Unknown endpoint type: "
        "'carrier-pigeon' (see: twistd devicehub --help)\n",
    ]


@pytest_twisted.ensureDeferred
async def test_twistd_devicehub_version():
    code, out, _ = await twistd_ending(["--version"])
    assert code == 0 and out.startswith(f"devicehub {devicehub.__version__} (Twisted ")
