"""The Teltonika codec a session drives: L{TeltonikaFramer} feeding L{TeltonikaDecoder}, and Codec 12 commands."""

from typing import Any, Hashable

from devicehub.devices.codec import BaseCodec, UnsupportedCommand
from devicehub.devices.codecs.teltonika.decode import TeltonikaDecoder
from devicehub.devices.codecs.teltonika.framing import TeltonikaFramer
from devicehub.devices.codecs.teltonika.protocol import REFUSE, TYPE_COMMAND, codec12


class TeltonikaCodec(TeltonikaFramer, BaseCodec):
    """
    One Teltonika connection (see L{devicehub.devices.codecs.teltonika}). L{BaseCodec}'s
    defaults: one command per device, no error packet; commands wait (L{ready}) and a
    refused login is told (L{refused}).
    """

    name = "teltonika"
    serial = True
    errorKinds = ("checksum", "decode", "identity", "too long")

    def __init__(self, maxFrame: int) -> None:
        self._decoder = TeltonikaDecoder()
        # feed() is the framer's: each packet goes straight to the decoder, no extra call per read.
        super().__init__(maxFrame, self._decoder.packet)

    @property
    def ready(self) -> bool:
        """Commands wait until the hub acked the device's first AVL data packet on this connection."""
        return self._decoder.acked

    def encodeCommand(self, instruct: str, data: Any, number: int) -> tuple[bytes, Hashable]:
        """A Codec 12 command carrying C{instruct} as its text; answers carry the key C{None}."""
        if data is not None:
            raise UnsupportedCommand("teltonika commands carry no data: put the whole command in instruct")
        try:
            payload = instruct.encode("ascii")
        except UnicodeEncodeError:
            raise UnsupportedCommand("teltonika commands are ASCII text") from None
        return codec12(TYPE_COMMAND, payload), None

    def refused(self, status: int, error: str) -> bytes:
        """The handshake's refusal, C{00}."""
        return REFUSE
