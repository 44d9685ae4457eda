"""
C{devicehub send --all | --prefix P | --file F INSTRUCT [DATA]}: one command to many
devices through L{devicehub.client.demand.Demand.send_many}, a progress bar on a terminal
(stderr) and one JSON summary line at the end (stdout).
"""

import argparse
import sys
import time
from collections import Counter
from typing import Any, TextIO

from devicehub.cli.arguments import UsageError
from devicehub.client.demand import Demand
from devicehub.client.many import ERROR, Pace, online
from devicehub.common.imei import is_valid_imei
from devicehub.common.results import NO, OK, QUEUED, TIMEOUT

RESULTS = (OK, NO, TIMEOUT, QUEUED, ERROR)
BAR = 30


def readImeis(path: str) -> list[str]:
    """The imeis of file C{path} (C{-}: stdin), one a line; blank lines and C{#} comments skipped."""
    try:
        lines = sys.stdin.read().splitlines() if path == "-" else open(path, encoding="utf-8").read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--file: cannot read {path!r}: {e}") from None
    imeis = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    bad = next((imei for imei in imeis if not is_valid_imei(imei)), None)
    if bad is not None:
        raise UsageError(f"--file: invalid imei {bad!r} in {path!r}")
    return list(dict.fromkeys(imeis))


class Progress:
    """A one-line progress bar, redrawn at most every 0.1 s, on a terminal only."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.shown = stream.isatty()
        self.counts: Counter[str] = Counter()
        self._drawn = 0.0

    def result(self, outcome: dict[str, Any]) -> None:
        self.counts[outcome["result"]] += 1
        now = time.monotonic()
        if self.shown and (now - self._drawn >= 0.1 or sum(self.counts.values()) == self.total):
            self._drawn = now
            self.draw()

    def draw(self) -> None:
        done = sum(self.counts.values())
        filled = BAR * done // self.total if self.total else BAR
        counts = " ".join(f"{name} {self.counts[name]}" for name in RESULTS if self.counts[name])
        self.stream.write(f"\r[{'#' * filled}{'.' * (BAR - filled)}] {done}/{self.total} {counts}\x1b[K")
        self.stream.flush()

    def end(self) -> None:
        if self.shown:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()


async def sendMany(reactor, demand: Demand, arguments: argparse.Namespace, timeout: float) -> tuple[int, dict[str, Any]]:
    """Send to every device the arguments name; exit 0 when every one acked (or queued it), else 1."""
    if arguments.file is not None:
        imeis = readImeis(arguments.file)
    else:
        imeis = await online(demand, arguments.prefix or "", timeout=max(timeout, 2.0))
    started = time.monotonic()
    progress = Progress(len(imeis), sys.stderr)
    pace = Pace(reactor, lambda: demand.gettotal(timeout=5.0), arguments.inflight)
    results = await demand.send_many(imeis, arguments.instruct, arguments.data, timeout, inflight=arguments.inflight,
                                     queue=arguments.queue, onResult=progress.result, pace=pace)
    progress.end()
    counts = Counter(results.values())
    summary = {"devices": len(results), "results": {name: counts[name] for name in RESULTS},
               "seconds": round(time.monotonic() - started, 3)}
    return (0 if counts[OK] + counts[QUEUED] == len(results) else 1), summary
