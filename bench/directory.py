"""
The broker's directory at internet scale: `python bench/directory.py [--sizes 10000,200000,1000000]`.

For each size N, fills a Directory with N devices on one node, then measures (median of
several rounds): a login and a logout at that size, a find, a page of 50 in the middle,
and dropping a node that holds N/2 devices. Prints one JSON line per size.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devicehub.broker.directory import Directory, NodeRecord  # noqa: E402


def measure(size: int, rounds: int = 2000) -> dict:
    big, small = NodeRecord(b"N1", "big", 0.0), NodeRecord(b"N2", "small", 0.0)
    directory = Directory()
    for index in range(size):
        directory.own(f"{index * 7919 % size:015d}", big if index % 2 else small, index, 0.0)
    logins, logouts, finds, pages = [], [], [], []
    for index in range(rounds):
        imei = f"{(index * 104729 + 7) % size:015d}x"  # lands anywhere among the others
        started = time.perf_counter()
        directory.own(imei, big, index, 0.0)
        logins.append(time.perf_counter() - started)
        started = time.perf_counter()
        directory.owner(imei)
        finds.append(time.perf_counter() - started)
        started = time.perf_counter()
        directory.page(50, size // 100)
        pages.append(time.perf_counter() - started)
        started = time.perf_counter()
        directory.release(imei, big)
        logouts.append(time.perf_counter() - started)
    started = time.perf_counter()
    directory.releaseAll(small)
    drop = time.perf_counter() - started
    us = lambda samples: round(statistics.median(samples) * 1e6, 2)  # noqa: E731
    return {"devices": size, "login_us": us(logins), "logout_us": us(logouts), "find_us": us(finds),
            "page50_us": us(pages), "drop_half_s": round(drop, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,200000,1000000")
    for size in map(int, parser.parse_args().sizes.split(",")):
        print(json.dumps(measure(size)), flush=True)


if __name__ == "__main__":
    main()
