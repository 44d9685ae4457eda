"""The body of C{POST /commands} (CONTRACT §7), checked: the targets and the command."""

from typing import Any

from devicehub.api.jsonio import BadInput, boolField, secondsField
from devicehub.api.jobs import MAX_DEVICES
from devicehub.common.imei import is_valid_imei
from devicehub.common.limits import MAX_TIMEOUT

JOB_FIELDS = frozenset({"instruct", "data", "timeout", "queue", "imeis", "prefix", "all"})
TARGETS = ("imeis", "prefix", "all")


def jobRequest(body: dict[str, Any], commandTimeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """C{(targets, command)} of a job's body; raise L{BadInput} when it is not one."""
    unknown = body.keys() - JOB_FIELDS
    if unknown:
        raise BadInput(f"unknown field {min(unknown)!r} (known: {', '.join(sorted(JOB_FIELDS))})")
    given = [name for name in TARGETS if name in body]
    if len(given) != 1:
        raise BadInput("give exactly one of imeis (a list), prefix (a string) or all (true)")
    target = given[0]
    value = body[target]
    if target == "imeis":
        if not isinstance(value, list) or not 0 < len(value) <= MAX_DEVICES:
            raise BadInput(f"imeis must be a list of 1 to {MAX_DEVICES} imeis")
        for imei in value:
            if not is_valid_imei(imei):  # each one, null included (a None sentinel let nulls pass)
                raise BadInput(f"invalid imei {imei!r} in imeis")
    elif target == "prefix":
        if not isinstance(value, str) or not value or not is_valid_imei(value):
            raise BadInput("prefix must be the start of an imei (letters, digits, . _ : -)")
    elif value is not True:
        raise BadInput("all must be true")
    instruct = body.get("instruct")
    if not isinstance(instruct, str) or not instruct:
        raise BadInput("instruct must be a non-empty string")
    command = {
        "instruct": instruct,
        "data": body.get("data"),
        "timeout": secondsField(body, "timeout", MAX_TIMEOUT) or commandTimeout,
        "queue": boolField(body, "queue", False),
    }
    return {target: value}, command
