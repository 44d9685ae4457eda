"""Helpers for tests over real sockets: an in-process hub and scriptable devices."""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineOnlyReceiver

from devicehub.api.service import ApiService
from devicehub.api.settings import ApiSettings
from devicehub.broker.settings import BrokerSettings
from devicehub.common.metrics import Metrics
from devicehub.devices.session import DeviceSettings
from devicehub.node.service import NodeService
from devicehub.node.settings import NodeSettings
from devicehub.tap import apiRole, brokerRole, nodeRole

LOCAL = "tcp://127.0.0.1:*"
ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")


def sample_session(sample: Path, *options: str, **environ: str) -> subprocess.CompletedProcess:
    """A pytest session of the test file C{sample} in a process of its own, as the suite runs (its setup.cfg and conftest)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-c", str(ROOT / "setup.cfg"), "--rootdir", str(ROOT),
         "-p", "tests.conftest", *options, str(sample)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **environ}, capture_output=True, text=True, timeout=120,
    )


def free_ports(count: int) -> list[int]:
    """
    Ports free right now, for processes that must be told theirs. They are taken from
    below the kernel's ephemeral range, so that no outgoing connection (ZeroMQ's, a
    device's) can be given one of them between now and the process binding it.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(10_000, max(low, 10_001))
        if port in ports:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("", port))  # free on every interface
            except OSError:
                continue
        ports.append(port)
    return ports


async def pause(seconds: float = 0.01) -> None:
    """Let the reactor run for C{seconds}."""
    await deferLater(reactor, seconds, lambda: None)


async def eventually(condition, timeout: float = 5.0, interval: float = 0.01):
    """Poll C{condition} until it is true; fail after C{timeout} seconds."""
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        await pause(interval)


async def until_online(demand, imei: str, timeout: float = 10.0) -> None:
    """Wait until the broker lists C{imei} as online."""
    from devicehub import BrokerUnavailable

    deadline = reactor.seconds() + timeout
    while True:
        try:
            if await demand.find(imei) == "ok":
                return
        except BrokerUnavailable:  # a broker warming up
            pass
        assert reactor.seconds() < deadline, f"{imei} never came online"
        await pause(0.02)


class Hub:
    """
    Broker, node and (optionally) API in this process, on ephemeral ports. They talk
    over ZeroMQ, or with C{pipes} through the in-process pipes twistd uses for roles
    in one process.
    """

    def __init__(self, *, api: bool = True, commandTimeout: float = 5.0, apiToken=None, brokerOptions=None,
                 http: str = "tcp:0:interface=127.0.0.1", accessLog: str | None = None, pipes: bool = False,
                 listen=(), allow: str | None = None, **deviceSettings) -> None:
        """@param listen: protocols each node listens for too (besides JSON Lines), on a port of its own each."""
        self.listen = listen
        self.allow = allow
        self.http = http
        self.accessLog = accessLog
        self.pipes = pipes
        self.metrics = Metrics()  # one per process, as makeService does
        # Every node of this hub is registered before start() returns: no warm-up to wait out.
        self.broker = brokerRole(
            reactor, BrokerSettings(**{"frontend": LOCAL, "backend": LOCAL, "events": LOCAL, "warmup": 0.0,
                                       **(brokerOptions or {})}), self.metrics,
        )
        self.withApi = api
        self.apiToken = apiToken
        self.commandTimeout = commandTimeout
        self.settings = DeviceSettings(**{"loginTimeout": 5.0, "idleTimeout": 60.0, **deviceSettings})
        self.nodes: list[NodeService] = []
        self.api: ApiService | None = None

    @property
    def frontend(self) -> str:
        return self.broker.frontendSocket.lastEndpoint

    @property
    def backend(self) -> str:
        return self.broker.backendSocket.lastEndpoint

    @property
    def events(self) -> str:
        return self.broker.eventsSocket.lastEndpoint

    @property
    def directory(self):
        return self.broker.broker.directory

    @property
    def node(self) -> NodeService:
        return self.nodes[0]

    @property
    def devicePort(self) -> int:
        return self.node.listener.port.getHost().port

    def port(self, protocol: str, node: int = 0) -> int:
        """The port of a node's listener for C{protocol}."""
        listeners = dict(zip([f.codec.name for f in self.nodes[node].factories], self.nodes[node].listeners))
        return listeners[protocol].port.getHost().port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api.listener.port.getHost().port}"

    async def start(self) -> "Hub":
        self.broker.startService()
        await self.addNode("node-1")
        if self.withApi:
            settings = ApiSettings(http=self.http, frontend=self.frontend, events=self.events,
                                   commandTimeout=self.commandTimeout, token=self.apiToken, accessLog=self.accessLog)
            self.api = apiRole(reactor, settings, self.metrics, self.broker if self.pipes else None)
            self.api.startService()
        return self

    async def addNode(self, name: str, devices: str = "tcp:0:interface=127.0.0.1") -> NodeService:
        settings = NodeSettings(
            name=name,
            devices=devices,
            listen=tuple((protocol, "tcp:0:interface=127.0.0.1") for protocol in self.listen),
            allow=self.allow,
            backend=self.backend,
            commandTimeout=self.commandTimeout,
            device=self.settings,
        )
        node = nodeRole(reactor, settings, self.metrics, self.broker if self.pipes else None)
        node.startService()
        self.nodes.append(node)
        await eventually(lambda: node.link.registered)
        return node

    async def stop(self) -> None:
        if self.api is not None:
            await self.api.stopService()
        for node in self.nodes:
            if node.running:
                await node.stopService()
        if self.broker.running:
            await self.broker.stopService()


