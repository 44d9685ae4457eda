"""
Prometheus metrics of one devicehub process (docs/operations.md lists them).

Counters are updated where things happen; gauges of live state (devices online,
nodes alive, commands in flight) are read from the roles at scrape time, so they
cost nothing between scrapes. The commands answered and their seconds, counted once
per command, are plain numbers (L{CommandTally}) that a scrape reads.
"""

from bisect import bisect_left
from typing import Callable, NamedTuple

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString
from twisted.web.resource import Resource
from twisted.web.server import Site

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class NodeGauges(NamedTuple):
    """How a node reports its live state at scrape time."""

    name: str
    devices: Callable[[], int]
    """Devices online on the node."""
    frames: Callable[[], dict[str, int]]
    """Messages decoded from device frames so far, by protocol."""


class BrokerGauges(NamedTuple):
    """How a broker reports its live state at scrape time."""

    nodes: Callable[[], int]
    """Nodes registered (and not leaving)."""
    devices: Callable[[], int]
    """Devices in the directory."""
    inflight: Callable[[], int]
    """Commands routed and not answered yet."""
    queueDepth: Callable[[], int]
    """Commands queued for offline devices."""


class Metrics:
    """The registry of one process and the metrics its roles update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        self.logins = Counter("devicehub_logins", "Device logins accepted, by node.", ["node"], registry=self.registry)
        self.logouts = Counter(
            "devicehub_logouts", "Logged-in device connections closed, by node.", ["node"], registry=self.registry
        )
        self.connections = Counter(
            "devicehub_device_connections", "Device connections accepted, by protocol.", ["protocol"],
            registry=self.registry,
        )
        self.protocolLogins = Counter(
            "devicehub_device_logins", "Device logins accepted, by protocol.", ["protocol"], registry=self.registry
        )
        self.protocolErrors = Counter(
            "devicehub_protocol_errors",
            "Device frames or connections refused, by protocol and kind.",
            ["protocol", "kind"],
            registry=self.registry,
        )
        self.eventsPublished = Counter(
            "devicehub_events_published", "Events the broker published.", registry=self.registry
        )
        self.eventsDropped = Counter(
            "devicehub_events_dropped",
            "Events lost on the way to a slow subscriber, by where they were lost.",
            ["where"],
            registry=self.registry,
        )
        self.commands = CommandTally()
        self.registry.register(self.commands)
        self._live = _LiveState()
        self.registry.register(self._live)

    def watchNode(self, gauges: NodeGauges) -> None:
        """Report a node's devices online and frames decoded."""
        self._live.nodes.append(gauges)

    def watchBroker(self, gauges: BrokerGauges) -> None:
        """Report a broker's nodes, directory, commands in flight and queue."""
        self._live.brokers.append(gauges)

    def forget(self, gauges: NodeGauges | BrokerGauges) -> None:
        """Stop reporting a role that stopped."""
        for watched in (self._live.nodes, self._live.brokers):
            if gauges in watched:
                watched.remove(gauges)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


class CommandTally:
    """
    The broker's commands answered, by result (C{devicehub_commands_total}), and the
    seconds from routing to answer (C{devicehub_command_seconds}), in plain numbers: a
    Prometheus counter and histogram take a lock, and search the buckets, per command.
    """

    def __init__(self) -> None:
        self.results: dict[str, int] = {}
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last: past every bound (+Inf)
        self._seconds = 0.0

    def count(self, result: str) -> None:
        """One command answered C{result}."""
        self.results[result] = self.results.get(result, 0) + 1

    def observe(self, seconds: float) -> None:
        """One routed command answered after C{seconds}."""
        self._buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # a bucket counts what is <= its bound
        self._seconds += seconds

    def collect(self):
        commands = CounterMetricFamily("devicehub_commands", "Commands answered by the broker, by result.", labels=["result"])
        for result, count in sorted(self.results.items()):
            commands.add_metric([result], count)
        yield commands
        cumulative, buckets = 0, []
        for bound, count in zip([*map(floatToGoString, LATENCY_BUCKETS), "+Inf"], self._buckets):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily("devicehub_command_seconds", "Seconds from the broker routing a command to its answer.",
                                    buckets=buckets, sum_value=self._seconds)


class _LiveState:
    def __init__(self) -> None:
        self.nodes: list[NodeGauges] = []
        self.brokers: list[BrokerGauges] = []

    def collect(self):
        devices = GaugeMetricFamily("devicehub_devices_online", "Devices online on this node.", labels=["node"])
        # Counted by the nodes in plain ints (a Prometheus counter per read would cost more than the read).
        frames = CounterMetricFamily(
            "devicehub_device_frames", "Messages decoded from device frames (good or bad), by protocol.", labels=["protocol"]
        )
        decoded: dict[str, int] = {}
        for node in self.nodes:
            devices.add_metric([node.name], node.devices())
            for protocol, count in node.frames().items():
                decoded[protocol] = decoded.get(protocol, 0) + count
        yield devices
        for protocol, count in sorted(decoded.items()):
            frames.add_metric([protocol], count)
        yield frames
        for name, help, field in [
            ("devicehub_nodes_alive", "Nodes registered with the broker.", "nodes"),
            ("devicehub_directory_devices", "Devices online across all nodes, as the broker sees them.", "devices"),
            ("devicehub_broker_inflight", "Commands routed to nodes and not answered yet.", "inflight"),
            ("devicehub_queue_depth", "Commands queued for offline devices.", "queueDepth"),
        ]:
            gauge = GaugeMetricFamily(name, help)
            if self.brokers:
                gauge.add_metric([], sum(getattr(broker, field)() for broker in self.brokers))
            yield gauge


class MetricsPage(Resource):
    """C{GET} the Prometheus text of C{metrics}."""

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return self.metrics.exposition()


class MetricsSite(Site):
    """Serves L{MetricsPage} (C{--metrics}); a scrape every few seconds writes nothing to the process log."""

    noisy = False

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(MetricsPage(metrics))

    def log(self, request) -> None:
        pass
