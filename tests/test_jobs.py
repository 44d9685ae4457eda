"""
Commands to many devices (CONTRACT §7): jobs over real HTTP against a hub with a thousand
devices (some silent, some offline), their event streams, Demand.send_many and the CLI.
"""

import json
import statistics
import sys
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers

from devicehub import OK, Demand

from .support import Hub, connect, eventually
from .test_api import call

ONLINE, SILENT, OFFLINE = 800, 100, 100


async def makeFleet(online: int, silent: int = 0) -> tuple[Hub, dict]:
    hub = await Hub(commandTimeout=5.0).start()
    devices = {}
    for i in range(online + silent):
        imei = f"86{i:013d}"
        devices[imei] = await connect(hub.devicePort, imei, silent=i >= online, reply=lambda command: command["data"])
    await eventually(lambda: len(hub.directory) == online + silent, 20)
    return hub, devices


async def stopFleet(hub: Hub, devices: dict) -> None:
    for device in devices.values():
        await device.close()
    await hub.stop()


@pytest_twisted.async_yield_fixture
async def fleet():
    """A hub with ONLINE devices that answer with their command's data and SILENT ones that never answer."""
    hub, devices = await makeFleet(ONLINE, SILENT)
    yield hub, devices
    await stopFleet(hub, devices)


@pytest_twisted.async_yield_fixture
async def small():
    hub, devices = await makeFleet(100, 10)
    yield hub, devices
    await stopFleet(hub, devices)


class Lines(Protocol):
    """Collects a streamed body."""

    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason) -> None:
        self.done.callback(None if reason.check(ResponseDone) else reason)


