"""L{DeviceSettings}: how a node treats device connections."""

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceSettings:
    """How a node treats device connections (the device options of twistd devicehub)."""

    loginTimeout: float = 30.0
    idleTimeout: float = 300.0
    maxLine: int = 65536
    """The longest frame in bytes, for every protocol."""
    secret: bytes | None = None
    """When set, logins of protocols that carry a token must carry one (see L{devicehub.devices.login.device_token})."""
    maxDevices: int = 10_000
    """Devices logged in at once; further logins are refused with "node full"."""
    maxLogins: int | None = None
    """Connections not yet logged in at once, on top of C{maxDevices} (default: a tenth of it, at least 16)."""
    maxPending: int = 64
    """Unanswered commands per device; more are refused as busy."""
    maxOutgoing: int = 1 << 20
    """Bytes that may wait for a device that stopped reading before it is cut off."""
    maxBadLines: int = 10
    """Bad frames tolerated within L{devicehub.devices.budget.BAD_LINE_WINDOW} seconds."""

    @property
    def loginBudget(self) -> int:
        """Connections that may be waiting to log in at once; more are refused."""
        return self.maxLogins if self.maxLogins is not None else max(16, self.maxDevices // 10)
