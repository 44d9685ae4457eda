"""
Whether a device may log in as the IMEI it gives, before the node is asked.

With a device secret, a login of a protocol that carries tokens must carry
C{token} = hex HMAC-SHA256(secret, imei) (L{device_token}).
"""

import hashlib
import hmac

from devicehub.common.imei import is_valid_imei
from devicehub.devices.codec import Identify


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