async def stream(url: str, headers: dict | None = None) -> list[tuple[str | None, str, dict]]:
    """The events of a job's stream: (id, event, data) each, until the server ends it."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    response = await Agent(reactor, pool=pool).request(
        b"GET", url.encode(), Headers({k: [v] for k, v in (headers or {}).items()}))
    assert response.headers.getRawHeaders("content-type") == ["text/event-stream"]
    body = Lines()
    response.deliverBody(body)
    await body.done
    await pool.closeCachedConnections()
    events = []
    for block in body.data.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            events.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    return events


@pytest_twisted.ensureDeferred
async def test_a_job_gives_every_device_exactly_one_result_and_streams_them(fleet, http):
    hub, devices = fleet
    imeis = list(devices) + [f"99{i:013d}" for i in range(OFFLINE)]
    code, started = await call(http, hub, "POST", "/commands",
                               {"imeis": imeis, "instruct": "count", "data": {"n": 1}, "timeout": 0.5})
    assert code == 202 and started["devices"] == ONLINE + SILENT + OFFLINE
    url = f"{hub.url}/jobs/{started['id']}"
    events = await stream(url + "/events")  # ends when the job is done
    results = [data for _, kind, data in events if kind == "result"]
    assert sorted(r["imei"] for r in results) == sorted(imeis)  # each device once
    assert [int(id) for id, kind, _ in events if kind == "result"] == list(range(len(imeis)))
    (_, last, summary), = [event for event in events if event[1] == "done"]
    assert summary["state"] == "done"
    assert summary["results"] == {"ok": ONLINE, "no": OFFLINE, "timeout": SILENT, "queued": 0, "error": 0}
    assert all(r["data"] == {"n": 1} for r in results if r["result"] == OK)
    assert all(len(device.commands) == 1 for device in devices.values())  # exactly one command each
    code, state = await call(http, hub, "GET", f"/jobs/{started['id']}")
    assert (code, state) == (200, summary)
    code, page = await call(http, hub, "GET", f"/jobs/{started['id']}?num=10&page=90")
    assert [o["imei"] for o in page["outcomes"]] == imeis[900:910]
    assert {o["result"] for o in page["outcomes"]} == {"no"}
    # a client that reconnects with Last-Event-ID gets the rest, then done
    rest = await stream(url + "/events", {"Last-Event-ID": "994"})
    assert [id for id, _, _ in rest] == ["995", "996", "997", "998", "999", None]


@pytest_twisted.ensureDeferred
async def test_a_job_to_a_prefix_or_to_all_takes_the_devices_online_when_it_starts(small, http):
    hub, devices = small
    code, started = await call(http, hub, "POST", "/commands", {"prefix": "8600000000000", "instruct": "x"})
    assert (code, started["devices"]) == (202, 100)  # 860000000000000..099
    await eventually(lambda: hub.api.api.jobs.get(started["id"]).state == "done", 20)
    code, state = await call(http, hub, "GET", f"/jobs/{started['id']}?num=1000")
    assert state["results"]["ok"] == 100 and all(o["imei"].startswith("8600000000000") for o in state["outcomes"])
    code, everyone = await call(http, hub, "POST", "/commands", {"all": True, "instruct": "x", "timeout": 0.3})
    assert (code, everyone["devices"]) == (202, 110)
    await eventually(lambda: hub.api.api.jobs.get(everyone["id"]).state == "done", 20)


@pytest.mark.parametrize("body, says", [
    ({"instruct": "x"}, "exactly one of"),
    ({"instruct": "x", "all": True, "prefix": "86"}, "exactly one of"),
    ({"instruct": "x", "imeis": []}, "imeis must be"),
    ({"instruct": "x", "imeis": ["ok", "not valid"]}, "invalid imei"),
    ({"instruct": "x", "imeis": [None, None], "queue": True}, "invalid imei None"),  # found by schemathesis
    ({"instruct": "x", "imeis": ["ok", 7]}, "invalid imei 7"),
    ({"instruct": "x", "all": False}, "all must be true"),
    ({"instruct": "", "all": True}, "instruct"),
    ({"instruct": "x", "all": True, "timeout": 301}, "timeout"),
    ({"instruct": "x", "all": True, "wait": False}, "unknown field 'wait'"),
])
@pytest_twisted.ensureDeferred
async def test_a_bad_job_is_refused_in_words(http, body, says):
    hub = await Hub().start()
    code, answer = await call(http, hub, "POST", "/commands", body)
    assert code == 400 and says in answer["error"]
    assert (await call(http, hub, "GET", "/jobs/nope"))[0] == 404
    await hub.stop()


@pytest.mark.alone  # latencies against a baseline: another test's load would move them
@pytest_twisted.ensureDeferred
async def test_a_job_holds_a_bounded_number_of_commands_in_flight_and_others_are_not_starved(fleet, http):
    hub, devices = fleet
    inflight = hub.api.api.jobs.inflight
    online = [imei for imei in devices][:ONLINE]
    demand = Demand(hub.frontend, timeout=5)
    probe = online[0]

    async def latencies(count: int) -> list[float]:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            assert await demand.send(probe, "probe") == OK
            samples.append(time.perf_counter() - started)
        return samples

    def p99(samples):
        return statistics.quantiles(samples, n=100)[98]

    async def attempt() -> tuple[float, float]:
        """One job, with the other caller's p99 alone (the worse of just before and just after it) and during it."""
        before = await latencies(400)
        most = [0]

        def sample():
            most[0] = max(most[0], hub.node.node.unanswered)

        sampler = LoopingCall(sample)
        sampler.start(0.02)
        code, started = await call(http, hub, "POST", "/commands", {"imeis": online, "instruct": "bulk"})
        job = hub.api.api.jobs.get(started["id"])
        during = []
        while job.state == "running" and len(during) < 400:
            during += await latencies(10)
        sampler.stop()
        await eventually(lambda: job.state == "done", 30)
        after = await latencies(400)
        alone = max(p99(before), p99(after))
        print(f"other caller p99 alone {p99(before) * 1000:.2f}/{p99(after) * 1000:.2f} ms, during the job"
              f" {p99(during) * 1000:.2f} ms, job at most {most[0]} commands unanswered on the node", file=sys.stderr)
        assert most[0] <= inflight + 1  # and the other caller's one
        assert job.summary()["results"]["ok"] == ONLINE
        assert len(during) >= 50  # the job was long enough to measure
        return alone, p99(during)

    # Issue 17: at most 2x. Measured on an idle machine, devices and hub in this one process:
    # 1.2-2.0x in 10 runs (40-80x before the job paced itself); 1 ms for the timer's and the
    # scheduler's own noise on a shared machine. That noise moves a p99 by more than 2x from
    # one second to the next, now and then even with the baseline taken on both sides of the
    # job; a job that starved the other caller would do so in every one of three jobs.
    def calm(job: tuple[float, float]) -> bool:
        alone, during = job
        return during <= 2 * alone + 0.001

    jobs = []  # (p99 alone, p99 during), job by job
    while len(jobs) < 3 and not any(map(calm, jobs)):
        jobs.append(await attempt())
    demand.close()
    assert any(map(calm, jobs)), jobs


