"""The one JSON <-> protobuf codec of the HTTP gateway.

Descriptor-driven and written for the legacy HTTP contract rather than
canonical proto3 JSON: proto field names, 64-bit integers as JSON *numbers*,
enums as short lowercase names (``TASK_STATUS_QUEUED`` -> ``"queued"``), every
field present in the output (unset fields with presence as ``null``) so that a
response always has the same shape.

Output is the hot path (a list of 100 tasks per request), so each message type
gets a plan once -- a template dict of defaults plus one converter per field --
and rendering a message is a dict copy plus one converter call per *set* field
(``ListFields``). ``google.protobuf.json_format`` walks descriptors per call
and is several times slower.

Input is strict: every mistake is an ``INVALID_ARGUMENT`` naming the dotted
field path, never a 500. Unknown keys are ignored (legacy rule).

A field with ``(lobwife.v1.http_json_key)`` has that key instead of its proto
name, and the older field it supersedes (whose proto name the key is) is not in
the JSON: ``Task.estimate_minutes_exact`` (a double) is ``estimate_minutes``,
the legacy key, and the int32 ``Task.estimate_minutes`` is gRPC-only.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import grpc
import orjson
from google.protobuf import descriptor as _descriptor
from google.protobuf import message_factory
from google.protobuf.message import Message

from lobwife import enums
from lobwife.v1 import annotations_pb2
from lobwife_server.core.errors import ApiError, invalid_argument
from lobwife_server.core.validation import TIMESTAMP_MAX_SECONDS, TIMESTAMP_MIN_SECONDS, check_timestamp

__all__ = [
    "MAX_DEPTH",
    "FieldPath",
    "apply_query_params",
    "compile_field_path",
    "decode",
    "encode",
    "enum_short_names",
    "field_to_json",
    "from_json_obj",
    "merge_json_obj",
    "to_json_obj",
    "wire_json",
]

FD = _descriptor.FieldDescriptor
Descriptor = _descriptor.Descriptor


def _message_type(fd: FD) -> Descriptor:
    md = fd.message_type
    assert md is not None, fd.full_name
    return md


def _enum_type(fd: FD) -> _descriptor.EnumDescriptor:
    ed = fd.enum_type
    assert ed is not None, fd.full_name
    return ed


#: Deepest message nesting accepted on input (our messages nest 3 deep; the
#: bound keeps a hostile body from exhausting the stack).
MAX_DEPTH = 32

_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"
_FIELD_MASK = "google.protobuf.FieldMask"

# Valid range of google.protobuf.Timestamp (one rule for both transports: validation.check_timestamp).
_TS_MIN = TIMESTAMP_MIN_SECONDS
_TS_MAX = TIMESTAMP_MAX_SECONDS
# Valid range of google.protobuf.Duration: +-10000 years.
_DUR_MAX = 315576000000

_INT_RANGES: dict[int, tuple[int, int, str]] = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1, "int32"),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1, "int32"),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1, "int32"),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1, "int64"),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1, "int64"),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1, "int64"),
    FD.TYPE_UINT32: (0, 2**32 - 1, "uint32"),
    FD.TYPE_FIXED32: (0, 2**32 - 1, "uint32"),
    FD.TYPE_UINT64: (0, 2**64 - 1, "uint64"),
    FD.TYPE_FIXED64: (0, 2**64 - 1, "uint64"),
}
_FLOAT32_MAX = 3.4028234663852886e38


# --------------------------------------------------------------------------- bytes <-> JSON


def encode(obj: Any) -> bytes:
    """Serialize a JSON value (as built by :func:`to_json_obj`) to UTF-8 bytes."""
    return orjson.dumps(obj)


def decode(body: bytes | bytearray | memoryview | str) -> Any:
    """Parse a JSON document; malformed JSON or invalid UTF-8 is INVALID_ARGUMENT."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"invalid JSON: {e}") from None


