# -*- test-case-name: tests.test_directory -*-
"""
L{SnapshotLoads}: how the node registry (L{devicehub.broker.nodes.NodeRegistry}) loads a
node's snapshot, a chunk per reactor turn, and runs its other long jobs (releasing a node's
devices) in turns too, so that the broker keeps answering meanwhile (the rules every turn
keeps are in L{devicehub.broker.nodes}).

A big snapshot comes in parts: the C{hello} with the first rows and how many C{snapshot}
parts follow; the loader reads each as it comes and, between parts, waits off the turns.
"""

from collections import deque
from dataclasses import dataclass, field
from sys import intern
from typing import Any, Iterator

from twisted.logger import Logger

from devicehub.broker.directory import NodeRecord, Owner, Sharded
from devicehub.common.imei import is_valid_imei

log = Logger()

# Devices owned or released per reactor turn (a snapshot's rows are read twice as many at a
# time): ~2 ms a turn on this project's machine (tests/test_directory.py prints it).
CHUNK = 500
WAIT = object()
"""What a load yields while it waits for its snapshot's next part."""
MAX_PARTS = 10_000
"""Most parts a snapshot is announced in (of L{devicehub.node.link.SNAPSHOT_PART} rows each)."""


@dataclass(eq=False)
class Load:
    """A node's snapshot being loaded."""

    node: NodeRecord
    rows: list | None
    now: float
    releases: int
    """The directory's releases that started before the hello."""
    expected: int = 0
    """The C{snapshot} parts that follow the hello (a big snapshot comes in parts)."""
    parts: deque = field(default_factory=deque)
    """Parts received and not read yet."""
    received: int = 0
    lastPart: float = 0.0
    """When the hello or its latest part came."""
    job: Iterator[None] | None = None
    """Its loader (L{NodeRegistry._load})."""
    parked: Iterator[None] | None = None
    """The loader, while it waits for the next part."""
    snapshot: Sharded = field(default_factory=Sharded)
    """What the rows read so far say: imei -> (conn, since, protocol)."""
    noticed: set[str] = field(default_factory=set)
    """Devices the node reported on since its hello: the snapshot's word on them is older."""
    ended: dict[str, float] = field(default_factory=dict)
    """Devices another node held since the hello, released since: when that login began."""
    parsed: bool = False
    """Every row read (until then, a device missing from C{snapshot} may be in a row not read yet)."""
    turns: int = 0
    """Turns it has waited for so far."""
    cancelled: bool = False


