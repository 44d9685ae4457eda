"""A simulated JSON Lines device (CONTRACT §2), sans-IO, with the same face as the other simulators."""

import json
from datetime import datetime, timezone
from typing import Any

from devicehub.common.jsoncodec import dumps


class JsonlDevice:
    """
    A device speaking devicehub's JSON Lines: logs in, pings, reports positions and acks
    every command with C{reply} as its data (unless C{silent}).
    """

    def __init__(self, imei: str, silent: bool = False, reply: Any = "done", token: str | None = None) -> None:
        self.imei = imei
        self.silent = silent
        self.reply = reply
        self.token = token
        self.commands: list[dict[str, Any]] = []
        self._buffer = b""

    @staticmethod
    def _line(message: dict[str, Any]) -> bytes:
        return dumps(message) + b"\n"

    def hello(self) -> bytes:
        login = {"type": "login", "imei": self.imei}
        if self.token is not None:
            login["token"] = self.token
        return self._line(login)

    def heartbeat(self) -> bytes:
        return self._line({"type": "ping"})

    def position(self, lat: float, lon: float, speed: float = 0.0, course: float = 0.0,
                 time: datetime | None = None) -> bytes:
        when = (time or datetime.now(timezone.utc)).astimezone(timezone.utc)
        return self._line({"type": "location", "lat": lat, "lon": lon, "speed": speed, "course": course,
                           "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "valid": True})

    def feed(self, data: bytes) -> list[bytes]:
        """What the device answers to what the hub sent: an ack for each command."""
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        answers = []
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("type") == "command":
                self.commands.append(message)
                if not self.silent:
                    answers.append(self._line({"type": "ack", "ident": message["ident"], "data": self.reply}))
        return answers