def _jtype(value: object) -> str:
    """The JSON type name of a decoded value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# --------------------------------------------------------------------------- enums


def enum_short_names(enum: _descriptor.EnumDescriptor) -> Mapping[int, str | None]:
    """Number -> short lowercase name; the ``*_UNSPECIFIED`` zero value -> None.

    The client package's rule (:mod:`lobwife.enums`), the one the typed client and the CLI use too.
    """
    return enums.short_names(enum)


# --------------------------------------------------------------------------- output


M = TypeVar("M", bound=Message)

_EPOCH = datetime(1970, 1, 1)
# Day number -> "YYYY-MM-DDT". Timestamps of one response mostly share a few
# days; formatting the date is the expensive part (datetime arithmetic), the
# time of day is three divmods.
_day_cache: dict[int, str] = {}


def _day_prefix(days: int) -> str:
    s = _day_cache.get(days)
    if s is None:
        if len(_day_cache) > 4096:
            _day_cache.clear()
        d = _EPOCH.fromordinal(_EPOCH.toordinal() + days)
        s = f"{d.year:04d}-{d.month:02d}-{d.day:02d}T"
        _day_cache[days] = s
    return s


_HH_MM = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_SS = [f"{s:02d}" for s in range(60)]
# (seconds * 1e9 + nanos) -> string. Dashboards poll the same tasks over and
# over; a hit costs a fifth of formatting. Bounded: cleared when full.
_ts_cache: dict[int, str] = {}
_TS_CACHE_MAX = 16384


def _format_timestamp(seconds: int, nanos: int) -> str:
    if seconds < _TS_MIN or seconds > _TS_MAX or not 0 <= nanos < 1_000_000_000:
        # Not representable as RFC 3339 (never written by lobwife); say so plainly.
        return f"invalid timestamp ({seconds}s {nanos}ns)"
    days, rem = divmod(seconds, 86400)
    m, s = divmod(rem, 60)
    text = _day_prefix(days) + _HH_MM[m] + _SS[s]
    if not nanos:
        return text + "Z"
    if nanos % 1000 == 0:
        return f"{text}.{nanos // 1000:06d}Z"
    return f"{text}.{nanos:09d}Z"


def _timestamp_to_json(ts: Any) -> str:
    key = ts.seconds * 1_000_000_000 + ts.nanos
    text = _ts_cache.get(key)
    if text is None:
        if len(_ts_cache) >= _TS_CACHE_MAX:
            _ts_cache.clear()
        text = _ts_cache[key] = _format_timestamp(ts.seconds, ts.nanos)
    return text


def _format_duration(seconds: int, nanos: int) -> str:
    sign = "-" if seconds < 0 or nanos < 0 else ""
    seconds, nanos = abs(seconds), abs(nanos)
    if not nanos:
        return f"{sign}{seconds}s"
    return f"{sign}{seconds}.{f'{nanos:09d}'.rstrip('0')}s"


def _duration_to_json(d: Any) -> str:
    return _format_duration(d.seconds, d.nanos)


def _field_mask_to_json(fm: Any) -> list[str]:
    return list(fm.paths)


def _bytes_to_json(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _float_to_json(v: float) -> float | str:
    # JSON has no NaN/Infinity; proto3 JSON spells them as strings.
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def _whole_or_float_to_json(v: float) -> int | float | str:
    if v.is_integer() and abs(v) < 2**53:
        return int(v)
    return _float_to_json(v)


_OutConv = Callable[[Any], Any]


def json_keys(desc: Descriptor) -> tuple[dict[str, str], dict[str, FD]]:
    """(proto name -> JSON key of each field in the JSON, superseded field name -> the field that took its key).

    A field's key is its proto name, or its ``(lobwife.v1.http_json_key)``; a field whose
    proto name another field took as its key is superseded and has no key.
    """
    taken: dict[str, FD] = {}
    for fd in desc.fields:
        key = fd.GetOptions().Extensions[annotations_pb2.http_json_key]
        if key:
            if key in taken or key == fd.name:
                raise ValueError(f"{fd.full_name}: http_json_key {key!r} is another field's or its own name")
            taken[key] = fd
    keys = {
        fd.name: (fd.GetOptions().Extensions[annotations_pb2.http_json_key] or fd.name)
        for fd in desc.fields
        if fd.name not in taken
    }
    return keys, taken


class _OutPlan:
    __slots__ = ("by_name", "conv", "drop", "fresh_dicts", "fresh_lists", "template")

    def __init__(self) -> None:
        self.template: dict[str, Any] = {}
        # FieldDescriptor -> (json key, converter or None for "use as is")
        self.conv: dict[FD, tuple[str, _OutConv | None]] = {}
        self.fresh_lists: tuple[str, ...] = ()
        self.fresh_dicts: tuple[str, ...] = ()
        self.by_name: dict[str, FD] = {}
        # Keys written for superseded fields (see json_keys), removed after the fields are written.
        self.drop: tuple[str, ...] = ()


#: Where a superseded field's value goes while a message is written (then removed): no branch per field.
_DROPPED = "\x00superseded:"

# Keyed by descriptor object (stable per type in the default pool).
_out_plans: dict[Any, _OutPlan] = {}


def _wkt_message_conv(md: Descriptor) -> _OutConv:
    name = md.full_name
    if name == _TIMESTAMP:
        return _timestamp_to_json
    if name == _DURATION:
        return _duration_to_json
    if name == _FIELD_MASK:
        return _field_mask_to_json
    return to_json_obj


def _scalar_conv(fd: FD) -> _OutConv | None:
    """Converter of one (non-repeated) value of the field's type; None = identity."""
    t = fd.type
    if t == FD.TYPE_MESSAGE:
        return _wkt_message_conv(_message_type(fd))
    if t == FD.TYPE_ENUM:
        names = enum_short_names(_enum_type(fd))
        get = names.get

        def enum_conv(v: int) -> str | int | None:
            # An unknown number (open enum, newer peer) stays a number rather than vanish.
            return get(v, v)

        return enum_conv
    if t == FD.TYPE_BYTES:
        return _bytes_to_json
    if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return _float_to_json
    return None


def _is_map(fd: FD) -> bool:
    return fd.type == FD.TYPE_MESSAGE and fd.is_repeated and _message_type(fd).GetOptions().map_entry


def _map_key_conv(fd: FD) -> Callable[[Any], str] | None:
    if fd.type == FD.TYPE_STRING:
        return None
    if fd.type == FD.TYPE_BOOL:
        return lambda k: "true" if k else "false"
    return str


