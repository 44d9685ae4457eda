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


Released = Callable[[str, Owner, str], None]


class Directory:
    """
    Online devices and their owners, with the imeis kept sorted for paging: logins, logouts,
    lookups and pages take time that grows with the log of the number of devices online
    (a B-tree-like sorted list; bench/directory.py measures it), and releasing a node's
    devices takes chunks of bounded work (L{startRelease}, L{releaseSome}).
    """

    def __init__(self) -> None:
        self._owners: dict[str, Owner] = {}
        self._sorted = SortedList()
        self._releases: list[Release] = []
        self._ghosts = 0
        self.onReleased: Released = lambda imei, owner, reason: None
        """Called once for each device of a released node when it leaves the structures, or
        when another login takes it first (with the release's reason)."""

    def __len__(self) -> int:
        return len(self._owners) - self._ghosts

    @property
    def releasing(self) -> int:
        """Devices released but not yet removed (ghosts)."""
        return self._ghosts

    def owner(self, imei: str) -> Owner | None:
        owner = self._owners.get(imei)
        if owner is not None and self._releases and self._releaseOf(imei, owner) is not None:
            return None
        return owner

    def _releaseOf(self, imei: str, owner: Owner) -> Release | None:
        """The release that holds C{imei} as a ghost, if any."""
        for release in self._releases:
            if release.node is owner.node and imei in release.ghosts:
                return release
        return None

    def own(self, imei: str, node: NodeRecord, conn: int, since: float, protocol: str = "jsonl") -> Owner | None:
        """Record that C{node} holds C{imei}; return the previous owner (None if it was offline)."""
        previous = self._owners.get(imei)
        if previous is None:
            self._sorted.add(imei)
        elif self._releases and (release := self._releaseOf(imei, previous)) is not None:
            # A ghost logs in again: its release is over for it, here and now.
            release.ghosts.remove(imei)
            self._ghosts -= 1
            self.onReleased(imei, previous, release.reason)
            previous = None
        elif previous.node is not node:
            previous.node.devices.discard(imei)
        self._owners[imei] = Owner(node, conn, since, protocol)
        if previous is None or previous.node is not node:
            node.devices.add(imei)
        return previous

    def release(self, imei: str, node: NodeRecord, conn: int | None = None) -> bool:
        """Forget C{imei} if C{node} (and connection C{conn}, if given) still holds it."""
        owner = self.owner(imei)
        if owner is None or owner.node is not node or (conn is not None and owner.conn != conn):
            return False
        del self._owners[imei]
        node.devices.remove(imei)
        self._sorted.remove(imei)
        return True

    def startRelease(self, node: NodeRecord, reason: str) -> Release | None:
        """
        Every device of C{node} is offline from now on; L{releaseSome} removes them. Takes
        constant time. None when the node holds no device.
        """
        if not node.devices:
            return None
        release = Release(node, reason, node.devices)
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
        owners, remove, released, reason = self._owners, self._sorted.remove, self.onReleased, release.reason
        for imei in batch:
            owner = owners.pop(imei)
            remove(imei)
            released(imei, owner, reason)
        if ghosts:
            return False
        self._releases.remove(release)
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
                if self._releaseOf(imei, self._owners[imei]) is not None:
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
