"""Teltonika codec ids and packet kinds, the CRC, and the packets both sides build (see L{devicehub.devices.codecs.teltonika})."""

from fastcrc import crc16

CODEC_GH3000 = 0x07
CODEC_8 = 0x08
CODEC_8_EXT = 0x8E
CODEC_12 = 0x0C
CODEC_13 = 0x0D
CODEC_14 = 0x0E
CODEC_16 = 0x10
AVL_CODECS = frozenset((CODEC_GH3000, CODEC_8, CODEC_8_EXT, CODEC_16))
"""Codecs of AVL data packets: the hub acks them with their record count."""
CODECS = frozenset((*AVL_CODECS, CODEC_12, CODEC_13, CODEC_14, 0x0F))
"""Codec ids a data packet may carry; any other byte there means the stream lost its frame."""

TYPE_COMMAND = 0x05
TYPE_RESPONSE = 0x06

ACCEPT = b"\x01"
REFUSE = b"\x00"
KEEPALIVE = b"\xff"
PREAMBLE = b"\x00\x00\x00\x00"
MAX_IMEI = 64
"""Longest identity (devicehub.common.imei); a longer LEN in the opening packet is refused."""


def crc(data: bytes) -> int:
    """CRC-16/IBM (ARC) of C{data}, as Teltonika packets carry it."""
    return crc16.arc(data)


def packet(data: bytes) -> bytes:
    """A data packet around C{data} (codec id .. second count): preamble, length, data, CRC."""
    return PREAMBLE + len(data).to_bytes(4, "big") + data + crc16.arc(data).to_bytes(4, "big")


def codec12(kind: int, payload: bytes) -> bytes:
    """A Codec 12 packet of one message of C{kind} (0x05 command, 0x06 response)."""
    return packet(bytes((CODEC_12, 1, kind)) + len(payload).to_bytes(4, "big") + payload + b"\x01")


def imeiPacket(imei: str) -> bytes:
    """The identification packet a device opens its connection with."""
    raw = imei.encode("ascii")
    return len(raw).to_bytes(2, "big") + raw

