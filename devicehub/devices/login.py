"""
A device session's login step: whether a device may log in as the IMEI it gives
(L{login_refusal}, before the node is asked), and L{LoginStep}, the part of
L{devicehub.devices.session.DeviceSession} that takes or refuses an L{Identify}.

With a device secret, a login of a protocol that carries tokens must carry
C{token} = hex HMAC-SHA256(secret, imei) (L{device_token}).
"""

import hashlib
import hmac

from twisted.logger import Logger

from devicehub.common.imei import is_valid_imei
from devicehub.common.logs import Throttled
from devicehub.devices.codec import Identify

deviceLog = Throttled(Logger(namespace="devicehub.devices.session"))


def device_token(secret: bytes | str, imei: str) -> str:
    """The login token of C{imei}: hex HMAC-SHA256 keyed with the node's device secret (UTF-8 if a str)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, imei.encode(), hashlib.sha256).hexdigest()


def login_refusal(message: Identify, secret: bytes | None, tokens: bool) -> tuple[int, str] | None:
    """
    None when C{message} names a valid IMEI and, if C{secret} is set and the protocol
    carries C{tokens}, carries that IMEI's token; else C{(status, error)} for the device.
    """
    imei = message.imei
    if not is_valid_imei(imei):
        return 400, "invalid imei"
    if secret is not None and tokens:
        token = message.token
        if not isinstance(token, str) or not hmac.compare_digest(
            token.encode(errors="surrogatepass"), device_token(secret, imei).encode()
        ):
            return 401, "invalid token"
    return None


class LoginStep:
    """
    A session's login, mixed into L{devicehub.devices.session.DeviceSession}: the first
    L{Identify} logs the device in, once its node admits it.
    """

    def _loggedIn(self) -> bool:
        if self.imei is None:
            self.refuse("login first")
        return self.imei is not None

    def _identify(self, message: Identify) -> None:
        if self.imei is not None:
            self.rejectFrame("already logged in")
            return
        imei = message.imei
        refusal = login_refusal(message, self.settings.secret, self._tokens) or self.node.admit(self, imei)
        if refusal is not None:
            status, error = refusal
            if status:
                self.refuseLogin(status, error, imei)
            else:
                self.refuse(error)
            return
        self.imei = imei
        self.factory.loggingIn.discard(self)
        self.setTimeout(self.settings.idleTimeout)
        self.write(message.reply)
        deviceLog.info("{imei} logged in from {peer} ({protocol})", imei=imei, peer=self.peer, protocol=self.protocol)
        self.node.attach(self)

    def refuseLogin(self, status: int, error: str, imei: object = None) -> None:
        """Refuse a login the way the protocol does, then close."""
        if isinstance(imei, str):
            deviceLog.info("Login as {imei!r} from {peer} refused: {error}", imei=imei[:80], peer=self.peer, error=error)
        self.write(self.codec.refused(status, error))
        self.refuse(error)
