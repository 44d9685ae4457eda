"""
The Python caller of the peer brokers, in a process of its own:
`python bench/peer_caller.py --protocol mqtt|nats --port 1883 --prefix m- --devices 1000`.

Sends commands to the devices of bench/peer_fleet.py and times each until its ack, with the
usual client library of each broker (as the issue's reference figures did):

  mqtt  paho-mqtt (MQTT 3.1.1, QoS 0): subscribed to devices/+/ack, publishes each command
        (its ident as payload) to devices/IMEI/cmd and matches the acks by ident. paho's
        network loop runs in its own thread (loop_start); the next command is published from
        the callback of an ack, so the window is refilled without a thread switch.
  nats  nats-py (asyncio): request-reply on devices.IMEI; a window is that many tasks,
        each awaiting nc.request() in turn.

Prints {"ready": true} once connected (and subscribed), then reads commands on stdin:
`window COUNT WINDOW` keeps WINDOW commands in flight until COUNT are acked (WINDOW 1: one
at a time) and prints one JSON line of figures ({"per_s", "sent", "acked", "p50_ms", …});
stdin's end ends it.
"""

import argparse
import asyncio
import json
import sys
import threading
import time

from run import percentiles  # bench/run.py

clock = time.perf_counter


def result(samples: list[float], count: int, elapsed: float) -> dict:
    return {"per_s": round(len(samples) / elapsed), "sent": count, "acked": len(samples), **percentiles(samples)}


class MqttCaller:
    def __init__(self, options) -> None:
        import paho.mqtt.client as mqtt

        self.topics = [f"devices/{options.prefix}{i:06}/cmd" for i in range(options.devices)]
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"caller-{options.prefix}",
                                  protocol=mqtt.MQTTv311)
        self.client.on_message = self.acked
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", options.port, keepalive=600)
        self.client.subscribe("devices/+/ack", qos=0)
        self.client.loop_start()
        if not subscribed.wait(30):
            raise SystemExit("no SUBACK from the broker")

    def run(self, count: int, window: int) -> dict:
        self.count, self.issued, self.sent, self.samples = count, 0, {}, []
        self.done = threading.Event()
        started = clock()
        with self.lock:  # the first acks may come back while the window is being filled
            for _ in range(min(window, count)):
                self.issue()
        self.done.wait(60)  # QoS 0: a lost ack would leave the run short (acked < sent)
        with self.lock:
            self.count = self.issued  # no more after a timeout
            return result(list(self.samples), count, clock() - started)

    def issue(self) -> None:
        i = self.issued
        self.issued += 1
        self.sent[i] = clock()
        self.client.publish(self.topics[i % len(self.topics)], b"%d" % i)

    def acked(self, client, userdata, message) -> None:
        now = clock()
        with self.lock:
            sent = self.sent.pop(int(message.payload), None)
            if sent is None:  # a late ack of a run that timed out
                return
            self.samples.append(now - sent)
            if self.issued < self.count:
                self.issue()
            elif len(self.samples) == self.count:
                self.done.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class NatsCaller:
    async def connect(self, options) -> None:
        import nats

        self.subjects = [f"devices.{options.prefix}{i:06}" for i in range(options.devices)]
        self.nc = await nats.connect(f"nats://127.0.0.1:{options.port}")

    async def run(self, count: int, window: int) -> dict:
        samples: list[float] = []
        indices = iter(range(count))  # shared by the tasks: each takes the next command
        subjects, request = self.subjects, self.nc.request

        async def one_after_another() -> None:
            for i in indices:
                payload = b"%d" % i
                sent = clock()
                reply = await request(subjects[i % len(subjects)], payload, timeout=30)
                if reply.data == payload:
                    samples.append(clock() - sent)

        started = clock()
        await asyncio.gather(*(one_after_another() for _ in range(min(window, count))))
        return result(samples, count, clock() - started)

    async def close(self) -> None:
        await self.nc.close()


def answer(figures: dict) -> None:
    print(json.dumps(figures), flush=True)


def serve_mqtt(options) -> None:
    caller = MqttCaller(options)
    answer({"ready": True})
    for line in sys.stdin:
        _, count, window = line.split()
        answer(caller.run(int(count), int(window)))
    caller.close()


async def serve_nats(options) -> None:
    caller = NatsCaller()
    await caller.connect(options)
    answer({"ready": True})
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        _, count, window = line.split()
        answer(await caller.run(int(count), int(window)))
    await caller.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--protocol", choices=["mqtt", "nats"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--devices", type=int, required=True)
    options = parser.parse_args()
    if options.protocol == "mqtt":
        serve_mqtt(options)
    else:
        asyncio.run(serve_nats(options))
