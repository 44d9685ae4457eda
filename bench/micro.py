"""
One hot path of devicehub, N times, in one process and without I/O: `python bench/micro.py
CASE N` (prints the µs per round). Run it under callgrind to count instructions, which,
unlike seconds, do not move with what else the machine does:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/micro.py demand 2000
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/micro.py demand 22000

and take the difference of the two totals over 20 000 (what starting Python costs cancels out).

  decode-send   frames.decode of a Demand's send, as the broker reads it
  decode-reply  frames.decode of the broker's reply to a command, as a Demand reads it
  demand        a Demand's send and its answer: the call, its message, its deadline, the
                reply read back through its link and its Deferred fired (ZeroMQ's send
                stubbed out; the reactor never runs)
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import reactor, task  # noqa: E402

from devicehub import Demand  # noqa: E402
from devicehub.common.results import OK  # noqa: E402
from devicehub.wire import frames  # noqa: E402

SEND = frames.encode(b"send", b"c1:123456", {"imei": "861234567890123", "instruct": "0x10", "data": 1,
                                              "timeout": 30, "wait": True})
REPLY = frames.encode(b"reply", b"c1:123456", {"result": "ok", "data": {"ack": 1}})


def decode(raw: list[bytes], rounds: int) -> None:
    for _ in range(rounds):
        frames.decode(raw)


def demand(rounds: int) -> None:
    demand = Demand("tcp://127.0.0.1:1", timeout=30, reactor=reactor, clock=task.Clock())
    link = demand._calls.brokers.links[0]
    sent: list[list[bytes]] = []
    link._socket.sendFrames = sent.append
    acked = []
    imeis = [f"g-{i:06}" for i in range(1000)]
    for i in range(rounds):
        demand.send(imeis[i % 1000], "0x10", i).addCallback(acked.append)
        rid = sent.pop()[0].partition(b"\n")[0].split(b" ")[2]
        link.received([b"DH3 reply " + rid + b'\n{"result":"ok","data":null}'])
        link._sendHeld()  # what the end of a batch of ZeroMQ messages does
    assert acked == [OK] * rounds
    demand.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("case", choices=["decode-send", "decode-reply", "demand"])
    parser.add_argument("rounds", type=int)
    options = parser.parse_args()
    started = time.perf_counter()
    if options.case == "demand":
        demand(options.rounds)
    else:
        decode(SEND if options.case == "decode-send" else REPLY, options.rounds)
    print(f"{(time.perf_counter() - started) / options.rounds * 1e6:.2f} us per round")