def _build_out_plan(desc: Descriptor) -> _OutPlan:
    plan = _OutPlan()
    lists: list[str] = []
    dicts: list[str] = []
    keys, _ = json_keys(desc)
    drop: list[str] = []
    for fd in desc.fields:
        plan.by_name[fd.name] = fd
        superseded = fd.name not in keys
        name = _DROPPED + fd.name if superseded else keys[fd.name]
        if superseded:
            drop.append(name)
            # The key keeps the superseded field's place in the object (the field that took it fills it).
            plan.template[fd.name] = None
        if _is_map(fd):
            kfd = _message_type(fd).fields_by_name["key"]
            vfd = _message_type(fd).fields_by_name["value"]
            kc = _map_key_conv(kfd)
            vc = _scalar_conv(vfd)
            conv: _OutConv | None
            if kc is None and vc is None:
                conv = dict
            elif kc is None:
                assert vc is not None
                conv = _map_values(vc)
            else:
                conv = _map_keys_values(kc, vc)
            plan.template[name] = None
            dicts.append(name)
        elif fd.is_repeated:
            ec = _scalar_conv(fd)
            conv = list if ec is None else _each(ec)
            plan.template[name] = None
            lists.append(name)
        else:
            conv = _scalar_conv(fd)
            if name != fd.name and conv is _float_to_json:
                # A number that took an integer field's key: whole values stay JSON integers, as
                # the old key's clients read them (30, not 30.0); fractions are what is new.
                conv = _whole_or_float_to_json
            if fd.has_presence:
                plan.template[name] = None
            else:
                default = fd.default_value
                plan.template[name] = default if conv is None else conv(default)
        if superseded:
            plan.template.pop(name, None)
            for bucket in (lists, dicts):
                if name in bucket:
                    bucket.remove(name)
        plan.conv[fd] = (name, conv)
    plan.fresh_lists = tuple(lists)
    plan.fresh_dicts = tuple(dicts)
    plan.drop = tuple(drop)
    _out_plans[desc] = plan
    return plan


def _each(f: _OutConv) -> _OutConv:
    return lambda values: [f(v) for v in values]


def _map_values(vc: _OutConv) -> _OutConv:
    return lambda m: {k: vc(v) for k, v in m.items()}


def _map_keys_values(kc: Callable[[Any], str], vc: _OutConv | None) -> _OutConv:
    if vc is None:
        return lambda m: {kc(k): v for k, v in m.items()}
    return lambda m: {kc(k): vc(v) for k, v in m.items()}


def to_json_obj(msg: Message) -> dict[str, Any]:
    """Render a message as a JSON-ready dict with every field present."""
    desc: Any = msg.DESCRIPTOR
    plan = _out_plans.get(desc)
    if plan is None:
        plan = _build_out_plan(desc)
    out = plan.template.copy()
    for name in plan.fresh_lists:
        out[name] = []
    for name in plan.fresh_dicts:
        out[name] = {}
    conv = plan.conv
    for fd, value in msg.ListFields():
        name, f = conv[fd]
        out[name] = value if f is None else f(value)
    for name in plan.drop:
        out.pop(name, None)
    return out


def field_to_json(msg: Message, name: str) -> Any:
    """Render one field of ``msg`` (a gateway ``response_body``) the way
    :func:`to_json_obj` renders it inside the message; an unset message field
    renders as its default message (``{...}`` of defaults), as grpc-gateway does,
    except well-known types, which are ``null``."""
    desc: Any = msg.DESCRIPTOR
    plan = _out_plans.get(desc)
    if plan is None:
        plan = _build_out_plan(desc)
    fd = plan.by_name[name]
    _, f = plan.conv[fd]
    value = getattr(msg, name)
    if fd.type == FD.TYPE_MESSAGE and not fd.is_repeated and not msg.HasField(name):
        return to_json_obj(value) if f is to_json_obj else None
    if not fd.is_repeated and fd.has_presence and not msg.HasField(name):
        return None
    return value if f is None else f(value)


# --------------------------------------------------------------------------- output from wire form

#: Bounds of each message type's cache of JSON fragments (see :func:`wire_json`).
FRAGMENT_CACHE_ENTRIES = 20_000
FRAGMENT_CACHE_BYTES = 32 << 20


class _Fragments:
    """Serialized message -> its JSON, for one message type.

    Content-addressed: the key is the message's complete wire form, and the JSON
    is a function of it alone, so an entry can never be stale; an updated
    message has other bytes and so another entry. Bounded in entries and bytes,
    the oldest entry going first. Keys are usually the very bytes objects a
    cache of serialized messages hands out again and again, whose hash Python
    keeps, so a hit costs one dict lookup.
    """

    __slots__ = ("conv", "items", "msg_class", "size")

    def __init__(self, desc: Descriptor) -> None:
        self.msg_class: Any = message_factory.GetMessageClass(desc)
        self.conv: _OutConv = _wkt_message_conv(desc)
        self.items: dict[bytes, bytes] = {}
        self.size = 0

    def json(self, data: bytes) -> bytes:
        hit = self.items.get(data)
        if hit is not None:
            return hit
        text = orjson.dumps(self.conv(self.msg_class.FromString(data)))
        items = self.items
        self.size += len(data) + len(text)
        while items and (len(items) >= FRAGMENT_CACHE_ENTRIES or self.size > FRAGMENT_CACHE_BYTES):
            old_key = next(iter(items))
            self.size -= len(old_key) + len(items.pop(old_key))
        items[data] = text
        return text


