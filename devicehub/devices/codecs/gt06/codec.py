"""The GT06 codec a session drives: L{Gt06Framer} feeding L{Gt06Decoder}, and the server commands."""

from typing import Any, Hashable

from devicehub.devices.codec import BaseCodec, UnsupportedCommand
from devicehub.devices.codecs.gt06.decode import Gt06Decoder
from devicehub.devices.codecs.gt06.framing import Gt06Framer
from devicehub.devices.codecs.gt06.protocol import COMMAND, MAX_COMMAND, frame


class Gt06Codec(Gt06Framer, BaseCodec):
    """
    One GT06 connection (see L{devicehub.devices.codecs.gt06} and L{devicehub.devices.codec}).
    L{BaseCodec}'s defaults: one command per device (replies carry no reliable id), commands
    at any time, no ack for a refused login, no error frame.
    """

    name = "gt06"
    serial = True
    errorKinds = ("checksum", "decode", "identity", "too long")

    def __init__(self, maxFrame: int) -> None:
        self._decoder = Gt06Decoder()
        # feed() is the framer's: each frame goes straight to the decoder, no extra call per read.
        super().__init__(maxFrame, self._decoder.decode)
        self._commandSerial = -1

    @property
    def imei(self) -> str | None:
        """The device's IMEI, once it logged in."""
        return self._decoder.imei

    # -- hub -> device

    def encodeCommand(self, instruct: str, data: Any, number: int) -> tuple[bytes, Hashable]:
        """A server command (0x80) carrying C{instruct} as ASCII text and C{number} as its server flag."""
        if data is not None:
            raise UnsupportedCommand("gt06 commands carry no data: give the whole command text as instruct")
        if not isinstance(instruct, str) or not instruct:
            raise UnsupportedCommand("gt06 commands need a command text")
        try:
            text = instruct.encode("ascii")
        except UnicodeEncodeError:
            raise UnsupportedCommand("gt06 command text must be ASCII") from None
        if len(text) > MAX_COMMAND:
            raise UnsupportedCommand(f"gt06 command text is longer than {MAX_COMMAND} bytes")
        if not 0 <= number <= 0xFFFFFFFF:
            raise UnsupportedCommand("gt06 server flag must fit in 4 bytes")
        self._commandSerial = (self._commandSerial + 1) & 0xFFFF
        content = bytes((len(text) + 4,)) + number.to_bytes(4, "big") + text
        return frame(COMMAND, content, self._commandSerial), number
