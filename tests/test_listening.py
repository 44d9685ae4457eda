"""L{ListeningService} and the lean TCP connections of device listeners, over real loopback sockets."""

import socket

from pytest_twisted import ensureDeferred
from twisted.internet import defer, protocol, tcp
from twisted.python import log

from devicehub.common.listening import LeanServer, ListeningService

from .support import eventually


class Recording(protocol.Protocol):
    """Logs (the legacy way, as Twisted's reactor context applies) what it receives."""

    def connectionMade(self) -> None:
        self.factory.connected.callback(self)

    def dataReceived(self, data: bytes) -> None:
        log.msg("received", data=data)

    def connectionLost(self, reason) -> None:
        self.factory.lost.callback(self)


async def _connected(lean: bool):
    """A listener (lean or not) and one connection to it: (service, server-side protocol, client socket)."""
    from twisted.internet import reactor

    factory = protocol.Factory.forProtocol(Recording)
    factory.connected, factory.lost = defer.Deferred(), defer.Deferred()
    service = ListeningService(reactor, "tcp:0:interface=127.0.0.1", factory, "test", lean=lean)
    service.startService()
    client = socket.create_connection(("127.0.0.1", service.port.getHost().port))
    return service, await factory.connected, client


@ensureDeferred
async def test_a_lean_connection_logs_and_reads_as_twisteds_own_and_stores_none_of_its_strings():
    """The log prefix, repr and fileno are what tcp.Server gives, made when asked; none is kept per connection."""
    events: list[dict] = []
    log.addObserver(events.append)
    plain, plainServer, plainClient = await _connected(lean=False)
    lean, leanServer, leanClient = await _connected(lean=True)
    try:
        ordinary, transport = plainServer.transport, leanServer.transport
        assert type(ordinary) is tcp.Server and type(transport) is LeanServer
        assert {"logstr", "repstr", "fileno"} & set(vars(transport)) == set()
        assert {"logstr", "repstr", "fileno"} <= set(vars(ordinary))
        assert transport.logPrefix() == f"Recording,{transport.sessionno},127.0.0.1"
        assert transport.logstr == transport.logPrefix()
        assert ordinary.logPrefix() == f"Recording,{ordinary.sessionno},127.0.0.1"
        assert repr(transport) == f"<Recording #{transport.sessionno} on {lean.port.getHost().port}>"
        assert repr(ordinary) == f"<Recording #{ordinary.sessionno} on {plain.port.getHost().port}>"
        assert transport.fileno() == transport.socket.fileno() > 0
        leanClient.sendall(b"hello")
        await eventually(lambda: any(event.get("data") == b"hello" for event in events))
        received = next(event for event in events if event.get("data") == b"hello")
        assert received["system"] == transport.logPrefix()  # the reactor ran dataReceived in its context
        leanClient.close()
        await leanServer.factory.lost
        assert transport.fileno() == -1  # as a tcp.Server's, once its socket is gone
        assert transport.logPrefix() == f"-,{transport.sessionno},127.0.0.1"  # still answers
        assert "#" in repr(transport)
    finally:
        log.removeObserver(events.append)
        plainClient.close()
        leanClient.close()
        await plain.stopService()
        await lean.stopService()


@ensureDeferred
async def test_lean_applies_to_tcp_listeners_only():
    """A UNIX listener keeps Twisted's own connections: lean has nothing to change there."""
    import tempfile
    from twisted.internet import reactor

    with tempfile.TemporaryDirectory() as directory:
        service = ListeningService(reactor, f"unix:{directory}/s", protocol.Factory.forProtocol(Recording), "test",
                                   lean=True)
        service.startService()
        try:
            assert service.port.transport is not LeanServer
        finally:
            await service.stopService()


@ensureDeferred
async def test_a_nodes_devices_are_on_lean_connections_that_answer_commands():
    """The node's device listener makes lean connections, and commands go over them as over any other."""
    from devicehub import OK, Demand

    from .support import Hub, online

    hub = await Hub().start()
    demand = Demand(hub.frontend)
    try:
        device = await online(hub, "350000000000077", reply="done")
        assert type(hub.node.node.devices["350000000000077"].transport) is LeanServer
        assert await demand.send("350000000000077", "0x10", {"n": 1}) == OK
        assert device.commands[0]["instruct"] == "0x10"
    finally:
        demand.close()
        await hub.stop()
