"""What devicehub logs of each device, and that a flood cannot fill the disk (issue 12.22)."""

import pytest
import pytest_twisted
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from devicehub import TIMEOUT, Demand
from devicehub.common.logs import Throttled

from .support import Hub, connect, eventually, free_ports, online


class Lines:
    """The text of every log event while in use."""

    def __init__(self):
        self.lines = []

    def __call__(self, event):
        self.lines.append(formatEvent(event))

    def __enter__(self):
        globalLogPublisher.addObserver(self)
        return self.lines

    def __exit__(self, *exc):
        globalLogPublisher.removeObserver(self)


class Recorder:
    def __init__(self):
        self.events = []

    def emit(self, level, format, **kwargs):
        self.events.append((level, format.format(**kwargs)))


def test_a_flood_is_logged_at_a_steady_rate_and_says_what_it_left_out():
    now = [0.0]
    recorder = Recorder()
    throttled = Throttled(recorder, burst=3, rate=2.0, now=lambda: now[0])
    for n in range(10):
        throttled.warn("bad line {n}", n=n)
        throttled.info("other {n}", n=n)  # each kind of line has its own share
    assert [text for _, text in recorder.events if text.startswith("bad")] == ["bad line 0", "bad line 1", "bad line 2"]
    assert len(recorder.events) == 6
    now[0] += 1.0  # two more lines' worth
    recorder.events.clear()
    for n in range(10, 13):
        throttled.warn("bad line {n}", n=n)
    assert recorder.events == [
        (LogLevel.warn, "(7 more lines like the next were left out)"), (LogLevel.warn, "bad line 10"),
        (LogLevel.warn, "bad line 11"),
    ]


@pytest_twisted.ensureDeferred
async def test_each_device_is_logged_with_its_imei_and_address():
    hub = await Hub(commandTimeout=0.2, secret=b"s3cret").start()
    demand = Demand(hub.frontend)
    try:
        from devicehub.devices.login import deviceLog
        from devicehub.devices.session import device_token

        # Its share is the process's: devices that went offline in earlier tests of this
        # worker may have used it up, and their lines would be left out, as a flood's.
        deviceLog.reset()
        with Lines() as lines:
            device = await online(hub, "dev1", silent=True, token=device_token(b"s3cret", "dev1"))
            peer = f"127.0.0.1:{device.transport.getHost().port}"
            assert await demand.send("dev1", "0x10", timeout=0.2) == TIMEOUT
            intruder = await connect(hub.devicePort, None)
            intruderPeer = f"127.0.0.1:{intruder.transport.getHost().port}"
            intruder.send({"type": "login", "imei": "dev2", "token": "forged"})
            await intruder.closed
            again = await online(hub, "dev1", token=device_token(b"s3cret", "dev1"))
            await device.closed
            await again.close()
            await eventually(lambda: any("is offline: closed" in line for line in lines))
        for expected in [
            f"Device connection from {peer}",
            f"dev1 logged in from {peer}",
            f"dev1 at {peer}: command 1 ('0x10') not acked: timeout",
            f"Login as 'dev2' from {intruderPeer} refused: invalid token",
            f"Refused the connection from {intruderPeer}: invalid token",
            f"dev1 at {peer} is offline: replaced",
            "is offline: closed",
        ]:
            assert any(expected in line for line in lines), (expected, lines)
    finally:
        demand.close()
        await hub.stop()


@pytest_twisted.ensureDeferred
async def test_a_metrics_scrape_writes_nothing_to_the_log(http):
    from twisted.internet import reactor

    from devicehub.common.listening import ListeningService
    from devicehub.common.metrics import Metrics, MetricsSite

    port = free_ports(1)[0]
    service = ListeningService(reactor, f"tcp:{port}:interface=127.0.0.1", MetricsSite(Metrics()), "metrics")
    service.startService()
    try:
        with Lines() as lines:
            for _ in range(3):
                response = await http.get(f"http://127.0.0.1:{port}/")
                assert response.code == 200 and b"devicehub_logins_total" in await response.content()
        # (the test's own HTTP client logs its factories; the server side says nothing)
        assert [line for line in lines if "GET" in line or "Site" in line] == []
    finally:
        await service.stopService()
