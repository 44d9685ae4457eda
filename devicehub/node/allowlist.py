"""
Who may connect: an allow-list of device identities for every protocol (C{--allow FILE}).

The file holds one entry per line: an exact identity (C{861234567890123}) or a shell-style
pattern (C{8612*}, C{86123456789012?}); blank lines and C{#} comments are ignored. It is
read at start (a file that cannot be read stops the start), and again when it changes
(checked every few seconds) or on SIGHUP; a file that cannot be read then keeps the list
in force and says why in the log.
"""

import fnmatch
import os
import re

from twisted.logger import Logger

log = Logger()


class AllowList:
    """The identities in the file at C{path}."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._exact: frozenset[str] = frozenset()
        self._patterns: re.Pattern | None = None
        self._version: tuple[float, int] | None = None
        self.load()

    def allows(self, imei: str) -> bool:
        """Whether C{imei} may log in."""
        return imei in self._exact or (self._patterns is not None and self._patterns.match(imei) is not None)

    def load(self) -> None:
        """Read the file; raise C{OSError} or C{ValueError} when it cannot be."""
        stat = os.stat(self.path)
        with open(self.path, encoding="utf-8") as lines:
            entries = [line.split("#", 1)[0].strip() for line in lines]
        entries = [entry for entry in entries if entry]
        patterns = [entry for entry in entries if any(c in entry for c in "*?[")]
        self._exact = frozenset(entry for entry in entries if entry not in patterns)
        self._patterns = re.compile("|".join(fnmatch.translate(p) for p in patterns)) if patterns else None
        self._version = (stat.st_mtime, stat.st_size)
        log.info("Allow-list {path}: {exact} identities and {patterns} patterns",
                 path=self.path, exact=len(self._exact), patterns=len(patterns))

    def refresh(self, force: bool = False) -> None:
        """Read the file again if it changed (or C{force}); keep the list in force if it cannot be read."""
        try:
            stat = os.stat(self.path)
            if force or (stat.st_mtime, stat.st_size) != self._version:
                self.load()
        except (OSError, ValueError) as e:
            log.error("Cannot read the allow-list {path}; keeping the one in force: {error}", path=self.path, error=e)

    def __len__(self) -> int:
        return len(self._exact) + (0 if self._patterns is None else 1)
