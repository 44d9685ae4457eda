# -*- test-case-name: tests.test_directory -*-
"""
The broker's directory: which node holds which online device, kept sorted for paging.

Forgetting every device of a node that is gone can be a million devices: too much work for
one reactor turn. So L{Directory.startRelease} only marks them released, at once (from then
on they are offline: not owned, not counted, not listed), and L{Directory.releaseSome} then
removes them from the structures a chunk at a time. Until a released device is removed it
is a I{ghost}: it stays in the dictionary of owners and the sorted list, and every answer
skips it.
"""

from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from sortedcontainers import SortedList

# When paging meets this many ghosts in a row, it jumps over the run by rank instead.
GHOST_RUN = 32

# The owners are kept in this many dictionaries, by the imei's hash: a dictionary grows by
# copying itself whole, ~25 ms at 700 000 entries and ~55 ms at 1.4 million on this
# project's machine, a reactor turn that long; a sixteenth of that is a few milliseconds.
SHARDS = 16
MASK = SHARDS - 1


def _shard() -> dict:
    """
    A dictionary that the collector always tracks: a dictionary of only numbers, strings
    and tuples of them is untracked, and inserting a new tuple (tracked until the collector
    first looks at it) tracks it again as a young object, so that every young collection
    went through all its entries. The key is no imei.
    """
    return {None: []}


class Sharded:
    """A dictionary split in L{SHARDS} by the keys' hashes (see there why), for what is not on a hot path."""

    def __init__(self) -> None:
        self.shards: list[dict] = [_shard() for _ in range(SHARDS)]
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def __contains__(self, key) -> bool:
        return key in self.shards[hash(key) & MASK]

    def __getitem__(self, key):
        return self.shards[hash(key) & MASK][key]

    def get(self, key, default=None):
        return self.shards[hash(key) & MASK].get(key, default)

    def __setitem__(self, key, value) -> None:
        shard = self.shards[hash(key) & MASK]
        self.count += key not in shard
        shard[key] = value

    def pop(self, key, *default):
        shard = self.shards[hash(key) & MASK]
        if key in shard:
            self.count -= 1
            return shard.pop(key)
        if default:
            return default[0]
        raise KeyError(key)

    def popitem(self):
        for shard in self.shards:
            if len(shard) > 1:  # the first entry is the shard's own (L{_shard})
                self.count -= 1
                return shard.popitem()
        raise KeyError("popitem(): empty")


@dataclass(eq=False)
class NodeRecord:
    """What the broker knows of one attached node."""

    identity: bytes
    name: str
    lastSeen: float
    instance: str = ""
    """The node process's own random id: the same name from another process is another node."""
    devices: SortedList = field(default_factory=SortedList)
    """The imeis it holds, sorted: a release needs them in order (see L{Directory.page})."""
    number: int = 0
    """Its number in the directory's L{Held} tuples (0: none yet)."""
    inflight: set[bytes] = field(default_factory=set)
    leaving: bool = False
    """Said C{bye}: holds no devices, kept only until its commands in flight are answered."""


class Owner(NamedTuple):
    """The node and connection that hold a device, and when the device logged in."""

    node: NodeRecord
    conn: int
    since: float
    protocol: str = "jsonl"


@dataclass(eq=False)
class Release:
    """The devices of a node being forgotten, that are still in the directory's structures."""

    node: NodeRecord
    reason: str
    ghosts: SortedList
    number: int
    """Releases are numbered from 1 as they start (L{Directory.releases} is the last one's)."""


Released = Callable[[str, Owner, Release], None]

Held = tuple[int, int, float, str]
"""
What the directory keeps of a device: its node's number, conn, since, protocol. Only
numbers and strings, so that the garbage collector stops tracking it at its first look: a
million tracked L{Owner}s (they refer to a node) made each full collection of the broker
take over half a second, a reactor turn that long every few hundred thousand logins.
"""


def _owner(fields: tuple) -> Owner:
    return tuple.__new__(Owner, fields)


