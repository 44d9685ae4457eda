"""
Check the gt06 codec against the real device frames of Traccar's test suite.

Usage: python scripts/vectors_gt06.py [PATH]   (default: ../shared/vectors/traccar_vectors.json
from the repository root). Each frame is fed to a fresh codec; the script prints how many
decode, how many of Traccar's acks match byte for byte, and what is not supported, and
exits non-zero on a mismatch: a frame with a right CRC dropped, a wrong ack or an ack
Traccar does not send, a wrong IMEI or reply text, or command bytes unlike Traccar's.
The vectors are third-party data: they are read from outside the repository, never copied in.
"""

import json
import re
import sys
from collections import Counter
from pathlib import Path

from fastcrc import crc16

from devicehub.devices.codec import Answer, BadFrame, Identify, Uplink
from devicehub.devices.codecs.gt06 import Gt06Codec

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT.parent / "shared" / "vectors" / "traccar_vectors.json"
MAX_FRAME = 65536


def replyOf(messages) -> bytes:
    return b"".join(getattr(m, "reply", b"") for m in messages if not isinstance(m, BadFrame))


def standardAck(raw: bytes) -> bytes:
    """78 78 05 PROTO SERIAL CRC 0D 0A for C{raw}, a short frame (the serial is before the CRC)."""
    body = b"\x05" + raw[3:4] + raw[-6:-4]
    return b"\x78\x78" + body + crc16.ibm_sdlc(body).to_bytes(2, "big") + b"\r\n"


def protoOf(raw: bytes) -> int:
    return raw[3] if raw[:2] == b"\x78\x78" else raw[4]


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else DEFAULT
    vectors = json.loads(path.read_text())["gt06"]
    mismatches: list[str] = []
    unsupported: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    decoded = acks = acksExpected = extraAcks = 0
    for n, vector in enumerate(vectors):
        raw = bytes.fromhex(vector["hex"])
        notes = vector["notes"]
        label = f"#{n} {vector['kind']} proto 0x{protoOf(raw):02x}"
        if vector["kind"] == "server_command":
            flag = int(re.search(r"server flag ([0-9a-f]{8})", notes).group(1), 16)
            text = re.search(r"content '([^']*)'", notes).group(1)
            data, key = Gt06Codec(MAX_FRAME).encodeCommand(text, None, flag)
            if data != raw or key != flag:
                mismatches.append(f"{label}: command {data.hex()} != {raw.hex()}")
            else:
                decoded += 1
            continue
        crcOk = "CRC-X25 ok" in notes
        messages = Gt06Codec(MAX_FRAME).feed(raw)
        good = [m for m in messages if not isinstance(m, BadFrame)]
        bad = [m for m in messages if isinstance(m, BadFrame)]
        if crcOk and (bad or not good):
            mismatches.append(f"{label}: dropped: {[(b.kind, b.error) for b in bad]}")
            continue
        if not good:
            # Traccar does not check the CRC (or the frame is not length-consistent): dropped here.
            dropped[", ".join(sorted({b.kind for b in bad})) or "held: LEN promises more bytes"] += 1
            continue
        if any(not (isinstance(m, Uplink) and m.type == "raw") for m in good):
            decoded += 1
        reply = replyOf(messages)
        expected = bytes.fromhex(vector["ack_hex"]) if vector.get("ack_hex") else b""
        if expected:
            acksExpected += 1
        if not crcOk and not expected and reply:
            # A frame-decoder test (LEN inconsistent, yet its CRC is right where the frame
            # really ends): Traccar's decoder acks it as any other; check it is that ack.
            if reply == standardAck(raw):
                extraAcks += 1
            else:
                mismatches.append(f"{label}: ack {reply.hex()} is not the standard one")
        elif reply != expected:
            mismatches.append(f"{label}: ack {reply.hex() or '-'} != Traccar's {expected.hex() or '-'}")
        elif expected:
            acks += 1
        if "imei" in vector and vector["kind"] == "login":
            ids = [m.imei for m in good if isinstance(m, Identify)]
            if ids != [vector["imei"]]:
                mismatches.append(f"{label}: identity {ids} != {vector['imei']}")
        if vector["kind"] == "command_response":
            answers = [m for m in good if isinstance(m, Answer)]
            said = re.search(r"reply '(.*)'(;|$)", notes)
            if raw[:2] == b"\x78\x78" and protoOf(raw) == 0x81:
                if answers:
                    mismatches.append(f"{label}: a 0x81 frame taken as a command answer")
            elif not answers or (said and answers[0].data != said.group(1)):
                mismatches.append(f"{label}: answer {[a.data for a in answers]} != {said and said.group(1)!r}")
        for m in good:
            if isinstance(m, Uplink) and m.type == "raw":
                unsupported[f"0x{protoOf(raw):02x} ({vector['kind']})"] += 1
    total = len(vectors)
    print(f"gt06 vectors: {total}; decoded (not raw, not dropped): {decoded}; "
          f"acks matching Traccar's byte for byte: {acks}/{acksExpected}"
          + (f" (+{extraAcks} acks of LEN-inconsistent frames, as Traccar's decoder would send)" if extraAcks else ""))
    print(f"dropped on purpose (Traccar does not check the CRC, or LEN is inconsistent): "
          f"{sum(dropped.values())} {dict(dropped)}")
    raw = ", ".join(f"{k} x{v}" for k, v in sorted(unsupported.items()))
    print(f"published as raw (not decoded): {raw or 'none'}")
    for line in mismatches:
        print("MISMATCH", line)
    print(f"mismatches: {len(mismatches)}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
