"""twistd devicehub run as a user would: a separate process, driven over its sockets."""

import signal
import socket

import pytest_twisted

from devicehub import OK, Demand, Reply

from .support import connect, eventually, free_ports, pause, start_twistd, until_online


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


@pytest_twisted.ensureDeferred
async def test_twistd_stops_with_a_message_when_a_port_is_taken():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        frontend, backend = free_ports(2)
        process = start_twistd(
            [
                "--roles",
                "broker,node",
                "--devices",
                f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1",
                "--frontend",
                f"tcp://127.0.0.1:{frontend}",
                "--backend",
                f"tcp://127.0.0.1:{backend}",
            ]
        )
        await process.ended
        assert process.exitCode == 1
    finally:
        taken.close()
    assert "cannot listen for devices" in process.output
    assert "Address already in use" in process.output


@pytest_twisted.ensureDeferred
async def test_twistd_refuses_bad_options():
    process = start_twistd(["--roles", "broker,kitchen"])
    await process.ended
    assert process.exitCode == 1
    assert "--roles takes a comma list of broker, node, api" in process.output
