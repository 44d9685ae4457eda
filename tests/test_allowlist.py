"""Who may connect (issue 13.10): an allow-list of identities for every protocol."""

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.logger import Logger

import devicehub.node.allowlist as allowModule
from devicehub.node.allowlist import AllowList
from devicehub.devices.simulate import model
from devicehub.devices.simulate.fleet import SimulatedDevice, Tally

from .support import Hub, connect, eventually


def test_identities_and_patterns_from_a_file_read_again_when_it_changes(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(allowModule, "log", Logger(observer=logged.append))
    path = tmp_path / "allow.txt"
    path.write_text("# the fleet\n861234567890123\n\n8612*   # a whole range\nwatch-?? \n")
    allow = AllowList(str(path))
    assert [allow.allows(imei) for imei in ["861234567890123", "861299", "watch-01", "watch-001", "86", "x"]] == [
        True, True, True, False, False, False]
    path.write_text("x\n")
    allow.refresh()
    assert allow.allows("x") and not allow.allows("861299")
    path.unlink()
    allow.refresh(force=True)  # unreadable: the list in force stays
    assert allow.allows("x")
    assert any(event.get("log_level").name == "error" for event in logged)


@pytest_twisted.ensureDeferred
async def test_a_device_not_on_the_list_gets_its_protocols_refusal_and_is_counted(tmp_path):
    path = tmp_path / "allow.txt"
    path.write_text("good-1\n35630704244101?\n")
    hub = await Hub(api=False, allow=str(path), listen=["teltonika"]).start()
    try:
        stranger = await connect(hub.devicePort, None)
        stranger.send({"type": "login", "imei": "bad-1"})
        await stranger.closed
        assert stranger.lines == [{"type": "login", "status": 403, "error": "not allowed"},
                                  {"type": "error", "error": "not allowed"}]
        good = await connect(hub.devicePort, "good-1")
        # Teltonika: refused with 00, then closed; an identity that matches a pattern gets 01
        for imei, answer in [("356307042441099", b"\x00"), ("356307042441013", b"\x01")]:
            tracker = SimulatedDevice(model("teltonika")(imei), 0, reactor, Tally())
            received = []
            tracker.dataReceived = received.append
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", hub.port("teltonika")), tracker)
            await eventually(lambda: received)
            assert received[0][:1] == answer
            if answer == b"\x00":
                await tracker.closed
            else:
                tracker.transport.loseConnection()
                await tracker.closed
        errors = hub.metrics.protocolErrors
        assert errors.labels("jsonl", "not allowed")._value.get() == 1
        assert errors.labels("teltonika", "not allowed")._value.get() == 1
        await good.close()
    finally:
        await hub.stop()


def test_the_option_reads_the_list_once_and_the_node_uses_it(tmp_path):
    from devicehub.node.service import NodeService
    from devicehub.tap import Options, makeService

    path = tmp_path / "allow.txt"
    path.write_text("good-1\n")
    options = Options(environ={})
    options.parseOptions(["--roles", "node", "--devices", "tcp:0", "--allow", str(path)])
    [node] = [service for service in makeService(options) if isinstance(service, NodeService)]
    assert node.node.allowList is options["allow"] and node.node.allowList.allows("good-1")
