#!/usr/bin/env python3
"""
Check the Teltonika codec against the real device frames collected from Traccar's tests.

Usage: python scripts/vectors_teltonika.py [PATH]   (default: ../shared/vectors/traccar_vectors.json
from the repository root). The file is third-party data: it is read, never copied into the
repository. Prints how many frames decode, how many acks match Traccar's byte for byte, and
what is not supported; exits 1 on any mismatch, 2 when the file is missing.

Where this codec differs from Traccar on purpose, the frame counts as expected:
  - Traccar does not check the CRC; this codec drops a packet whose CRC is wrong
    (BadFrame "checksum", no ack), as CONTRACT §5 says.
  - Traccar encodes a custom command that looks like hex as binary; this codec sends
    C{instruct} as its text, so such frames are listed as not supported.
"""

import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devicehub.devices.codec import Answer, BadFrame, Heartbeat, Identify, Reply, Uplink  # noqa: E402
from devicehub.devices.codecs.teltonika import TeltonikaCodec  # noqa: E402
from devicehub.devices.codecs.teltonika.protocol import AVL_CODECS, crc, imeiPacket  # noqa: E402

DEFAULT = ROOT.parent / "shared" / "vectors" / "traccar_vectors.json"
IMEI = "123456789012345"


def identified() -> TeltonikaCodec:
    codec = TeltonikaCodec(1 << 20)
    codec.feed(imeiPacket(IMEI))
    return codec


def crcOk(frame: bytes) -> bool:
    return len(frame) >= 12 and crc(frame[8:-4]) == int.from_bytes(frame[-4:], "big")


def check(vector: dict) -> tuple[str, str, bool | None]:
    """(outcome, detail, ack matched: True/False, None when no ack is expected)."""
    frame = bytes.fromhex(vector["hex"])
    kind = vector["kind"]
    ackHex = vector.get("ack_hex")
    notes = vector.get("notes", "")
    if "UDP" in notes:
        return "unsupported", "UDP datagram (the codec is TCP only)", None
    if kind == "server_command":
        size = int.from_bytes(frame[11:15], "big")
        payload = frame[15:15 + size]
        if not re.fullmatch(rb"[\x20-\x7e]*", payload):
            return "unsupported", f"binary command payload {payload.hex()} (instruct is sent as text)", None
        encoded, _ = TeltonikaCodec(1 << 20).encodeCommand(payload.decode("ascii"), None, 1)
        if encoded == frame:
            return "ok", f"command {payload.decode()!r} encoded byte for byte", None
        return "mismatch", f"command {payload.decode()!r} encoded as {encoded.hex()}", None
    if kind == "login":
        out = TeltonikaCodec(1 << 20).feed(frame)
        ok = out == [Identify(vector["imei"], reply=bytes.fromhex(ackHex))]
        return ("ok" if ok else "mismatch"), f"login {out}", ok
    codec = identified()
    out = codec.feed(frame)
    replies = b"".join(m.reply for m in out if isinstance(m, Reply))
    if kind == "heartbeat":
        ok = out == [Heartbeat()]
        return ("ok" if ok else "mismatch"), "keep-alive", None
    if len(frame) >= 12 and frame[:4] == b"\0\0\0\0" and len(frame) != int.from_bytes(frame[4:8], "big") + 12:
        # The announced length is not the frame's: Traccar's test frame is cut or padded.
        bad = [m for m in out if isinstance(m, BadFrame)]
        return "malformed", f"length field {int.from_bytes(frame[4:8], 'big')} vs {len(frame) - 12} bytes: {bad or 'waits'}", None
    if not crcOk(frame):
        ok = [type(m) for m in out] == [BadFrame] and out[0].kind == "checksum"
        return ("rejected" if ok else "mismatch"), "bad CRC (Traccar does not check it)", None
    codecId = frame[8]
    if kind == "location":
        expected = bytes.fromhex(ackHex)
        ackOk = replies == expected
        locations = [m for m in out if isinstance(m, Uplink) and m.type == "location"]
        count = int.from_bytes(expected, "big")
        if codecId in AVL_CODECS and codecId != 0x07:
            ok = ackOk and len(locations) == count and all(_sane(m.data) for m in locations)
            return ("ok" if ok else "mismatch"), f"codec 0x{codecId:02x}, {len(locations)} record(s)", ackOk
        raw = [m for m in out if isinstance(m, Uplink) and m.type == "raw"]
        ok = ackOk and len(raw) == 1
        return ("raw" if ok else "mismatch"), f"codec 0x{codecId:02x} records not decoded (raw, acked)", ackOk
    if kind == "command_response":
        answers = [m for m in out if isinstance(m, Answer)]
        quoted = re.search(r"payload \d+ bytes: '(.*?)'", notes)
        text = quoted.group(1).replace("\\r", "\r").replace("\\n", "\n").strip()[:40] if quoted else ""
        ok = len(answers) == 1 and answers[0].key is None and replies == b"" and answers[0].data.startswith(text)
        return ("ok" if ok else "mismatch"), f"answer {answers[0].data[:50]!r}" if answers else str(out), None
    # Anything else (Codec 13, Codec 12 camera): a raw uplink, no ack.
    ok = len(out) == 1 and isinstance(out[0], Uplink) and out[0].type == "raw" and replies == b""
    return ("raw" if ok else "mismatch"), f"codec 0x{codecId:02x} (raw, not acked)", None


def _sane(data: dict) -> bool:
    return (
        -90 <= data["lat"] <= 90 and -180 <= data["lon"] <= 180
        and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", data["time"]) is not None
        and isinstance(data["valid"], bool) and isinstance(data["io"], dict)
    )


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else DEFAULT
    if not path.exists():
        print(f"no vectors at {path}", file=sys.stderr)
        return 2
    vectors = json.loads(path.read_text())["teltonika"]
    outcomes: Counter[str] = Counter()
    acks = [0, 0]
    notSupported = []
    mismatches = []
    for i, vector in enumerate(vectors):
        outcome, detail, ackOk = check(vector)
        outcomes[outcome] += 1
        if ackOk is not None:
            acks[0] += 1
            acks[1] += ackOk
        if outcome in ("unsupported", "raw", "malformed"):
            notSupported.append(f"  #{i} {vector['kind']}: {detail}")
        elif outcome == "mismatch":
            mismatches.append(f"  #{i} {vector['kind']}: {detail}")
    decoded = outcomes["ok"]
    print(f"teltonika: {len(vectors)} frames: {decoded} decoded as expected, "
          f"{outcomes['rejected']} bad-CRC frames rejected (Traccar accepts them), "
          f"{outcomes['raw']} kept raw, {outcomes['malformed']} malformed, {outcomes['unsupported']} unsupported, "
          f"{outcomes['mismatch']} mismatches")
    print(f"acks: {acks[1]} of {acks[0]} match Traccar's byte for byte")
    if notSupported:
        print("not supported (raw, malformed or not decoded):")
        print("\n".join(notSupported))
    if mismatches:
        print("MISMATCHES:")
        print("\n".join(mismatches))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
