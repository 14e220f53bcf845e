"""Time as stored (integer microseconds since the Unix epoch, UTC) and as shown."""

from __future__ import annotations

import email.utils
import math
import re
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


#: Epoch numbers written as text: ``1771261200``, ``1771261200.5``, ``-5`` (ASCII digits only).
_EPOCH_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
#: Zone words the old daemon's writers put after a time (``date``, ``str(datetime)`` in UTC, HTTP dates).
_UTC_WORDS = (" UTC", " GMT", " Z")


def _epoch_us(v: float) -> int | None:
    """Microseconds from an epoch number: seconds, unless it is clearly milliseconds or microseconds."""
    if not math.isfinite(v):
        return None
    if abs(v) > 1e14:
        us = int(v)
    elif abs(v) > 1e11:
        us = int(v * 1000)
    else:
        us = round(v * 1_000_000)
    # Outside google.protobuf.Timestamp's range (years 1..9999): not a time anything can show.
    return us if -62135596800_000000 <= us <= 253402300799_999999 else None


def _dt_us(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    # Whole seconds by integer arithmetic, so that microseconds are never rounded through a float.
    return int(dt.replace(microsecond=0).timestamp()) * 1_000_000 + dt.microsecond


#: Words an RFC 1123 / 2822 date may hold besides its zone.
_DATE_WORDS = frozenset(
    {"mon", "tue", "wed", "thu", "fri", "sat", "sun"}
    | {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
)
#: Zone words whose offset RFC 2822 fixes (email.utils reads them; it reads any other word as UTC).
_ZONE_WORDS = frozenset(["ut", "utc", "gmt", "z", "est", "edt", "cst", "cdt", "mst", "mdt", "pst", "pdt"])


def _rfc2822_us(text: str) -> int | None:
    """RFC 1123 / 2822, when its zone is an offset or a word RFC 2822 fixes; another word is not UTC."""
    for word in re.findall(r"[A-Za-z]+", text):
        w = word.lower()
        if w not in _ZONE_WORDS and w[:3] not in _DATE_WORDS:
            return None
    try:
        parts = email.utils.parsedate_tz(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parts is None:
        return None
    try:
        base = datetime(*parts[:6], tzinfo=UTC)
    except (TypeError, ValueError, OverflowError):
        return None
    return (int(base.timestamp()) - (parts[9] or 0)) * 1_000_000


def parse_legacy(value: object) -> int | None:
    """Microseconds from a timestamp as the old daemon stored it, or None when it is not one.

    Its text columns took whatever its writers and clients sent, verbatim:

    - SQLite's ``datetime('now')``: ``2026-02-16 17:00:00`` (UTC);
    - Python's ``isoformat()``: ``2026-02-16T17:00:00.123456+00:00``, and ``str(datetime)``;
    - RFC 3339 / JavaScript's ``toISOString()``: ``2026-02-16T17:00:00.000Z``;
    - RFC 1123 / 2822 (HTTP dates, ``toUTCString()``, ``date -R``):
      ``Mon, 16 Feb 2026 17:00:00 GMT``, ``... +0000``;
    - ``date``'s default: ``Mon Feb 16 17:00:00 UTC 2026``; ``2026-02-16 17:00:00 UTC``;
    - epoch numbers, as numbers or as text (a JSON number sent into a TEXT column is
      stored as text): seconds, milliseconds or microseconds, with or without a fraction.

    A time without a zone is UTC. None means "not a time": the caller keeps the text
    (see storage.migrations), it is never silently replaced.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _epoch_us(float(value))
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if _EPOCH_TEXT.fullmatch(text):
        return _epoch_us(float(text))
    iso = text
    for word in _UTC_WORDS:
        if iso.endswith(word):
            iso = iso[: -len(word)] + "+00:00"
            break
    if iso.endswith(("Z", "z")):
        iso = iso[:-1] + "+00:00"
    try:
        return _dt_us(datetime.fromisoformat(iso))
    except ValueError:
        pass
    # RFC 1123 / 2822, and `date`'s default output (the same parser reads both).
    return _rfc2822_us(text)