_fragments: dict[Any, _Fragments] = {}


def _fragments_for(fd: FD) -> _Fragments:
    md = _message_type(fd)
    f = _fragments.get(md)
    if f is None:
        if _is_map(fd):
            raise TypeError(f"{fd.full_name} is a map field, not a message field")
        f = _fragments[md] = _Fragments(md)
    return f


def _part_json(fd: FD, value: bytes | Sequence[bytes]) -> bytes:
    frags = _fragments_for(fd)
    if isinstance(value, bytes):
        return frags.json(value)
    get = frags.items.get
    return b"[" + b",".join([get(v) or frags.json(v) for v in value]) + b"]"


def wire_json(base: Message, parts: Mapping[str, bytes | Sequence[bytes]], field: str = "") -> bytes:
    """The JSON document (bytes) of a message given as ``base`` plus message-typed
    fields in wire form (``parts``: field name -> serialized value, or values of a
    repeated field), exactly as :func:`encode` of :func:`to_json_obj` of the whole
    message would spell it; with ``field``, only that field, as
    :func:`field_to_json` would. Each part is rendered through a bounded,
    content-addressed cache of JSON fragments, so a repeated element costs a
    lookup instead of a conversion."""
    desc: Any = base.DESCRIPTOR
    plan = _out_plans.get(desc)
    if plan is None:
        plan = _build_out_plan(desc)
    if field:
        value = parts.get(field)
        if value is not None:
            return _part_json(plan.by_name[field], value)
        return encode(field_to_json(base, field))
    obj = to_json_obj(base)
    for name, value in parts.items():
        fd = plan.by_name[name]
        obj[plan.conv[fd][0]] = orjson.Fragment(_part_json(fd, value))
    return encode(obj)


# --------------------------------------------------------------------------- input: scalar parsers

_Parse = Callable[[Any, str], Any]  # (JSON value, field path) -> Python value for the field
_ParseText = Callable[[str, str], Any]  # (text, field path) -> Python value for the field

_INT_RE = re.compile(r"-?[0-9]+")
_FLOAT_RE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _make_int_parsers(lo: int, hi: int, tname: str) -> tuple[_Parse, _ParseText]:
    def from_text(v: str, path: str) -> int:
        # Regex, not int(): int() also takes " 7", "1_000" and non-ASCII digits.
        if len(v) > 24 or not _INT_RE.fullmatch(v):
            if _INT_RE.fullmatch(v):
                raise invalid_argument(path, f"{v} is out of range for {tname}")
            raise invalid_argument(path, "expected an integer, got string")
        n = int(v)
        if n < lo or n > hi:
            raise invalid_argument(path, f"{n} is out of range for {tname}")
        return n

    def parse(v: Any, path: str) -> int:
        t = type(v)
        if t is int:
            n: int = v
        elif t is str:
            return from_text(v, path)
        elif t is float:
            # protojson accepts an integral number written as 5.0 or 1e3; a fraction is an error.
            if not v.is_integer():
                raise invalid_argument(path, f"expected an integer, got {v!r}")
            n = int(v)
        else:
            raise invalid_argument(path, f"expected an integer, got {_jtype(v)}")
        if n < lo or n > hi:
            raise invalid_argument(path, f"{n} is out of range for {tname}")
        return n

    return parse, from_text


def _make_float_parsers(is32: bool) -> tuple[_Parse, _ParseText]:
    def check(x: float, path: str) -> float:
        if is32 and math.isfinite(x) and abs(x) > _FLOAT32_MAX:
            raise invalid_argument(path, f"{x!r} is out of range for float")
        return x

    def parse(v: Any, path: str) -> float:
        t = type(v)
        if t is float:
            return check(v, path)
        if t is int:
            return check(float(v), path)
        if t is str and v in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[v]
        raise invalid_argument(path, f"expected a number, got {_jtype(v)}")

    def from_text(v: str, path: str) -> float:
        if v in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[v]
        if not _FLOAT_RE.fullmatch(v):
            raise invalid_argument(path, "expected a number, got string")
        x = float(v)
        if math.isinf(x):
            raise invalid_argument(path, f"{v} is out of range for double")
        return check(x, path)

    return parse, from_text


def _parse_bool(v: Any, path: str) -> bool:
    if v is True or v is False:
        return v
    raise invalid_argument(path, f"expected a boolean, got {_jtype(v)}")


_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}


def _parse_bool_text(v: str, path: str) -> bool:
    b = _BOOL_TEXT.get(v.lower())
    if b is None:
        raise invalid_argument(path, f'expected true or false, got "{v}"')
    return b


def _parse_string(v: Any, path: str) -> str:
    if type(v) is str:
        return v
    raise invalid_argument(path, f"expected a string, got {_jtype(v)}")


def _parse_string_text(v: str, path: str) -> str:
    return v


def _parse_bytes_text(v: str, path: str) -> bytes:
    # Standard or URL-safe alphabet, padded or not (protojson accepts all four).
    s = v.replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument(path, "expected base64-encoded bytes") from None


def _parse_bytes(v: Any, path: str) -> bytes:
    if type(v) is not str:
        raise invalid_argument(path, f"expected a base64 string, got {_jtype(v)}")
    return _parse_bytes_text(v, path)


