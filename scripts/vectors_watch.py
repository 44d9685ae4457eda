"""
Check the watch codec against real device frames collected from Traccar's tests.

    python scripts/vectors_watch.py [PATH]

PATH defaults to ../shared/vectors/traccar_vectors.json from the repository root (the file
is third-party data and stays out of the repository). Device frames must decode without a
bad frame and draw exactly the acks Traccar sends; server commands must encode to the same
bytes (Traccar writes LEN in lower-case hex, devicehub in upper case as the manufacturer's
document does: such frames are counted apart). Exits non-zero on any mismatch.
"""

import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devicehub.devices.codec import Answer, BadFrame, Heartbeat, Identify, UnsupportedCommand, Uplink
from devicehub.devices.codecs.watch import WatchCodec
from devicehub.devices.codecs.watch.protocol import splitFields

DEFAULT = ROOT.parent / "shared" / "vectors" / "traccar_vectors.json"
ALARMS = {"ALARM_SOS": "sos", "ALARM_REMOVING": "removing", "ALARM_LOW_BATTERY": "lowBattery"}
HEADER = re.compile(rb"\[(\w+)\*([^*]+)\*(?:([0-9A-Fa-f]{4})\*)?([0-9A-Fa-f]{4})\*")


def frameOf(vector: dict) -> bytes:
    return bytes.fromhex(vector["hex"]) if "hex" in vector else vector["text"].encode("ascii")


def checkDeviceFrame(vector: dict, frame: bytes, problems: list[str], stats: Counter) -> None:
    codec = WatchCodec(65536)
    messages = codec.feed(frame)
    bad = [m for m in messages if isinstance(m, BadFrame)]
    if bad or not messages or not isinstance(messages[0], Identify):
        problems.append(f"{frame[:60]!r}: {messages}")
        return
    stats["device frames decoded"] += 1
    body = [m for m in messages if not isinstance(m, Identify)]
    kind = {Heartbeat: "heartbeat", Answer: "answer"}.get(type(body[0])) or f"uplink {body[0].type}"
    stats[f"  as {kind}"] += 1
    want = vector.get("ack_text", "").encode("ascii")
    got = b"".join(getattr(m, "reply", b"") for m in body)
    if want:
        if got == want:
            stats["acks byte for byte"] += 1
        else:
            problems.append(f"{frame[:60]!r}: ack {got!r}, Traccar sends {want!r}")
    elif got:
        problems.append(f"{frame[:60]!r}: ack {got!r}, Traccar sends none")
    alarm = re.search(r"KEY_ALARM, Position\.(ALARM_\w+)", vector["notes"])
    if alarm:
        name = body[0].data.get("alarm") if isinstance(body[0], Uplink) else None
        if name != ALARMS.get(alarm.group(1)):
            problems.append(f"{frame[:60]!r}: alarm {name!r}, Traccar {alarm.group(1)}")
        else:
            stats["alarm names as Traccar"] += 1
    if vector["kind"] == "command_response":
        keyword = frame.split(b"*")[-1].split(b",")[0].rstrip(b"]").decode().upper()
        if not (isinstance(body[0], Answer) and body[0].key == keyword):
            problems.append(f"{frame[:60]!r}: not an answer to {keyword}: {body[0]}")
        else:
            stats["command answers matched by keyword"] += 1


def checkServerCommand(frame: bytes, problems: list[str], stats: Counter, unsupported: list[str]) -> None:
    mf, ident, index, _, = HEADER.match(frame).groups()
    content = frame[HEADER.match(frame).end() : -1]
    keyword, _, rest = content.partition(b",")
    fields = splitFields(rest) if _ else []
    if any("\\x" in f for f in fields):
        unsupported.append(f"command {frame[:60]!r}: binary data that is not UTF-8 (strings only)")
        return
    codec = WatchCodec(65536)
    hello = b"[" + mf + b"*" + ident + b"*" + (index + b"*" if index else b"") + b"0002*LK]"
    codec.feed(hello)
    try:
        got, key = codec.encodeCommand(keyword.decode(), fields or None, 1)
    except UnsupportedCommand as e:
        unsupported.append(f"command {frame[:60]!r}: {e}")
        return
    if got == frame:
        stats["server commands byte for byte"] += 1
    elif got.upper() == frame.upper() and HEADER.sub(b"", got) == HEADER.sub(b"", frame):
        stats["server commands equal but for LEN's hex case"] += 1
    else:
        problems.append(f"command {frame!r}: encoded as {got!r}")


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else DEFAULT
    vectors = json.loads(path.read_text())["watch"]
    problems: list[str] = []
    unsupported: list[str] = []
    stats: Counter = Counter()
    acks = sum(1 for v in vectors if v.get("ack_text"))
    for vector in vectors:
        frame = frameOf(vector)
        if vector["kind"] == "server_command":
            checkServerCommand(frame, problems, stats, unsupported)
        else:
            checkDeviceFrame(vector, frame, problems, stats)
    devices = sum(1 for v in vectors if v["kind"] != "server_command")
    commands = len(vectors) - devices
    print(f"watch vectors: {len(vectors)} ({devices} device frames, {commands} server commands)")
    for key in sorted(stats):
        total = {"device frames decoded": devices, "acks byte for byte": acks}.get(key)
        print(f"  {key}: {stats[key]}" + (f" of {total}" if total else ""))
    for line in unsupported:
        print(f"  not supported: {line}")
    for line in problems:
        print(f"  MISMATCH: {line}")
    print("OK" if not problems else f"{len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
