"""Small helpers on JSON values: types as the States Language sees them, timestamps, sizes."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

PAYLOAD_LIMIT_BYTES = 256 * 1024  # "256 KiB of data as a UTF-8 encoded string"

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
)


def dumps(value: Any) -> str:
    """Compact JSON, as Step Functions writes payloads into history."""
    return _ENCODER.encode(value)


def utf8_size(text: str) -> int:
    n = len(text)
    if n * 4 <= PAYLOAD_LIMIT_BYTES or text.isascii():
        return n
    return len(text.encode("utf-8"))


def is_number(v: Any) -> bool:
    return (type(v) is int or type(v) is float)


def is_integer(v: Any) -> bool:
    return type(v) is int or (type(v) is float and v.is_integer())


def parse_timestamp(v: Any) -> datetime | None:
    """An RFC 3339 timestamp with uppercase T and Z (the spec's profile), else None."""
    if type(v) is not str:
        return None
    m = _TIMESTAMP.match(v)
    if not m:
        return None
    year, month, day, hour, minute, second, frac, zone = m.groups()
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    try:
        if zone == "Z":
            tz = timezone.utc
        else:
            sign = 1 if zone[0] == "+" else -1
            from datetime import timedelta

            tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz)
    except ValueError:
        return None


def iso_millis(epoch: float) -> str:
    """`2019-03-26T20:14:13.192Z`, the form of $$.Execution.StartTime and $$.State.EnteredTime."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


def to_datetime(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc)
