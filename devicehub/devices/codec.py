"""
The codec interface: what a device protocol is, apart from the session.

A codec turns the bytes a device sends into the session's common messages and
turns commands into bytes. It does no I/O, keeps no timers and knows nothing of
nodes or brokers (sans-IO): one instance per connection, fed bytes as they
arrive, in any split. The session (login and idle timeouts, the bad-frame
budget, pending commands and their timeouts, backpressure, replaced connections,
limits) is written once and drives every codec, JSON Lines included.

Device -> hub, from L{Codec.feed}, in the order the frames arrived:
  - L{Identify}: who the device is (first frame of GT06 and Teltonika; any frame of a watch)
  - L{Heartbeat}: a keep-alive, perhaps with status to publish
  - L{Answer}: the device's answer to a command
  - L{Uplink}: anything else worth an event: location, alarm, status, raw
  - L{Reply}: bytes the hub owes the device now (e.g. Teltonika's record count)
  - L{BadFrame}: a frame that was dropped (bad checksum, undecodable, too long)

Every message but L{BadFrame} may carry C{reply}: bytes to send the device once the
session has handled the message (an L{Identify}'s reply only if the login is accepted).

L{Codec} is the interface; L{BaseCodec} holds the defaults a codec may inherit.
"""

from dataclasses import dataclass, field
from typing import Any, ClassVar, Hashable, Protocol


@dataclass(slots=True)
class Identify:
    """The device says who it is."""

    imei: str
    token: str | None = None
    """A login token, for protocols that carry one (JSON Lines)."""
    reply: bytes = b""
    """Sent once the session accepts the login (JSON Lines: its C{status} 200 line)."""


@dataclass(slots=True)
class Heartbeat:
    """A keep-alive; C{status} (battery, GSM signal, ...) is published as a C{status} event when given."""

    reply: bytes = b""
    status: dict[str, Any] | None = None


@dataclass(slots=True)
class Answer:
    """
    The device answered a command: C{key} is matched against the keys L{Codec.encodeCommand}
    returned for the commands waiting for an answer, the oldest first.
    """

    key: Hashable
    data: Any = None
    """The reply data handed back to the caller."""
    reply: bytes = b""
    fallback: bool = False
    """When C{key} matches nothing, take the only unanswered command, if there is exactly one."""
    unmatched: "Uplink | None" = field(default=None, compare=False)
    """The event to publish instead when the frame answers no command (None: drop it)."""


@dataclass(slots=True)
class Uplink:
    """A frame the device sent on its own, published as an event of C{type} with C{data}."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    reply: bytes = b""


@dataclass(slots=True)
class Reply:
    """Bytes the hub owes the device now."""

    reply: bytes


@dataclass(slots=True)
class BadFrame:
    """
    A frame that was dropped: counted by C{kind} (C{checksum}, C{decode}, C{too long}, ...),
    never answered, never an event. C{fatal} frames close the connection (after
    L{Codec.error} bytes, if any); the others count against the bad-frame budget.
    """

    kind: str
    error: str
    fatal: bool = False


Message = Identify | Heartbeat | Answer | Uplink | Reply | BadFrame


class UnsupportedCommand(ValueError):
    """A command this protocol cannot carry (e.g. C{data} that is not null for GT06)."""


class Codec(Protocol):
    """One connection's codec (see the module docstring)."""

    name: ClassVar[str]
    """The protocol's name in C{--listen NAME=ENDPOINT}, in events and in metrics."""

    serial: ClassVar[bool]
    """
    True: the device cannot tell commands apart, so at most one command per L{lane} waits
    for an answer at a time and the others wait their turn (every protocol but JSON Lines).
    """

    errorKinds: ClassVar[tuple[str, ...]]
    """The C{kind}s of its L{BadFrame}s, counted from the start (at 0) in the metrics."""

    tokens: ClassVar[bool]
    """Optional (default False): logins carry a token checked against C{--device-secret}."""

    strict: ClassVar[bool]
    """Optional (default False): a bad frame before the login closes the connection."""

    def __init__(self, maxFrame: int) -> None:
        """@param maxFrame: the longest frame in bytes (C{--max-line}); longer ones are fatal."""

    def feed(self, data: bytes) -> list[Message]:
        """Take the next bytes the device sent; return the messages of every frame they complete."""

    def lane(self, instruct: str) -> Hashable:
        """For a L{serial} codec: commands of one lane are answered one at a time, in order."""

    def encodeCommand(self, instruct: str, data: Any, number: int) -> tuple[bytes, Hashable]:
        """
        The bytes of a command and the key its L{Answer} will carry. C{number} is unique
        among this connection's unanswered commands, in 1..2147483647.

        @raise UnsupportedCommand: the protocol cannot carry this command.
        """

    @property
    def ready(self) -> bool:
        """Whether commands may be written now (Teltonika: once the first data packet was acked)."""

    def refused(self, status: int, error: str) -> bytes:
        """Bytes that tell the device its login was refused (then the connection closes)."""

    def error(self, error: str) -> bytes:
        """Bytes that tell the device a frame was rejected, or why the hub closes (JSON Lines only)."""


class BaseCodec:
    """
    The defaults of a L{Codec}, written once: a codec inherits them and overrides only
    what its protocol does otherwise. It still writes C{name}, C{serial}, C{errorKinds},
    C{__init__}, C{feed} and C{encodeCommand} (and C{lane}, if its commands have lanes).

    The defaults are those of a protocol without secrets or error frames: logins carry no
    token, a bad frame before the login counts against the budget like any other, commands
    may be written at any time, one lane per device, and the device is told nothing when
    its login is refused or a frame is rejected (the hub closes, or drops the frame).
    """

    __slots__ = ()  # a codec that declares its own keeps no dict: one per connection

    tokens: ClassVar[bool] = False
    strict: ClassVar[bool] = False
    ready: bool = True
    """Commands may be written at any time (a codec that must wait makes this a property)."""

    def lane(self, instruct: str) -> Hashable:
        """One lane: one unanswered command per device, for a L{Codec.serial} codec."""
        return None

    def refused(self, status: int, error: str) -> bytes:
        """Nothing: the device learns of the refusal when the hub closes."""
        return b""

    def error(self, error: str) -> bytes:
        """Nothing: the protocol has no error frame."""
        return b""
