"""The watch codec a session drives: L{WatchFramer} feeding L{WatchDecoder}, and the commands."""

import re
from typing import Any, ClassVar, Hashable

from devicehub.devices.codec import BaseCodec, UnsupportedCommand
from devicehub.devices.codecs.watch.decode import WatchDecoder
from devicehub.devices.codecs.watch.framing import WatchFramer
from devicehub.devices.codecs.watch.protocol import escape, frameBytes

_INSTRUCT = re.compile(r"[!-~]+")
_INSTRUCT_FORBIDDEN = re.compile(r"[\[\]*,}]")


class WatchCodec(WatchFramer, BaseCodec):
    """
    One watch connection (see L{devicehub.devices.codecs.watch}). L{BaseCodec}'s defaults:
    commands from the first frame on, nothing for a refused watch (it is disconnected), no
    error frame.
    """

    name: ClassVar[str] = "watch"
    serial: ClassVar[bool] = True
    errorKinds: ClassVar[tuple[str, ...]] = ("decode", "identity", "too long")

    def __init__(self, maxFrame: int) -> None:
        self._decoder = WatchDecoder()
        # feed() is the framer's: each frame goes straight to the decoder, no extra call per read.
        super().__init__(maxFrame, self._decoder)

    @property
    def imei(self) -> str | None:
        """The device's id, from its first frame on."""
        return self._decoder.imei

    @property
    def manufacturer(self) -> bytes:
        """The MF of the device's last frame: commands carry it."""
        return self._decoder.manufacturer

    @property
    def hasIndex(self) -> bool:
        """Whether the device's last frame had an INDEX field: commands then carry one too."""
        return self._decoder.hasIndex

    # -- hub -> device

    def lane(self, instruct: str) -> Hashable:
        """One unanswered command per keyword: the device's answer carries nothing but the keyword."""
        return instruct.upper()

    def encodeCommand(self, instruct: str, data: Any, number: int) -> tuple[bytes, Hashable]:
        """C{[MF*ID*LEN*INSTRUCT(,field)...]}; C{data}: None, a string or a list of strings."""
        if (
            not isinstance(instruct, str)
            or not _INSTRUCT.fullmatch(instruct)
            or _INSTRUCT_FORBIDDEN.search(instruct)
        ):
            raise UnsupportedCommand(
                "watch: instruct must be one keyword of printable ASCII without [ ] * , } "
                "(arguments go in data)"
            )
        if data is None:
            fields: list[str] = []
        elif isinstance(data, str):
            fields = [data]
        elif isinstance(data, list) and all(isinstance(field, str) for field in data):
            fields = data
        else:
            raise UnsupportedCommand("watch: data must be null, a string or a list of strings")
        if self.imei is None:
            raise UnsupportedCommand("watch: the device has not identified yet")
        content = b",".join([instruct.encode("ascii")] + [escape(field.encode("utf-8")) for field in fields])
        if len(content) > 0xFFFF:
            raise UnsupportedCommand("watch: command longer than 65535 bytes")
        frame = frameBytes(self.manufacturer, self._decoder.ident, b"0001" if self.hasIndex else None, content)
        return frame, instruct.upper()
