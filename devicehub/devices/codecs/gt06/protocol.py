"""GT06 protocol numbers, and the frames the hub builds: CRC, frame, ack (see L{devicehub.devices.codecs.gt06})."""

from fastcrc.crc16 import ibm_sdlc as crcX25

LOGIN = 0x01
HEARTBEAT_BARE = 0x08
GPS = 0x10
GPS_LBS_6 = 0x11
GPS_LBS = 0x12
STATUS = 0x13
STRING = 0x15
GPS_LBS_STATUS = 0x16
STRING_INFO = 0x21
GPS_LBS_2 = 0x22
HEARTBEAT = 0x23
GPS_LBS_STATUS_2 = 0x26
GPS_LBS_STATUS_3 = 0x27
COMMAND = 0x80

ACKED = frozenset({LOGIN, STATUS, HEARTBEAT, STRING, GPS, GPS_LBS_6, GPS_LBS, GPS_LBS_2,
                   GPS_LBS_STATUS, GPS_LBS_STATUS_2, GPS_LBS_STATUS_3})
"""The short-frame protocols the hub acks (CONTRACT §5: login, status, positions, alarms; and replies)."""

MAX_COMMAND = 255 - 10
"""The longest command text: LEN is one byte and counts 10 bytes besides the text."""


def crc(data: bytes) -> bytes:
    """The two CRC bytes of C{data} (the frame from LEN through SERIAL)."""
    return crcX25(data).to_bytes(2, "big")


def frame(proto: int, content: bytes, serial: int, long: bool = False) -> bytes:
    """A whole frame: start, length, C{proto}, C{content}, C{serial}, CRC, stop."""
    size = len(content) + 5
    body = (size.to_bytes(2, "big") if long else bytes((size,))) + bytes((proto,)) + content + serial.to_bytes(2, "big")
    return (b"\x79\x79" if long else b"\x78\x78") + body + crc(body) + b"\r\n"


def ack(proto: int, serial: bytes) -> bytes:
    """The hub's ack of a packet: C{78 78 05 PROTO SERIAL CRC 0D 0A} (C{serial}: its 2 bytes)."""
    body = b"\x05" + bytes((proto,)) + serial
    return b"\x78\x78" + body + crc(body) + b"\r\n"

