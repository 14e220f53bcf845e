"""Time as stored (integer microseconds since the Unix epoch, UTC) and as shown."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2


def now_us() -> int:
    return time.time_ns() // 1000


def to_us(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def set_ts(ts: timestamp_pb2.Timestamp, us: int) -> None:
    ts.seconds, rem = divmod(us, 1_000_000)
    ts.nanos = rem * 1000


def from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def parse_legacy(value: object) -> int | None:
    """Microseconds from a timestamp as the old daemon stored it, or None.

    It wrote SQLite's ``YYYY-MM-DD HH:MM:SS`` (UTC), Python's isoformat with an
    offset (``...T12:00:00.123456+00:00``), client-sent strings ending in ``Z``,
    and occasionally epoch numbers. A time without a zone is UTC.
    """
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        # Seconds, unless it is clearly milliseconds or microseconds.
        v = float(value)
        if v > 1e14:
            return int(v)
        if v > 1e11:
            return int(v * 1000)
        return int(v * 1_000_000)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (
        int(dt.timestamp() * 1_000_000)
        if dt.microsecond == 0
        else (int(dt.replace(microsecond=0).timestamp()) * 1_000_000 + dt.microsecond)
    )
