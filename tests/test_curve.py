"""CURVE between broker, node, api and Demand, with real processes and keys made by the CLI."""

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent, HTTPConnectionPool

from devicehub import OK, BrokerUnavailable, Demand, Reply

from .support import ROOT, connect, eventually, free_ports, pause, start_twistd, until_online

CLI = str(Path(sys.executable).parent / "devicehub")


async def keygen(directory):
    out, err, code = await getProcessOutputAndValue(
        CLI, ["keygen", str(directory)], env={**os.environ, "PYTHONPATH": str(ROOT)}, reactor=reactor
    )
    assert code == 0, err
    return json.loads(out)["made"]


@pytest_twisted.ensureDeferred
async def test_only_processes_with_authorized_keys_get_in(tmp_path):
    keys, strangers = tmp_path / "keys", tmp_path / "strangers"
    made = await keygen(keys)
    assert {Path(p).name for p in made} == {"broker.key", "broker.key_secret", "client.key", "client.key_secret"}
    assert oct((keys / "client.key_secret").stat().st_mode & 0o777) == "0o600"
    await keygen(strangers)
    shutil.copyfile(keys / "broker.key", strangers / "broker.key")  # knows the broker, not authorized by it

    devices, http, frontend_port, backend_port = free_ports(4)
    frontend, backend = f"tcp://127.0.0.1:{frontend_port}", f"tcp://127.0.0.1:{backend_port}"
    common = ["--frontend", frontend, "--backend", backend, "--curve-keys", str(keys)]
    broker = start_twistd(["--roles", "broker", *common])
    node = start_twistd(["--roles", "node", "--devices", f"tcp:{devices}:interface=127.0.0.1", *common])
    api = start_twistd(["--roles", "api", "--http", f"tcp:{http}:interface=127.0.0.1", *common])
    keyless = start_twistd(["--roles", "node", "--node-id", "keyless", "--devices", f"tcp:{free_ports(1)[0]}",
                            "--frontend", frontend, "--backend", backend])
    trusted = Demand(frontend, timeout=5, curve_keys=keys)
    plain = Demand(frontend, timeout=0.5)
    stranger = Demand(frontend, timeout=0.5, curve_keys=strangers)
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        await eventually(lambda: "Registered with the broker" in node.output, 20)
        await eventually(lambda: "Listening for HTTP" in api.output, 20)
        device = await connect(devices, "secret-agent", reply="encrypted")
        await until_online(trusted, "secret-agent")
        assert await trusted.request("secret-agent", "0x10") == Reply(OK, "encrypted")
        response = await treq.client.HTTPClient(Agent(reactor, pool=pool)).post(
            f"http://127.0.0.1:{http}/devices/secret-agent/commands", data=b'{"instruct":"0x10"}'
        )
        assert response.code == 200  # the api process talks CURVE to the broker
        await response.content()
        for outsider in (plain, stranger):
            with pytest.raises(BrokerUnavailable):
                await outsider.gettotal()
        assert "Refused the ZeroMQ peer at 127.0.0.1: no authorized CURVE key" in broker.output  # issue 12.22
        await pause(1)
        assert "Registered with the broker" not in keyless.output
        assert await trusted.health() == {"nodes": 1, "devices": 1, "store": "ok"}
        await device.close()
    finally:
        for demand in (trusted, plain, stranger):
            demand.close()
        await pool.closeCachedConnections()
        for process in (api, keyless, node, broker):
            await process.stop(signal.SIGTERM)


@pytest_twisted.ensureDeferred
async def test_options_refuse_an_incomplete_key_directory(tmp_path):
    await keygen(tmp_path / "keys")
    (tmp_path / "keys" / "broker.key_secret").unlink()  # a node machine: no broker secret
    process = start_twistd(["--roles", "broker", "--curve-keys", str(tmp_path / "keys")])
    await process.ended
    assert process.exitCode == 64 and "broker.key_secret is missing" in process.output