def _make_enum_parsers(enum: _descriptor.EnumDescriptor) -> tuple[_Parse, _ParseText]:
    # The zero value means "not set": a client cannot ask for it by name (enums.lookup leaves it out).
    lookup = enums.lookup(enum)
    allowed = [s for n, s in enums.short_names(enum).items() if s is not None and lookup.get(s) == n]
    numbers = frozenset(lookup.values())
    allowed_text = ", ".join(allowed)

    def from_text(v: str, path: str) -> int:
        n = lookup.get(v.lower())
        if n is None:
            if _INT_RE.fullmatch(v) and len(v) < 12 and int(v) in numbers:
                return int(v)
            raise invalid_argument(path, f'unknown value "{v}"; expected one of: {allowed_text}')
        return n

    def parse(v: Any, path: str) -> int:
        t = type(v)
        if t is str:
            return from_text(v, path)
        if t is int:
            if v in numbers:
                return int(v)
            raise invalid_argument(path, f"unknown value {v}; expected one of: {allowed_text}")
        raise invalid_argument(path, f"expected a string (one of: {allowed_text}), got {_jtype(v)}")

    return parse, from_text


_TS_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]{1,9}))?)?"
    r"(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))?)?"
)


def _parse_timestamp_text(v: str, path: str) -> tuple[int, int]:
    """RFC 3339 / ISO 8601 -> (seconds, nanos). A time without an offset is UTC;
    a bare date is midnight UTC."""
    m = _TS_RE.fullmatch(v.strip())
    if m is None:
        raise invalid_argument(path, f'expected an RFC 3339 timestamp such as 2026-02-16T12:00:00Z, got "{v}"')
    year, month, day, hh, mm, ss, frac, _z, sign, oh, om = m.groups()
    try:
        dt = datetime(int(year), int(month), int(day), int(hh or 0), int(mm or 0), int(ss or 0))
    except ValueError as e:
        raise invalid_argument(path, f'invalid timestamp "{v}": {e}') from None
    delta = dt - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    if sign:
        ohi, omi = int(oh), int(om)
        if ohi > 23 or omi > 59:
            raise invalid_argument(path, f'invalid UTC offset in "{v}"')
        offset = ohi * 3600 + omi * 60
        seconds -= offset if sign == "+" else -offset
    nanos = int(frac.ljust(9, "0")) if frac else 0
    check_timestamp(path, seconds, nanos, v)
    return seconds, nanos


def _parse_timestamp(v: Any, path: str) -> tuple[int, int]:
    if type(v) is not str:
        raise invalid_argument(path, f"expected an RFC 3339 timestamp string, got {_jtype(v)}")
    return _parse_timestamp_text(v, path)


_DUR_RE = re.compile(r"(-)?([0-9]+)(?:\.([0-9]{1,9}))?s")


def _check_duration(seconds: int, nanos: int, path: str) -> tuple[int, int]:
    if abs(seconds) > _DUR_MAX:
        raise invalid_argument(path, "duration is out of range (at most 10000 years)")
    return seconds, nanos


def _parse_duration_text(v: str, path: str) -> tuple[int, int]:
    m = _DUR_RE.fullmatch(v)
    if m is None:
        if _FLOAT_RE.fullmatch(v):
            return _duration_from_number(float(v), path)
        raise invalid_argument(path, f'expected a duration such as "1.5s", got "{v}"')
    neg, secs, frac = m.groups()
    if len(secs) > 13:
        raise invalid_argument(path, "duration is out of range (at most 10000 years)")
    seconds = int(secs)
    nanos = int(frac.ljust(9, "0")) if frac else 0
    if neg:
        seconds, nanos = -seconds, -nanos
    return _check_duration(seconds, nanos, path)


def _duration_from_number(x: float, path: str) -> tuple[int, int]:
    if not math.isfinite(x) or abs(x) > _DUR_MAX + 1:
        raise invalid_argument(path, "duration is out of range (at most 10000 years)")
    total = round(x * 1_000_000_000)
    seconds, nanos = divmod(abs(total), 1_000_000_000)
    if total < 0:
        seconds, nanos = -seconds, -nanos
    return _check_duration(seconds, nanos, path)


def _parse_duration(v: Any, path: str) -> tuple[int, int]:
    t = type(v)
    if t is str:
        return _parse_duration_text(v, path)
    if t is int or t is float:
        return _duration_from_number(float(v), path)
    raise invalid_argument(path, f'expected a duration such as "1.5s" or a number of seconds, got {_jtype(v)}')


def _split_mask(v: str) -> list[str]:
    return [p.strip() for p in v.split(",") if p.strip()]


def _parse_field_mask(v: Any, path: str) -> list[str]:
    if type(v) is str:
        return _split_mask(v)
    if type(v) is list:
        out: list[str] = []
        for i, p in enumerate(v):
            if type(p) is not str:
                raise invalid_argument(f"{path}[{i}]", f"expected a field path string, got {_jtype(p)}")
            out.append(p)
        return out
    raise invalid_argument(path, f"expected a list of field paths, got {_jtype(v)}")