class SnapshotLoads:
    """
    The snapshot loading and the turns of the registry it is mixed into (which has
    C{clock}, C{directory}, C{chunk}, C{_loads}, C{_work}, C{_turn}, C{own} and C{release}).
    """

    def snapshotPart(self, node: NodeRecord, body: dict[str, Any]) -> None:
        """The next part of the snapshot C{node} is loading (parts out of turn, or of an older hello, are dropped)."""
        load = self._loads.get(node)
        if load is None or load.cancelled or body["part"] != load.received + 1 or load.received >= load.expected:
            log.warn("Dropped a snapshot part of node {node} that no hello announced", node=node.name)
            return
        load.received += 1
        load.lastPart = self.clock.seconds()
        load.parts.append(body["devices"])
        if load.parked is not None:
            job, load.parked = load.parked, None
            self._work.append(job)
            if self._turn is None:
                self._turn = self.clock.callLater(0, self._step)

    def _rows(self, load: Load) -> Iterator[list | None]:
        """The snapshot's rows, a part at a time: the hello's, then each C{snapshot} part (None: wait for it)."""
        yield load.rows
        load.rows = None
        while load.received < load.expected or load.parts:
            if load.parts:
                yield load.parts.popleft()
            else:
                yield None

    def _load(self, load: Load) -> Iterator[None]:
        """
        Load C{load}'s snapshot, a chunk per turn: read it, release what it lacks, own what
        it has. Reading a row counts as half of owning a device (it takes less, but its
        dictionaries grow, see L{devicehub.broker.directory.SHARDS}), checking one a quarter.
        """
        node, now, snapshot, noticed = load.node, load.now, load.snapshot, load.noticed
        budget = spent = self.chunk * 4
        step = self.chunk * 2
        for rows in self._rows(load):
            if rows is None:  # the next part has not come yet: wait for it, off the reactor's turns
                load.turns += 1
                load.parked = load.job
                yield WAIT
                if load.cancelled:
                    return
                spent = budget
                continue
            for start in range(0, len(rows), step):
                read = rows[start:start + step]
                rows[start:start + step] = [None] * len(read)  # freed as they are read, not all at once
                # A node's clock may run ahead: a login is never later than the broker's own time.
                for imei, conn, since, *protocol in read:
                    if is_valid_imei(imei) and imei not in noticed:
                        snapshot[imei] = (conn, min(since, now), intern(protocol[0]) if protocol else "jsonl")
                spent -= 2 * len(read)
                del read
                if spent <= 0:
                    load.turns += 1
                    yield
                    if load.cancelled:
                        return
                    spent = budget
            del rows
        load.parsed = True
        for imei in list(node.devices):
            if imei not in snapshot and imei not in noticed:
                self.release(imei, node, None, "closed")
            spent -= 1
            if not spent:
                load.turns += 1
                yield
                if load.cancelled:
                    return
                spent = budget
        while snapshot:
            imei, (conn, since, protocol) = snapshot.popitem()
            if not self._outdated(load, imei, since):
                self.own(node, imei, conn, since, "registered", protocol)
            spent -= 4
            if spent <= 0 and snapshot:
                load.turns += 1
                yield
                if load.cancelled:
                    return
                spent = budget
        if self._loads.get(node) is load:
            del self._loads[node]
        if load.turns:  # it took more than its hello's turn
            log.info("Node {node}'s snapshot is loaded ({seconds:.3f} s)", node=node.name,
                     seconds=self.clock.seconds() - now)

    def _outdated(self, load: Load, imei: str, since: float) -> bool:
        """
        Was a login newer than the snapshot's held elsewhere and ended since the hello? The
        snapshot would have lost to it, had it been loaded at once: it loses to it now.
        """
        ended = load.ended.get(imei)
        if ended is not None and ended > since:
            return True
        ghost = self.directory.ghost(imei) if self.directory.releasing else None
        return ghost is not None and ghost[1].number > load.releases and ghost[0].since > since

    def _ended(self, imei: str, owner: Owner, release: int | None = None) -> None:
        """
        C{imei}'s login on C{owner.node} ended (by the directory's release number
        C{release}), while snapshots are loading: those that came before it remember it.
        """
        for load in self._loads.values():
            if release is not None and load.releases >= release:
                continue
            if load.node is not owner.node and load.ended.get(imei, -1.0) < owner.since:
                load.ended[imei] = owner.since

    def loadingSince(self, before: float) -> bool:
        """Is a snapshot that came before C{before} still loading?"""
        return any(load.now < before for load in self._loads.values())

    @property
    def busy(self) -> bool:
        """Snapshots or releases still being worked through."""
        return bool(self._work)

    def _start(self, job: Iterator[None]) -> None:
        """Do a job's first chunk now (a small job is done at once), the rest a chunk per turn."""
        try:
            waits = next(job) is WAIT
        except StopIteration:
            return
        self._queue(job, waits)
        if self._work and self._turn is None:
            self._turn = self.clock.callLater(0, self._step)

    def _queue(self, job: Iterator[None], waits: bool) -> None:
        """Back in the turns, unless it waits (a load parked with its load until the next part comes)."""
        if not waits:
            self._work.append(job)

    def _step(self) -> None:
        """One chunk of the oldest job; jobs take turns."""
        self._turn = None
        job = self._work.popleft()
        try:
            self._queue(job, next(job) is WAIT)
        except StopIteration:
            pass
        except Exception:
            log.failure("A snapshot or a release failed half-way")
        if self._work:
            self._turn = self.clock.callLater(0, self._step)

    def settle(self) -> None:
        """Finish every job now, in this turn (for tests)."""
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        while self._work:
            self._step()
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None

    def _noticed(self, node: NodeRecord, imei: str) -> bool:
        """
        C{node} reported on C{imei}: newer than what the snapshot that may be loading says of
        it, so the snapshot's row, if read, is applied now, before the report. True if the
        report is the first on it since the hello and its row may not be read yet: then the
        connection it closes is the snapshot's, not the one the directory has.
        """
        load = self._loads.get(node)
        if load is None or imei in load.noticed:
            return False
        load.noticed.add(imei)
        entry = load.snapshot.pop(imei, None)
        if entry is not None:  # the snapshot's word first, as if it had been loaded at once
            conn, since, protocol = entry
            if not self._outdated(load, imei, since):
                self.own(node, imei, conn, since, "registered", protocol)
            return False
        return not load.parsed
