"""
The broker's directory: which node holds which online device, kept sorted for paging.
"""

from dataclasses import dataclass, field
from typing import NamedTuple

from sortedcontainers import SortedList


@dataclass(eq=False)
class NodeRecord:
    """What the broker knows of one attached node."""

    identity: bytes
    name: str
    lastSeen: float
    instance: str = ""
    """The node process's own random id: the same name from another process is another node."""
    devices: set[str] = field(default_factory=set)
    inflight: set[bytes] = field(default_factory=set)
    leaving: bool = False
    """Said C{bye}: holds no devices, kept only until its commands in flight are answered."""


class Owner(NamedTuple):
    """The node and connection that hold a device, and when the device logged in."""

    node: NodeRecord
    conn: int
    since: float
    protocol: str = "jsonl"


class Directory:
    """
    Online devices and their owners, with the imeis kept sorted for paging: logins, logouts,
    lookups and pages take time that grows with the log of the number of devices online
    (a B-tree-like sorted list; bench/directory.py measures it).
    """

    def __init__(self) -> None:
        self._owners: dict[str, Owner] = {}
        self._sorted = SortedList()

    def __len__(self) -> int:
        return len(self._owners)

    def owner(self, imei: str) -> Owner | None:
        return self._owners.get(imei)

    def own(self, imei: str, node: NodeRecord, conn: int, since: float, protocol: str = "jsonl") -> Owner | None:
        """Record that C{node} holds C{imei}; return the previous owner."""
        previous = self._owners.get(imei)
        if previous is None:
            self._sorted.add(imei)
        else:
            previous.node.devices.discard(imei)
        self._owners[imei] = Owner(node, conn, since, protocol)
        node.devices.add(imei)
        return previous

    def release(self, imei: str, node: NodeRecord, conn: int | None = None) -> bool:
        """Forget C{imei} if C{node} (and connection C{conn}, if given) still holds it."""
        owner = self._owners.get(imei)
        if owner is None or owner.node is not node or (conn is not None and owner.conn != conn):
            return False
        del self._owners[imei]
        node.devices.discard(imei)
        self._sorted.remove(imei)
        return True

    def releaseAll(self, node: NodeRecord) -> None:
        """Forget every device of C{node}."""
        gone = node.devices
        node.devices = set()
        for imei in gone:
            del self._owners[imei]
        if len(gone) < len(self._owners) // 4:
            for imei in gone:
                self._sorted.remove(imei)
        else:  # most of them: rebuilding is cheaper than removing one by one
            self._sorted = SortedList(self._owners)

    def page(self, num: int, page: int) -> list[str]:
        """Page C{page} (0 first) of C{num} imeis, sorted ascending."""
        start = num * page
        return list(self._sorted.islice(start, start + num))