def _scalar_parsers(fd: FD) -> tuple[_Parse, _ParseText]:
    t = fd.type
    if t in _INT_RANGES:
        return _make_int_parsers(*_INT_RANGES[t])
    if t == FD.TYPE_DOUBLE:
        return _make_float_parsers(False)
    if t == FD.TYPE_FLOAT:
        return _make_float_parsers(True)
    if t == FD.TYPE_BOOL:
        return _parse_bool, _parse_bool_text
    if t == FD.TYPE_STRING:
        return _parse_string, _parse_string_text
    if t == FD.TYPE_BYTES:
        return _parse_bytes, _parse_bytes_text
    if t == FD.TYPE_ENUM:
        return _make_enum_parsers(_enum_type(fd))
    raise TypeError(f"no scalar parser for {fd.full_name}")


# --------------------------------------------------------------------------- input: per-field setters

# (message, JSON value (not None), field path, depth) -> None
_Setter = Callable[[Message, Any, str, int], None]
# (message, texts, field path) -> None
_TextSetter = Callable[[Message, Sequence[str], str], None]


class _InField:
    __slots__ = ("fd", "message_type", "name", "oneof", "set_json", "set_text")

    def __init__(self, fd: FD) -> None:
        self.fd = fd
        self.name: str = fd.name
        oneof = fd.containing_oneof
        # A one-field oneof (proto3 `optional`) cannot conflict with anything.
        self.oneof: str | None = oneof.name if oneof is not None and len(oneof.fields) > 1 else None
        self.message_type: Descriptor | None = (
            fd.message_type if fd.type == FD.TYPE_MESSAGE and not fd.is_repeated else None
        )
        self.set_json: _Setter = _build_setter(fd)
        self.set_text: _TextSetter | None = _build_text_setter(fd)


class _InPlan:
    __slots__ = ("fields", "oneof_members")

    def __init__(self, desc: Descriptor) -> None:
        self.fields: dict[str, _InField] = {}
        self.oneof_members: dict[str, list[str]] = {}
        keys, superseded = json_keys(desc)
        for fd in desc.fields:
            if fd.name not in keys:
                continue
            f = _InField(fd)
            # protojson accepts the proto name and the json_name (explicit, e.g.
            # `limit`, or the default lowerCamelCase form); an http_json_key too.
            self.fields[keys[fd.name]] = f
            self.fields.setdefault(fd.name, f)
            self.fields.setdefault(fd.json_name, f)
            if f.oneof:
                self.oneof_members.setdefault(f.oneof, []).append(fd.name)
        for old_name, by in superseded.items():
            # The superseded field's lowerCamelCase name sets the field that took its key.
            self.fields.setdefault(desc.fields_by_name[old_name].json_name, self.fields[by.name])


_in_plans: dict[Any, _InPlan] = {}


def _in_plan(desc: Descriptor) -> _InPlan:
    plan = _in_plans.get(desc)
    if plan is None:
        # Insert before filling so that recursive message types terminate: setters
        # look their sub-plans up lazily at call time.
        plan = _InPlan(desc)
        _in_plans[desc] = plan
    return plan


def _set_timestamp(sub: Any, v: tuple[int, int]) -> None:
    sub.seconds, sub.nanos = v
    sub.SetInParent()


def _set_duration(sub: Any, v: tuple[int, int]) -> None:
    sub.seconds, sub.nanos = v
    sub.SetInParent()


def _set_field_mask(sub: Any, v: list[str]) -> None:
    sub.paths.extend(v)
    sub.SetInParent()


# Well-known message types with a JSON form of their own:
# full name -> (parse JSON, parse text, store into the (sub)message)
_WKT: dict[str, tuple[_Parse, _ParseText, Callable[[Any, Any], None]]] = {
    _TIMESTAMP: (_parse_timestamp, _parse_timestamp_text, _set_timestamp),
    _DURATION: (_parse_duration, _parse_duration_text, _set_duration),
    _FIELD_MASK: (_parse_field_mask, lambda v, path: _split_mask(v), _set_field_mask),
}


def _value_json_setter(fd: FD) -> Callable[[Any, Any, str, int], Any]:
    """For one element (of a repeated field or map) of a message type: a function
    that fills a fresh element from JSON."""
    md = _message_type(fd)
    wkt = _WKT.get(md.full_name)
    if wkt is not None:
        parse, _, store = wkt

        def fill_wkt(sub: Any, v: Any, path: str, depth: int) -> None:
            if v is None:
                raise invalid_argument(path, "null is not allowed here")
            store(sub, parse(v, path))

        return fill_wkt

    def fill_msg(sub: Any, v: Any, path: str, depth: int) -> None:
        if type(v) is not dict:
            raise invalid_argument(path, f"expected an object, got {_jtype(v)}")
        _merge(sub, v, path + ".", depth + 1, None)
        sub.SetInParent()

    return fill_msg


def _element_parser(fd: FD) -> _Parse:
    parse, _ = _scalar_parsers(fd)

    def parse_element(v: Any, path: str) -> Any:
        if v is None:
            raise invalid_argument(path, "null is not allowed here")
        return parse(v, path)

    return parse_element


