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


def _float(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _isoTime(date: str, time: str) -> str | None:
    """DDMMYY and HHMMSS as ISO 8601 UTC, or None when they are no real moment."""
    if len(date) != 6 or len(time) != 6 or not (date + time).isascii() or not (date + time).isdigit():
        return None
    day, month, year = int(date[0:2]), int(date[2:4]), int(date[4:6])
    # (checked by range: building a datetime only to check them cost more than the whole rest)
    if not (1 <= month <= 12 and 1 <= day <= _DAYS[month]) or (month == 2 and day == 29 and year % 4):
        return None
    if int(time[0:2]) > 23 or int(time[2:4]) > 59 or int(time[4:6]) > 59:
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


def _cellNumber(value: str) -> int:
    return smallInt(value) if value.isdigit() else smallInt(value, 16)


def _network(values: list[str], data: dict[str, Any]) -> None:
    """Cells (count, timing advance, MCC, MNC, then LAC, CID, RSSI each) and Wi-Fi (count, then name, MAC, RSSI each)."""
    try:
        index = 0
        count = smallInt(values[index])
        index += 1
        if count > 0:
            mcc, mnc = smallInt(values[index + 1] or "0"), smallInt(values[index + 2] or "0")
            index += 3
            cells = []
            for _ in range(count):
                lac, cid, rssi = values[index : index + 3]
                cell = {"mcc": mcc, "mnc": mnc, "lac": _cellNumber(lac), "cid": _cellNumber(cid)}
                if rssi:
                    cell["rssi"] = smallInt(rssi)
                cells.append(cell)
                index += 3
            data["cells"] = cells
        if index < len(values) and values[index]:
            count = smallInt(values[index])
            index += 1
            wifi = []
            for _ in range(count):
                name, mac, rssi = values[index : index + 3]
                if mac and mac != "0" and rssi:
                    wifi.append({"name": name, "mac": mac, "rssi": smallInt(rssi)})
                index += 3
            if wifi:
                data["wifi"] = wifi
    except (IndexError, ValueError):
        pass  # best effort: a position without its network is still a position


def decodePosition(fields: list[str]) -> dict[str, Any]:
    """
    The location attributes of a C{UD}/C{AL}/C{WT} frame's fields.

    @raise ValueError: no position in them.
    """
    if len(fields) < 7:
        raise ValueError("position: too few fields")
    data: dict[str, Any] = {
        "lat": _coordinate(fields[3], fields[4], 90.0),
        "lon": _coordinate(fields[5], fields[6], 180.0),
        "valid": fields[2] == "A",
    }
    time = _isoTime(fields[0], fields[1])
    if time is not None:
        data["time"] = time
    n = len(fields)
    for i, key, conv in _POSITION_FIELDS:
        if i < n:
            value = conv(fields[i])
            if value is not None:
                data[key] = value
    if n > 15:
        try:
            status = smallInt(fields[15], 16)
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


_POSITION_FIELDS = (
    (7, "speed", _float), (8, "course", _float), (9, "altitude", _float), (10, "satellites", intOrNone),
    (11, "gsm", intOrNone), (12, "battery", intOrNone), (13, "steps", intOrNone), (14, "rolls", intOrNone),
)
