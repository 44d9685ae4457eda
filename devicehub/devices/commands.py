"""
The commands one device connection has sent and waits an answer for.

L{PendingCommands} numbers each command, writes it (or, for a serial codec, queues it
behind the one waiting for an answer in its lane), matches answers to it by the key the
codec gave it, and times it out. A L{DeviceSession} has one and feeds it the answers.
"""

from collections import deque
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Hashable, Mapping, Protocol

from twisted.internet.defer import Deferred

from devicehub.common.deadlines import Deadline, Deadlines
from devicehub.common.results import OK, TIMEOUT, Reply
from devicehub.devices.codec import Codec

MAX_IDENT = 2_147_483_647
"""The highest command number; numbers wrap to 1 after it."""

# What a connection with no command keeps instead of three empty dicts (200 bytes each idle device).
_NONE: Mapping[Any, Any] = MappingProxyType({})


class CommandsSession(Protocol):
    """What L{PendingCommands} tells its session."""

    def write(self, data: bytes) -> None:
        """Write a command's bytes to the device."""

    def mayWriteNext(self) -> bool:
        """Whether a serial codec may take its next command now."""

    def notAcked(self, number: int, instruct: str, result: str) -> None:
        """A command ended without an ack, with C{result}."""


@dataclass(eq=False, slots=True)
class _Command:
    number: int
    lane: Hashable
    frame: bytes
    key: Hashable
    instruct: str
    result: "Deferred[Reply]" = field(default_factory=Deferred)
    written: bool = False
    deadline: Deadline | None = None


_TIMED_OUT = Reply(TIMEOUT)


class PendingCommands:
    """
    One connection's unanswered commands, written or waiting their turn.

    @param session: its connection's session (L{CommandsSession}), which it writes to.
    @param deadlines: the timeouts' timer, shared by the connections of a node (by default
        one of this connection's own on C{clock}).
    """

    __slots__ = (
        "_closed", "_codec", "_commands", "_deadlines", "_finishedKeys", "_session", "_written", "lastNumber",
        "waiting",
    )

    def __init__(self, codec: Codec, clock, session: CommandsSession, deadlines: Deadlines | None = None) -> None:
        self._codec = codec
        self._deadlines = deadlines if deadlines is not None else Deadlines(clock)
        # The session itself, not three bound methods of it: 200 bytes less per connection.
        self._session = session
        # While no command is unanswered, the three are the one read-only _NONE.
        self._commands: dict[int, _Command] = _NONE  # type: ignore[assignment]
        """Every unanswered command, written or waiting its turn, by number."""
        self._written: dict[Hashable, _Command] = _NONE  # type: ignore[assignment]
        """The written unanswered commands by the key their answer carries (one command per key)."""
        self.waiting: dict[Hashable, deque[_Command]] = _NONE  # type: ignore[assignment]
        """A serial codec's commands waiting for their lane, by lane."""
        self.lastNumber = 0
        """The number given last."""
        self._finishedKeys: deque[Hashable] | tuple[()] = ()
        """The keys of the last answered or timed-out commands (a deque once there are any)."""
        self._closed = False

    def send(self, instruct: str, data: Any, timeout: float) -> "Deferred[Reply]":
        """
        Encode and write a command, or queue it; the result fires with the device's answer, or
        TIMEOUT after C{timeout} seconds or at L{close}.

        @raise UnsupportedCommand: the protocol cannot carry this command.
        """
        number = self._nextNumber()
        frame, key = self._codec.encodeCommand(instruct, data, number)
        lane = self._codec.lane(instruct) if self._codec.serial else None
        command = _Command(number, lane, frame, key, instruct)
        if self._commands is _NONE:
            self._commands, self._written = {}, {}
        self._commands[number] = command
        command.deadline = self._deadlines.callLater(timeout, self._end, command, _TIMED_OUT)
        if self._mayWrite(command):
            self._write(command)
        else:
            if self.waiting is _NONE:
                self.waiting = {}
            self.waiting.setdefault(lane, deque()).append(command)
        return command.result

    def answer(self, key: Hashable, fallback: bool, data: Any) -> bool:
        """
        Fire the written command that C{key} names with an OK reply of C{data}; False if none.
        With C{fallback}, a key that names none takes the only written command, unless the
        key is that of a command that ended already (a late answer is not the next one's).
        """
        command = self._written.get(key)
        if command is None and fallback and len(self._written) == 1 and key not in self._finishedKeys:
            command = next(iter(self._written.values()))
        if command is None:
            return False
        self._end(command, Reply(OK, data))
        return True

    def __len__(self) -> int:
        """How many commands wait for an answer, written or waiting their turn."""
        return len(self._commands)

    def results(self) -> "list[Deferred[Reply]]":
        """The results of the commands unanswered now (each fires once, answered or timed out)."""
        return [command.result for command in self._commands.values()]

    def close(self) -> None:
        """The connection closed: every unanswered command times out now, and nothing more is written."""
        self._closed = True
        for command in list(self._commands.values()):
            self._end(command, _TIMED_OUT)

    def pump(self) -> None:
        """Write each lane's next waiting command once its lane is free."""
        for lane in list(self.waiting):
            queue = self.waiting[lane]
            if self._mayWrite(queue[0]):
                command = queue.popleft()
                if not queue:
                    del self.waiting[lane]
                self._write(command)

    def _mayWrite(self, command: _Command) -> bool:
        if command.key in self._written:  # its answer could not be told from the other's
            return False
        if not self._codec.serial:
            return True
        return self._session.mayWriteNext() and not any(c.lane == command.lane for c in self._written.values())

    def _write(self, command: _Command) -> None:
        command.written = True
        self._written[command.key] = command
        self._session.write(command.frame)

    def _end(self, command: _Command, reply: Reply) -> None:
        """Forget the command, then fire its result (not a callback of its own on it: ~0.4 us less a command)."""
        self._forget(command, reply.result)
        command.result.callback(reply)

    def _forget(self, command: _Command, result: str) -> None:
        command.deadline.cancel()
        self._commands.pop(command.number, None)
        if not self._finishedKeys:
            self._finishedKeys = deque(maxlen=64)
        self._finishedKeys.append(command.key)
        if command.written:
            del self._written[command.key]
        elif command.lane in self.waiting:
            queue = self.waiting[command.lane]
            queue.remove(command)
            if not queue:
                del self.waiting[command.lane]
        if result != OK:  # an ack is the common case, and counted in the metrics
            self._session.notAcked(command.number, command.instruct, result)
        if self.waiting and not self._closed:
            self.pump()
        if not self._commands and not self._closed:
            self._commands = self._written = self.waiting = _NONE  # type: ignore[assignment]

    def _nextNumber(self) -> int:
        number = self.lastNumber
        while True:
            number = number % MAX_IDENT + 1
            if number not in self._commands:
                self.lastNumber = number
                return number