def _build_setter(fd: FD) -> _Setter:
    name = fd.name
    if _is_map(fd):
        return _build_map_setter(fd)
    if fd.is_repeated:
        if fd.type == FD.TYPE_MESSAGE:
            fill = _value_json_setter(fd)

            def set_repeated_msg(msg: Message, v: Any, path: str, depth: int) -> None:
                if type(v) is not list:
                    raise invalid_argument(path, f"expected an array, got {_jtype(v)}")
                container = getattr(msg, name)
                for i, item in enumerate(v):
                    fill(container.add(), item, f"{path}[{i}]", depth)

            return set_repeated_msg
        parse_el = _element_parser(fd)

        def set_repeated(msg: Message, v: Any, path: str, depth: int) -> None:
            if type(v) is not list:
                raise invalid_argument(path, f"expected an array, got {_jtype(v)}")
            getattr(msg, name).extend([parse_el(item, f"{path}[{i}]") for i, item in enumerate(v)])

        return set_repeated
    if fd.type == FD.TYPE_MESSAGE:
        wkt = _WKT.get(_message_type(fd).full_name)
        if wkt is not None:
            wparse, _, store = wkt

            def set_wkt(msg: Message, v: Any, path: str, depth: int) -> None:
                store(getattr(msg, name), wparse(v, path))

            return set_wkt

        def set_msg(msg: Message, v: Any, path: str, depth: int) -> None:
            if type(v) is not dict:
                raise invalid_argument(path, f"expected an object, got {_jtype(v)}")
            sub = getattr(msg, name)
            _merge(sub, v, path + ".", depth + 1, None)
            sub.SetInParent()

        return set_msg
    parse, _ = _scalar_parsers(fd)

    def set_scalar(msg: Message, v: Any, path: str, depth: int) -> None:
        setattr(msg, name, parse(v, path))

    return set_scalar


def _build_map_setter(fd: FD) -> _Setter:
    name = fd.name
    kfd = _message_type(fd).fields_by_name["key"]
    vfd = _message_type(fd).fields_by_name["value"]
    _, parse_key = _scalar_parsers(kfd)
    if vfd.type == FD.TYPE_MESSAGE:
        fill = _value_json_setter(vfd)

        def set_msg_map(msg: Message, v: Any, path: str, depth: int) -> None:
            if type(v) is not dict:
                raise invalid_argument(path, f"expected an object, got {_jtype(v)}")
            container = getattr(msg, name)
            for k, item in v.items():
                p = f"{path}.{k}"
                fill(container[parse_key(k, p)], item, p, depth)

        return set_msg_map
    parse_val = _element_parser(vfd)

    def set_map(msg: Message, v: Any, path: str, depth: int) -> None:
        if type(v) is not dict:
            raise invalid_argument(path, f"expected an object, got {_jtype(v)}")
        container = getattr(msg, name)
        for k, item in v.items():
            p = f"{path}.{k}"
            container[parse_key(k, p)] = parse_val(item, p)

    return set_map


def _build_text_setter(fd: FD) -> _TextSetter | None:
    """How a query or path parameter sets this field; None when it cannot
    (messages other than the well-known types, maps, repeated messages)."""
    name = fd.name
    if _is_map(fd):
        return None
    if fd.type == FD.TYPE_MESSAGE:
        full_name = _message_type(fd).full_name
        wkt = _WKT.get(full_name)
        if wkt is None or fd.is_repeated:
            return None
        _, parse_text, store = wkt
        is_mask = full_name == _FIELD_MASK

        def set_wkt_text(msg: Message, texts: Sequence[str], path: str) -> None:
            if is_mask:
                # grpc-gateway: `update_mask=a,b` or `update_mask=a&update_mask=b`.
                store(getattr(msg, name), [p for t in texts for p in _split_mask(t)])
                return
            values = [t for t in texts if t != ""]
            if not values:
                return
            if len(values) > 1:
                raise invalid_argument(path, f"expected one value, got {len(values)}")
            store(getattr(msg, name), parse_text(values[0], path))

        return set_wkt_text
    _, parse_text = _scalar_parsers(fd)
    # A legacy script writes `?status=&type=` for "no filter": an empty value of a
    # non-string field means "not given" instead of a parse error.
    keep_empty = fd.type in (FD.TYPE_STRING, FD.TYPE_BYTES)
    if fd.is_repeated:

        def set_repeated_text(msg: Message, texts: Sequence[str], path: str) -> None:
            getattr(msg, name).extend(
                [parse_text(t, f"{path}[{i}]") for i, t in enumerate(texts) if keep_empty or t != ""]
            )

        return set_repeated_text

    def set_scalar_text(msg: Message, texts: Sequence[str], path: str) -> None:
        values = texts if keep_empty else [t for t in texts if t != ""]
        if not values:
            return
        if len(values) > 1:
            raise invalid_argument(path, f"expected one value, got {len(values)}")
        setattr(msg, name, parse_text(values[0], path))

    return set_scalar_text


# --------------------------------------------------------------------------- input: messages


