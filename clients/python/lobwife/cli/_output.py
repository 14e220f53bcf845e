"""What the commands print: JSON with the API's conventions, tables, ``key: value`` blocks, times and durations."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO, TypeAlias

from google.protobuf import descriptor, duration_pb2, json_format, message, timestamp_pb2

from lobwife import enums
from lobwife.v1 import annotations_pb2

if TYPE_CHECKING:
    # The runtime descriptors are upb's, which the stubs type apart from the
    # pure-Python ones; both have the same interface, so these names cover either.
    from google._upb import _message as _upb_message

    Descriptor: TypeAlias = descriptor.Descriptor | _upb_message.Descriptor
    EnumDescriptor: TypeAlias = descriptor.EnumDescriptor | _upb_message.EnumDescriptor
    FieldDescriptor: TypeAlias = descriptor.FieldDescriptor | _upb_message.FieldDescriptor

_FD = descriptor.FieldDescriptor
_INT64_TYPES = frozenset({_FD.TYPE_INT64, _FD.TYPE_UINT64, _FD.TYPE_SINT64, _FD.TYPE_FIXED64, _FD.TYPE_SFIXED64})


# --- output: JSON ----------------------------------------------------------------------


def message_to_dict(msg: message.Message) -> dict[str, Any]:
    """protojson with the API's JSON conventions: snake_case names, every field present,
    64-bit integers as numbers, enums by short lowercase name (``"active"``), and the keys
    of ``(lobwife.v1.http_json_key)``: a task's ``estimate_minutes`` is its
    ``estimate_minutes_exact`` (or, from a server without it, the deprecated whole minutes)."""
    data = json_format.MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return _apply_conventions(msg.DESCRIPTOR, data)


@functools.cache
def json_keys(desc: Descriptor) -> tuple[Mapping[str, str], Mapping[str, str]]:
    """(field -> its ``http_json_key``, superseded field -> the field that took its name as key).

    The gateway's rule (annotations.proto): a field with ``http_json_key`` goes by that key,
    which is the proto name of the older field it supersedes; the older field is left out.
    """
    keyed: dict[str, str] = {}
    for field in desc.fields:
        key = field.GetOptions().Extensions[annotations_pb2.http_json_key]
        if key and key in desc.fields_by_name:
            keyed[field.name] = key
    return keyed, {key: name for name, key in keyed.items()}


def _rekey(desc: Descriptor, data: dict[str, Any]) -> dict[str, Any]:
    keyed, superseded = json_keys(desc)
    if not keyed:
        return data
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name in keyed:
            out[keyed[name]] = value  # the new field wins over the old one's value
        elif name in superseded:
            out.setdefault(name, data.get(superseded[name], value))
        else:
            out[name] = value
    return out


def _apply_conventions(desc: Descriptor, data: dict[str, Any]) -> dict[str, Any]:
    for field in desc.fields:
        if field.name not in data:
            continue
        value = data[field.name]
        repeated = isinstance(value, list)
        items = value if repeated else [value]
        if field.enum_type is not None:
            items = [_short_enum(field.enum_type, v) for v in items]
        elif field.type in _INT64_TYPES:
            items = [int(v) for v in items]
        elif field.message_type is not None and not field.message_type.full_name.startswith("google.protobuf."):
            if field.message_type.GetOptions().map_entry:
                continue
            items = [_apply_conventions(field.message_type, item) for item in items]
        data[field.name] = items if repeated else items[0]
    return _rekey(desc, data)


def _short_enum(enum: EnumDescriptor, value: object) -> object:
    # json_format gives the value's full name; the short name is lobwife.enums' (as the gateway's).
    if not isinstance(value, str):
        return value  # an unknown number stays a number
    known = enum.values_by_name.get(value)
    return enums.short_name(enum, known.number) if known is not None else value.lower()


def _print_json(data: object, out: TextIO, *, compact: bool = False) -> None:
    if compact:
        out.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n")
    else:
        out.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    out.flush()


# --- output: text ----------------------------------------------------------------------


def format_timestamp(ts: timestamp_pb2.Timestamp) -> str:
    """``2025-01-02T15:04:05Z`` (UTC, whole seconds), or ``-`` when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return "-"
    return datetime.fromtimestamp(ts.seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks."""
    table = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table]
    return "\n".join(lines) + "\n"


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_fields(msg: message.Message, *, skip: Iterable[str] = ()) -> str:
    """One ``key: value`` line per field of ``msg`` in proto order, keys aligned."""
    skipped = set(skip)
    keyed, superseded = json_keys(msg.DESCRIPTOR)
    by_name = msg.DESCRIPTOR.fields_by_name
    pairs: list[tuple[str, str]] = []
    for field in msg.DESCRIPTOR.fields:
        if field.name in skipped or field.name in keyed:
            continue
        if field.name in superseded:
            # Shown once, under the old name (the JSON key), with the new field's value when set.
            newer = by_name[superseded[field.name]]
            shown = newer if msg.HasField(newer.name) or not msg.HasField(field.name) else field
            pairs.append((field.name, _field_text(msg, shown)))
            continue
        pairs.append((field.name, _field_text(msg, field)))
    width = max(len(k) for k, _ in pairs) + 1
    return "".join(f"{(k + ':').ljust(width)} {v}\n" for k, v in pairs)


def _field_text(msg: message.Message, field: FieldDescriptor) -> str:
    value = getattr(msg, field.name)
    if field.is_repeated:
        return ", ".join(str(v) for v in value) or "-"
    if field.has_presence and not msg.HasField(field.name):
        return "-"
    if isinstance(value, timestamp_pb2.Timestamp):
        return format_timestamp(value)
    if field.enum_type is not None:
        return enum_text(field.enum_type, value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return repr(value).removesuffix(".0")  # 30, 12.5
    if isinstance(value, message.Message):
        return json.dumps(message_to_dict(value))
    return str(value) if value != "" else "-"


def enum_text(enum: EnumDescriptor, value: int) -> str:
    """The short lowercase name of an enum value (``success``), ``-`` when unspecified."""
    if value not in enum.values_by_number:
        return str(value)  # a number this client's contract lacks stays a number
    return enums.short_name(enum, value) or "-"


def format_seconds(seconds: float) -> str:
    """A duration for people: ``0.52s``, ``12.3s``, ``45s``, ``1m30s``, ``2h``, ``1d6h``."""
    # Fractions only below a minute, and only where rounding keeps the number under the next unit.
    if seconds != int(seconds):
        if seconds < 9.995:
            return f"{seconds:.2f}s"
        if seconds < 59.95:
            return f"{seconds:.1f}s"
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_duration(d: duration_pb2.Duration) -> str:
    return format_seconds(d.ToNanoseconds() / 1e9)


def _json(ns: argparse.Namespace) -> bool:
    return bool(getattr(ns, "json", False))


def print_page(
    ns: argparse.Namespace,
    key: str,
    items: Sequence[message.Message],
    next_token: str,
    headers: Sequence[str],
    row: Callable[[Any], Sequence[str]],
    empty: str | None = None,
) -> int:
    """One page of a list command: ``{key: [...], "next_page_token": ...}`` with --json, else a table
    (``no <key>`` on stderr when empty) and, when there is more, how to get it. Returns 0."""
    out = sys.stdout
    if _json(ns):
        _print_json({key: [message_to_dict(m) for m in items], "next_page_token": next_token}, out)
        return 0
    if items:
        out.write(format_table(headers, [row(m) for m in items]))
    else:
        print(empty or f"no {key.replace('_', ' ')}", file=sys.stderr)
    if next_token:
        print(f"more: --page-token {next_token} (or --all)", file=sys.stderr)
    return 0


def fetch_page(
    ns: argparse.Namespace,
    every: Callable[..., Iterable[Any]],
    one: Callable[..., Any],
    items: Callable[[Any], Iterable[Any]],
) -> tuple[list[Any], str]:
    """What a list command shows: every page with ``--all``, else the page ``--page-token`` names
    (``--limit`` its size either way); and the next page's token ("" when none)."""
    if ns.all:
        return list(every(page_size=ns.limit)), ""
    page = one(page_size=ns.limit, page_token=ns.page_token)
    return list(items(page)), page.next_page_token
