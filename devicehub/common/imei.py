"""The device identifier rule of the contract (CONTRACT §2)."""

import re

IMEI_RE = re.compile(r"[0-9A-Za-z._:-]{1,64}")


def is_valid_imei(value: object) -> bool:
    """True when C{value} is a string the contract accepts as an imei."""
    return isinstance(value, str) and IMEI_RE.fullmatch(value) is not None