def _merge(msg: Message, obj: dict[str, Any], prefix: str, depth: int, present: list[str] | None) -> None:
    if depth > MAX_DEPTH:
        raise invalid_argument(prefix.rstrip(".") or "body", f"nested deeper than {MAX_DEPTH} levels")
    desc: Any = msg.DESCRIPTOR
    plan = _in_plans.get(desc) or _in_plan(desc)
    fields = plan.fields
    seen: set[str] = set()
    oneofs: dict[str, str] | None = None
    for key, value in obj.items():
        f = fields.get(key)
        if f is None:
            continue  # unknown keys are ignored (legacy rule)
        name = f.name
        if name in seen:
            raise invalid_argument(prefix + key, "given more than once (by proto name and JSON name)")
        seen.add(name)
        if present is not None:
            present.append(name)
        if value is None:
            continue  # null: leave unset (a PATCH mask derived from the keys clears it)
        if f.oneof is not None:
            if oneofs is None:
                oneofs = {}
            other = oneofs.get(f.oneof)
            if other is not None:
                members = ", ".join(plan.oneof_members[f.oneof])
                raise invalid_argument(prefix + key, f"only one of {members} may be set; {other} is set too")
            oneofs[f.oneof] = name
        # Errors name the field as the client spelled it (`limit`, not `page_size`).
        path = prefix + key
        try:
            f.set_json(msg, value, path, depth)
        except (ValueError, TypeError) as e:
            # The protobuf runtime's own checks (e.g. a string that is not valid UTF-8).
            raise invalid_argument(path, str(e)) from None


def merge_json_obj(msg: Message, obj: Any, prefix: str = "") -> list[str]:
    """Merge a decoded JSON object into ``msg``; return the proto names of the
    top-level keys that named a field (including ``null`` ones), in body order.

    ``prefix`` (e.g. ``"job."``) is prepended to field paths in errors.
    """
    if type(obj) is not dict:
        raise invalid_argument(prefix.rstrip(".") or "body", f"expected a JSON object, got {_jtype(obj)}")
    present: list[str] = []
    _merge(msg, obj, prefix, 0, present)
    return present


def from_json_obj(obj: Any, msg_class: type[M], *, prefix: str = "") -> tuple[M, list[str]]:
    """Build a ``msg_class`` from a decoded JSON object (strict; see module doc).

    Returns the message and the proto names of the top-level fields present in
    ``obj`` -- a ``null`` counts as present (and leaves the field unset) so that
    a PATCH can name a field in order to clear it.
    """
    msg = msg_class()
    present = merge_json_obj(msg, obj, prefix)
    return msg, present


# --------------------------------------------------------------------------- input: text (path and query)


class FieldPath:
    """A dotted field path (proto or JSON names) compiled against a message type,
    to set the field from text (path and query parameters)."""

    __slots__ = ("fields", "names", "path")

    def __init__(self, fields: Sequence[_InField]) -> None:
        self.fields: tuple[_InField, ...] = tuple(fields)
        self.names: tuple[str, ...] = tuple(f.name for f in fields)
        self.path: str = ".".join(self.names)

    @property
    def settable(self) -> bool:
        return self.fields[-1].set_text is not None

    @property
    def field(self) -> FD:
        return self.fields[-1].fd

    def set_text(self, msg: Message, texts: Sequence[str], label: str | None = None) -> None:
        """Set the field from text; errors name it ``label`` (default: the proto path)."""
        # Intermediate messages become present only if a value is actually set
        # (an assignment marks the chain), not merely by being walked through.
        target = msg
        for f in self.fields[:-1]:
            target = getattr(target, f.name)
        setter = self.fields[-1].set_text
        if setter is None:
            return
        path = label or self.path
        try:
            setter(target, texts, path)
        except (ValueError, TypeError) as e:
            raise invalid_argument(path, str(e)) from None


_path_cache: dict[tuple[Any, str], FieldPath] = {}


def _resolve(desc: Descriptor, dotted: str) -> FieldPath | None:
    key = (desc, dotted)
    hit = _path_cache.get(key)
    if hit is not None:
        return hit
    fields: list[_InField] = []
    d: Descriptor | None = desc
    for part in dotted.split("."):
        if d is None:
            return None
        f = _in_plan(d).fields.get(part)
        if f is None:
            return None
        fields.append(f)
        d = f.message_type if f.message_type is not None and f.message_type.full_name not in _WKT else None
    fp = FieldPath(fields)
    # Only paths that resolved are cached, so the cache is bounded by the schema,
    # not by what clients send.
    _path_cache[key] = fp
    return fp


def compile_field_path(desc: Descriptor, dotted: str) -> FieldPath:
    """Compile ``a.b.c`` against ``desc``; ValueError when it names no settable field."""
    fp = _resolve(desc, dotted)
    if fp is None:
        raise ValueError(f"{desc.full_name} has no field {dotted!r}")
    if not fp.settable:
        raise ValueError(f"{desc.full_name}.{dotted} cannot be set from text")
    return fp


def apply_query_params(msg: Message, params: Mapping[str, Sequence[str]], skip: set[str] | frozenset[str]) -> None:
    """Set fields of ``msg`` from URL query parameters (grpc-gateway's rules).

    A parameter name is a dotted field path by proto name or json_name; a
    repeated field takes every value; unknown names are ignored, and so are
    fields in ``skip`` (paths bound by the URL path or the body) and anything
    under them.
    """
    desc: Any = msg.DESCRIPTOR
    for key, values in params.items():
        fp = _resolve(desc, key)
        if fp is None or fp.fields[-1].set_text is None:
            continue
        if skip and _is_skipped(fp.names, skip):
            continue
        fp.set_text(msg, values, key)


def _is_skipped(names: tuple[str, ...], skip: set[str] | frozenset[str]) -> bool:
    return any(".".join(names[:i]) in skip for i in range(1, len(names) + 1))
