"""
The position fields of watch frames (C{UD}, C{AL}, C{WT}...): time, coordinates, the
numbers after them, the status word's alarm, and the cells and Wi-Fi networks.

    position = DDMMYY,HHMMSS,A|V,lat,N|S,lon,E|W,speed km/h,course,altitude,satellites,
               gsm,battery,steps,rolls,status (hex bits),cells...,wifi...
"""

import math
from typing import Any

# Alarm bits of the status word, the alarms (high half) before the states (low half).
_ALARM_BITS = (
    (16, "sos"), (17, "lowBattery"), (18, "geofenceExit"), (19, "geofenceEnter"), (20, "removing"),
    (21, "fallDown"), (22, "fallDown"), (14, "powerCut"), (0, "lowBattery"), (1, "geofenceExit"),
    (2, "geofenceEnter"),
)
_ALARM_MASK = sum(1 << bit for bit, _ in _ALARM_BITS)


def smallInt(value: str, base: int = 10) -> int:
    """C{int(value, base)} for at most 12 characters: device numbers are small, and events must stay JSON."""
    if len(value) > 12:
        raise ValueError(f"number too long: {value[:16]!r}...")
    return int(value, base)


def intOrNone(value: str) -> int | None:
    """A small decimal number, or None when C{value} is none."""
    if 0 < len(value) <= 12 and value.isdigit() and value.isascii():  # the common case, cheaply
        return int(value)
    try:
        return smallInt(value)
    except ValueError:
        return None


_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DAY_MONTHS = frozenset(f"{day:02d}{month:02d}" for month in range(1, 13) for day in range(1, _DAYS[month] + 1))
"""Every DDMM of a real date (29 February too: its year is checked apart)."""


def _isoTime(date: str, time: str) -> str | None:
    """DDMMYY and HHMMSS as ISO 8601 UTC, or None when they are no real moment."""
    if len(date) != 6 or len(time) != 6:
        return None
    moment = date + time
    if not (moment.isdigit() and moment.isascii()):
        return None
    # Checked by range on the digits themselves: ASCII digit pairs compare as their numbers do
    # (building a datetime only to check them cost more than the whole rest).
    dayMonth = date[:4]
    if dayMonth not in _DAY_MONTHS or (dayMonth == "2902" and int(date[4:6]) % 4):
        return None
    if time[:2] > "23" or time[2] > "5" or time[4] > "5":
        return None
    return f"20{date[4:6]}-{date[2:4]}-{date[0:2]}T{time[0:2]}:{time[2:4]}:{time[4:6]}Z"


def _coordinate(value: str, hemisphere: str, limit: float) -> float:
    number = float(value.strip())
    if not math.isfinite(number) or abs(number) > limit:
        raise ValueError(f"coordinate out of range: {value!r}")
    if hemisphere in ("S", "W"):
        number = -abs(number)
    return number


def alarmName(status: int) -> str | None:
    """The alarm a status word reports (C{sos}, C{lowBattery}, ...), or None."""
    if status & _ALARM_MASK:
        for bit, name in _ALARM_BITS:
            if status >> bit & 1:
                return name
    return None


def _network(values: list[str], data: dict[str, Any]) -> None:
    """
    Cells (count, timing advance, MCC, MNC, then LAC, CID, RSSI each) and Wi-Fi (count, then
    name, MAC, RSSI each). Numbers are converted inline, each as L{smallInt} would (LAC and
    CID: decimal, else hex), with one length check instead of a call; L{smallInt} raises for
    the longer ones.
    """
    try:
        value = values[0]
        count = int(value) if len(value) <= 12 else smallInt(value)
        index = 1
        if count > 0:
            mcc, mnc = values[2] or "0", values[3] or "0"
            mcc = int(mcc) if len(mcc) <= 12 else smallInt(mcc)
            mnc = int(mnc) if len(mnc) <= 12 else smallInt(mnc)
            index = 4
            cells = []
            for _ in range(count):
                lac, cid, rssi = values[index : index + 3]
                cell = {
                    "mcc": mcc,
                    "mnc": mnc,
                    "lac": (int(lac) if lac.isdigit() else int(lac, 16)) if len(lac) <= 12 else smallInt(lac),
                    "cid": (int(cid) if cid.isdigit() else int(cid, 16)) if len(cid) <= 12 else smallInt(cid),
                }
                if rssi:
                    cell["rssi"] = int(rssi) if len(rssi) <= 12 else smallInt(rssi)
                cells.append(cell)
                index += 3
            data["cells"] = cells
        if index < len(values) and values[index]:
            value = values[index]
            count = int(value) if len(value) <= 12 else smallInt(value)
            index += 1
            wifi = []
            for _ in range(count):
                name, mac, rssi = values[index : index + 3]
                if mac and mac != "0" and rssi:
                    wifi.append({"name": name, "mac": mac, "rssi": int(rssi) if len(rssi) <= 12 else smallInt(rssi)})
                index += 3
            if wifi:
                data["wifi"] = wifi
    except (IndexError, ValueError):
        pass  # best effort: a position without its network is still a position


_FLOAT_KEYS = ("speed", "course", "altitude")
"""Fields 7..9: decimal numbers (None when not a finite number)."""
_INT_KEYS = ("satellites", "gsm", "battery", "steps", "rolls")
"""Fields 10..14: small integers (as L{intOrNone})."""


def decodePosition(fields: list[str]) -> dict[str, Any]:
    """
    The location attributes of a C{UD}/C{AL}/C{WT} frame's fields.

    @raise ValueError: no position in them.
    """
    n = len(fields)
    if n < 7:
        raise ValueError("position: too few fields")
    data: dict[str, Any] = {
        "lat": _coordinate(fields[3], fields[4], 90.0),
        "lon": _coordinate(fields[5], fields[6], 180.0),
        "valid": fields[2] == "A",
    }
    time = _isoTime(fields[0], fields[1])
    if time is not None:
        data["time"] = time
    floats = fields[7:10]
    try:  # the usual frame: three finite numbers (inf - inf and nan - nan are nan)
        speed, course, altitude = map(float, floats)
        usual = speed - speed == 0.0 and course - course == 0.0 and altitude - altitude == 0.0
    except ValueError:
        usual = False
    if usual:
        data["speed"], data["course"], data["altitude"] = speed, course, altitude
    else:
        for key, value in zip(_FLOAT_KEYS, floats):
            try:
                number = float(value)
            except ValueError:
                continue
            if number - number == 0.0:
                data[key] = number
    ints = fields[10:15]
    digits = "".join(ints)
    if (
        len(ints) == 5 and "" not in ints and digits.isdigit() and digits.isascii()
        and (len(digits) <= 12 or max(map(len, ints)) <= 12)
    ):  # the usual frame: five small decimal numbers
        data["satellites"], data["gsm"], data["battery"], data["steps"], data["rolls"] = map(int, ints)
    else:
        for key, value in zip(_INT_KEYS, ints):
            number = intOrNone(value)
            if number is not None:
                data[key] = number
    if n > 15:
        value = fields[15]
        try:
            status = int(value, 16) if len(value) <= 12 else smallInt(value, 16)
        except ValueError:
            pass
        else:
            data["status"] = status
            alarm = alarmName(status)
            if alarm is not None:
                data["alarm"] = alarm
        if n > 16:
            _network(fields[16:], data)
    return data