@pytest_twisted.ensureDeferred
async def test_send_many_fires_with_each_devices_result(small):
    hub, devices = small
    demand = Demand(hub.frontend)
    seen = []
    imeis = list(devices)[95:105] + ["99x"]
    results = await demand.send_many(imeis, "many", timeout=0.5, inflight=3, onResult=seen.append)
    assert results == {**dict.fromkeys(imeis[:5], "ok"), **dict.fromkeys(imeis[5:10], "timeout"), "99x": "no"}
    assert sorted(o["imei"] for o in seen) == sorted(imeis)
    demand.close()


@pytest_twisted.ensureDeferred
async def test_the_cli_sends_to_many_devices_and_sums_up(small, tmp_path):
    from .test_cli import cli

    hub, devices = small
    code, summary, _ = await cli("send", "--prefix", "8600000000000", "x", '{"k": 1}', frontend=hub.frontend)
    assert code == 0 and summary["devices"] == 100
    assert summary["results"] == {"ok": 100, "no": 0, "timeout": 0, "queued": 0, "error": 0}
    listed = tmp_path / "imeis.txt"
    listed.write_text("# two of the fleet and one that is not online\n860000000000001\n\n860000000000002\n990000000000000\n")
    code, summary, _ = await cli("send", "--file", str(listed), "--timeout", "1", "y", frontend=hub.frontend)
    assert (code, summary["devices"], summary["results"]["ok"], summary["results"]["no"]) == (1, 3, 2, 1)
    code, summary, _ = await cli("send", "--all", "z", "--timeout", "0.5", frontend=hub.frontend)
    assert (code, summary["results"]["ok"], summary["results"]["timeout"]) == (1, 100, 10)  # the silent ones
    code, _, err = await cli("send", "--all", "860000000000001", "x", "1", frontend=hub.frontend)
    assert code == 64 and "no IMEI" in err
    assert all(device.commands[-1]["instruct"] == "z" for device in devices.values())


def test_the_progress_bar_is_drawn_on_a_terminal_only():
    import io

    from devicehub.cli.bulk import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    shown, hidden = Terminal(), io.StringIO()
    for stream in (shown, hidden):
        bar = Progress(4, stream)
        for result in ("ok", "ok", "no", "timeout"):
            bar.result({"imei": "x", "result": result})
        bar.end()
    assert hidden.getvalue() == ""
    assert shown.getvalue().rstrip("\n").rsplit("\r", 1)[1] == "[" + "#" * 30 + "] 4/4 ok 2 no 1 timeout 1\x1b[K"


def test_a_failing_probe_does_not_stop_a_bulk_send():
    from twisted.internet.defer import fail, succeed
    from twisted.internet.task import Clock

    from devicehub import BrokerUnavailable, Reply
    from devicehub.client.many import Pace, each

    clock, seen = Clock(), []
    pace = Pace(clock, lambda: fail(BrokerUnavailable("warming up")), 5)
    done = Deferred.fromCoroutine(each(["a", "b", "c"], lambda imei: succeed(Reply(OK)), lambda i, o: seen.append(o), 5, pace))
    assert done.called and [o["result"] for o in seen] == ["ok", "ok", "ok"]
    assert clock.getDelayedCalls() == []
