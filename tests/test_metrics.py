"""Prometheus metrics: /metrics of the api role and --metrics of any process."""

import pytest_twisted
import treq
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.web.client import Agent, HTTPConnectionPool

from devicehub import NO, OK, TIMEOUT, Demand

from .support import Hub, connect, eventually, free_ports, online, start_twistd, until_online


async def scrape(url):
    """{(name, labels): value} of every sample at C{url}."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        response = await treq.client.HTTPClient(Agent(reactor, pool=pool)).get(url)
        assert response.code == 200
        assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
        text = (await response.content()).decode()
    finally:
        await pool.closeCachedConnections()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest_twisted.ensureDeferred
async def test_metrics_count_what_happened():
    hub = await Hub().start()
    demand = Demand(hub.frontend)
    try:
        device = await online(hub, "dev1", reply=1)
        mute = await online(hub, "mute", silent=True)
        assert await demand.send("dev1", "0x10") == OK
        assert await demand.send("ghost", "0x10") == NO
        assert await demand.send("mute", "0x10", timeout=0.2) == TIMEOUT
        device.transport.write(b"not json\n")
        await eventually(lambda: device.lines and device.lines[-1]["type"] == "error")
        await mute.close()
        await eventually(lambda: len(hub.directory) == 1)
        samples = await scrape(hub.url + "/metrics")
        node = (("node", "node-1"),)
        assert samples[("devicehub_devices_online", node)] == 1
        assert samples[("devicehub_logins_total", node)] == 2
        assert samples[("devicehub_logouts_total", node)] == 1
        assert samples[("devicehub_commands_total", (("result", "ok"),))] == 1
        assert samples[("devicehub_commands_total", (("result", "no"),))] == 1
        assert samples[("devicehub_commands_total", (("result", "timeout"),))] == 1
        assert samples[("devicehub_command_seconds_count", ())] == 2  # the two routed to a node
        assert samples[("devicehub_protocol_errors_total", (("kind", "json"), ("protocol", "jsonl")))] == 1
        # every other kind is there at 0, so rate() over it gives 0, not nothing (issue 12.27)
        from devicehub.devices.codecs.jsonl import JsonLinesCodec
        from devicehub.devices.session import SESSION_ERROR_KINDS

        kinds = (*SESSION_ERROR_KINDS, *JsonLinesCodec.errorKinds)
        assert {kind: samples[("devicehub_protocol_errors_total", (("kind", kind), ("protocol", "jsonl")))]
                for kind in kinds} == {kind: 1 if kind == "json" else 0 for kind in kinds}
        assert samples[("devicehub_nodes_alive", ())] == 1
        assert samples[("devicehub_directory_devices", ())] == 1
        assert samples[("devicehub_broker_inflight", ())] == 0
        assert samples[("process_resident_memory_bytes", ())] > 10_000_000
        await device.close()
    finally:
        demand.close()
        await hub.stop()


@pytest_twisted.ensureDeferred
async def test_metrics_option_serves_a_process_without_the_api_role():
    devices, metrics, frontend, backend = free_ports(4)
    process = start_twistd(["--roles", "broker,node", "--node-id", "edge-7",
                            "--devices", f"tcp:{devices}:interface=127.0.0.1",
                            "--metrics", f"tcp:{metrics}:interface=127.0.0.1",
                            "--frontend", f"tcp://127.0.0.1:{frontend}", "--backend", f"tcp://127.0.0.1:{backend}"])
    try:
        await eventually(lambda: "Registered with the broker" in process.output, 20)
        device = await connect(devices, "watched")
        demand = Demand(f"tcp://127.0.0.1:{frontend}")
        await until_online(demand, "watched")
        demand.close()
        samples = await scrape(f"http://127.0.0.1:{metrics}/")
        assert samples[("devicehub_devices_online", (("node", "edge-7"),))] == 1
        assert samples[("devicehub_directory_devices", ())] == 1
        await device.close()
    finally:
        await process.stop()


@given(st.lists(st.sampled_from(["ok", "no", "timeout", "busy"])), st.lists(st.floats(0, 1000)))
def test_the_command_tally_exposes_what_prometheus_own_counter_and_histogram_would(results, seconds):
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from devicehub.common.metrics import LATENCY_BUCKETS, CommandTally

    tally, registry = CommandTally(), CollectorRegistry()
    registry.register(tally)
    stockRegistry = CollectorRegistry()
    counter = Counter("devicehub_commands", "Commands answered by the broker, by result.", ["result"],
                      registry=stockRegistry)
    histogram = Histogram("devicehub_command_seconds", "Seconds from the broker routing a command to its answer.",
                          buckets=LATENCY_BUCKETS, registry=stockRegistry)
    for result in results:
        tally.count(result)
        counter.labels(result).inc()
    for value in seconds:
        tally.observe(value)
        histogram.observe(value)
    stock = [line for line in generate_latest(stockRegistry).decode().splitlines() if "_created" not in line]
    ours = generate_latest(registry).decode().splitlines()
    if not results:  # a labelled counter with no labels yet has no samples either way
        stock = [line for line in stock if not line.startswith("devicehub_commands_total")]
    assert sorted(ours) == sorted(stock)