class Directory:
    """
    Online devices and their owners, with the imeis kept sorted for paging: logins, logouts,
    lookups and pages take time that grows with the log of the number of devices online
    (a B-tree-like sorted list; bench/directory.py measures it), and releasing a node's
    devices takes chunks of bounded work (L{startRelease}, L{releaseSome}).
    """

    def __init__(self) -> None:
        self._shards: list[dict[str, Held]] = [_shard() for _ in range(SHARDS)]
        """What each imei's owner is, in dictionaries by the imei's hash (see L{SHARDS})."""
        self._count = 0
        self._sorted = SortedList()
        self._nodes: dict[int, NodeRecord] = {}
        """The nodes that hold devices (or ghosts), by their number in L{Held}."""
        self._numbered = 0
        self._releases: list[Release] = []
        self._ghosts = 0
        self.releases = 0
        """How many releases have started."""
        self.onReleased: Released = lambda imei, owner, release: None
        """Called once for each device of a released node when it leaves the structures, or
        when another login takes it first."""

    def __len__(self) -> int:
        return self._count - self._ghosts

    @property
    def releasing(self) -> int:
        """Devices released but not yet removed (ghosts)."""
        return self._ghosts

    def owner(self, imei: str) -> Owner | None:
        held = self._shards[hash(imei) & MASK].get(imei)
        if held is None:
            return None
        node = self._nodes[held[0]]
        if self._releases and self._releaseOf(imei, node) is not None:
            return None
        return _owner((node, held[1], held[2], held[3]))

    def ghost(self, imei: str) -> tuple[Owner, Release] | None:
        """The owner C{imei} had and the release that made it a ghost, if it is one."""
        held = self._shards[hash(imei) & MASK].get(imei)
        if held is None or not self._releases:
            return None
        node = self._nodes[held[0]]
        release = self._releaseOf(imei, node)
        return None if release is None else (_owner((node, held[1], held[2], held[3])), release)

    def _releaseOf(self, imei: str, node: NodeRecord) -> Release | None:
        """The release that holds C{imei} (held by C{node}) as a ghost, if any."""
        for release in self._releases:
            if release.node is node and imei in release.ghosts:
                return release
        return None

    def _number(self, node: NodeRecord) -> int:
        """C{node}'s number in L{Held}, given now if it holds nothing yet."""
        if self._nodes.get(node.number) is not node:
            self._numbered += 1
            node.number = self._numbered
            self._nodes[node.number] = node
        return node.number

    def _forget(self, node: NodeRecord) -> None:
        """Drop C{node}'s number once nothing refers to it (it holds no device, no ghost)."""
        if not node.devices and all(release.node is not node for release in self._releases):
            if self._nodes.get(node.number) is node:
                del self._nodes[node.number]

    def own(self, imei: str, node: NodeRecord, conn: int, since: float, protocol: str = "jsonl") -> Owner | None:
        """Record that C{node} holds C{imei}; return the previous owner (None if it was offline)."""
        owners = self._shards[hash(imei) & MASK]
        held = owners.get(imei)
        previous = None
        if held is None:
            self._sorted.add(imei)
            self._count += 1
        else:
            holder = self._nodes[held[0]]
            previous = _owner((holder, held[1], held[2], held[3]))
            if self._releases and (release := self._releaseOf(imei, holder)) is not None:
                # A ghost logs in again: its release is over for it, here and now.
                release.ghosts.remove(imei)
                self._ghosts -= 1
                self.onReleased(imei, previous, release)
                previous = None
            elif holder is not node:
                holder.devices.discard(imei)
        owners[imei] = (self._number(node), conn, since, protocol)
        if previous is None or previous.node is not node:
            node.devices.add(imei)
        if previous is not None and previous.node is not node:
            self._forget(previous.node)
        return previous

    def release(self, imei: str, node: NodeRecord, conn: int | None = None) -> bool:
        """Forget C{imei} if C{node} (and connection C{conn}, if given) still holds it."""
        owner = self.owner(imei)
        if owner is None or owner.node is not node or (conn is not None and owner.conn != conn):
            return False
        del self._shards[hash(imei) & MASK][imei]
        self._count -= 1
        node.devices.remove(imei)
        self._sorted.remove(imei)
        if not node.devices:
            self._forget(node)
        return True

    def startRelease(self, node: NodeRecord, reason: str) -> Release | None:
        """
        Every device of C{node} is offline from now on; L{releaseSome} removes them. Takes
        constant time. None when the node holds no device.
        """
        if not node.devices:
            return None
        self.releases += 1
        release = Release(node, reason, node.devices, self.releases)
        node.devices = SortedList()
        self._releases.append(release)
        self._ghosts += len(release.ghosts)
        return release

    def releaseSome(self, release: Release, limit: int) -> bool:
        """Remove up to C{limit} ghosts of C{release}, calling L{onReleased} for each; True when it is done."""
        ghosts = release.ghosts
        batch = list(ghosts.islice(max(0, len(ghosts) - limit)))
        del ghosts[len(ghosts) - len(batch):]
        self._ghosts -= len(batch)
        self._count -= len(batch)
        shards, remove, released, node = self._shards, self._sorted.remove, self.onReleased, release.node
        for imei in batch:
            held = shards[hash(imei) & MASK].pop(imei)
            remove(imei)
            released(imei, _owner((node, held[1], held[2], held[3])), release)
        if ghosts:
            return False
        self._releases.remove(release)
        self._forget(node)
        return True

    def releaseAll(self, node: NodeRecord, reason: str = "") -> None:
        """Forget every device of C{node}, at once (in one turn, however many)."""
        release = self.startRelease(node, reason)
        if release is not None:
            self.releaseSome(release, len(release.ghosts))

    def page(self, num: int, page: int) -> list[str]:
        """Page C{page} (0 first) of C{num} imeis, sorted ascending."""
        start = num * page
        if not self._releases:
            return list(self._sorted.islice(start, start + num))
        found: list[str] = []
        while len(found) < num:
            position = self._position(start + len(found))
            run = 0
            for imei in self._sorted.islice(position):
                if self._releaseOf(imei, self._nodes[self._shards[hash(imei) & MASK][imei][0]]) is not None:
                    run += 1
                    if run >= GHOST_RUN:
                        break
                    continue
                run = 0
                found.append(imei)
                if len(found) == num:
                    break
            else:
                break  # the end of the list
        return found

    def _liveBefore(self, position: int) -> int:
        """How many live (not ghost) imeis the sorted list has before C{position}."""
        if position >= len(self._sorted):
            return len(self)
        imei = self._sorted[position]
        return position - sum(release.ghosts.bisect_left(imei) for release in self._releases)

    def _position(self, rank: int) -> int:
        """The position in the sorted list of the live imei of rank C{rank} (0 first), or its length."""
        low, high = rank, len(self._sorted)  # a live imei of that rank is at least that far in
        while low < high:  # the first position with more than `rank` live imeis up to and including it
            middle = (low + high) // 2
            if self._liveBefore(middle + 1) > rank:
                high = middle
            else:
                low = middle + 1
        return low