class Device(LineOnlyReceiver):
    """
    A device over real TCP: logs in, then acks each command unless C{silent};
    C{reply} is the ack's data, or a callable making it from the command.
    Every line it receives is kept in C{lines}.
    """

    delimiter = b"\n"

    def __init__(self, imei: str | None, *, silent: bool = False, reply=None, delay: float = 0, token=None) -> None:
        self.imei = imei
        self.token = token
        self.silent = silent
        self.reply = reply
        self.delay = delay
        self.lines: list[dict] = []
        self.commands: list[dict] = []
        self.loggedIn: Deferred = Deferred()
        self.closed: Deferred = Deferred()
        self._waiters: list[Deferred] = []

    def connectionMade(self) -> None:
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)  # a device that answers at once, as firmware should
        if self.imei is not None:
            self.send({"type": "login", "imei": self.imei, **({"token": self.token} if self.token else {})})

    def send(self, message: dict) -> None:
        self.sendLine(json.dumps(message).encode())

    def lineReceived(self, line: bytes) -> None:
        message = json.loads(line)
        self.lines.append(message)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(message)
        if message["type"] == "login" and not self.loggedIn.called:
            self.loggedIn.callback(message)
        elif message["type"] == "command":
            self.commands.append(message)
            if not self.silent:
                ack = {"type": "ack", "ident": message["ident"]}
                if self.reply is not None:
                    ack["data"] = self.reply(message) if callable(self.reply) else self.reply
                if self.delay:
                    reactor.callLater(self.delay, self.send, ack)
                else:
                    self.send(ack)

    def nextLine(self) -> Deferred:
        """Fires with the next line received."""
        waiter: Deferred = Deferred()
        self._waiters.append(waiter)
        return waiter

    def connectionLost(self, reason=None) -> None:
        self.closed.callback(None)

    async def close(self) -> None:
        self.transport.loseConnection()
        await self.closed


async def connect(port: int, imei: str | None, endpoint=None, **options) -> Device:
    """A L{Device} connected to C{port} (logged in when C{imei} is given)."""
    device = Device(imei, **options)
    await connectProtocol(endpoint or TCP4ClientEndpoint(reactor, "127.0.0.1", port), device)
    if imei is not None:
        await device.loggedIn
    return device


async def online(hub: Hub, imei: str, **options) -> Device:
    """A device logged in on the hub's first node and known to the broker."""
    device = await connect(hub.devicePort, imei, **options)
    await eventually(lambda: hub.directory.owner(imei) is not None)
    return device


class Twistd(ProcessProtocol):
    """A C{twistd devicehub} process; its output is collected in C{output}."""

    def __init__(self) -> None:
        self.output = ""
        self.exitCode = self.signal = None
        self.ended: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode(errors="replace")

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.exitCode, self.signal = reason.value.exitCode, reason.value.signal
        self.ended.callback(None)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if not self.ended.called:
            self.transport.signalProcess(sig)

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send C{sig} (SIGTERM, as an init system would); return once the process has ended."""
        self.kill(sig)
        await self.ended

    def cpuSeconds(self) -> float:
        """The CPU time, user and system, the process has used so far."""
        fields = Path(f"/proc/{self.transport.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _removing(result, path: str):
    """Remove the directory C{path}, passing C{result} on (a callback for both outcomes)."""
    shutil.rmtree(path, ignore_errors=True)
    return result


def start_twistd(args: list[str], environ: dict | None = None) -> Twistd:
    """Run C{twistd -n devicehub ARGS} on this work tree's code (on a free --events port unless given)."""
    process = Twistd()
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(environ or {})}
    if "--events" not in args and "DEVICEHUB_EVENTS" not in env:
        args = [*args, "--events", f"tcp://127.0.0.1:{free_ports(1)[0]}"]
    if "--store" not in args:  # never the work tree's default file; removed once the process has ended
        scratch = tempfile.mkdtemp(prefix="devicehub-test-")
        args = [*args, "--store", os.path.join(scratch, "queue.sqlite3")]
        process.ended.addBoth(_removing, scratch)
    reactor.spawnProcess(process, TWISTD, [TWISTD, "-n", "--pidfile=", "devicehub", *args], env=env, path=str(ROOT))
    return process
