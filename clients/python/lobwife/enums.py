"""Short names of the contract's enum values: the one rule every surface uses.

The HTTP/JSON gateway, the typed client and the CLI all show an enum value by its
short lowercase name (``TASK_STATUS_QUEUED`` -> ``"queued"``) and accept it back.
They used to compute the name three times and disagreed on acronyms; this module
is the only place that does, from the enum's descriptor:

- the prefix is the enum's name in UPPER_SNAKE_CASE as buf's ``ENUM_VALUE_PREFIX``
  lint rule spells it: a new word starts at a lower-or-digit -> upper change and
  before the last capital of a run of capitals (``TaskStatus`` -> ``TASK_STATUS_``,
  ``JWTRole`` -> ``JWT_ROLE_``, ``HTTPServerV2`` -> ``HTTP_SERVER_V2_``);
- the short name is the value's name without that prefix, lowercased; a value that
  does not carry the prefix (or is nothing but it) keeps its whole name, lowercased;
- the zero value named ``*_UNSPECIFIED`` has no short name (None): it means "not
  set", so it is shown as null / ``-`` and cannot be asked for by name;
- an alias (``allow_alias``) shares its number's first name.

Lookups are computed once per enum and cached. The server may import this module
(the client package); nothing here imports the server.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeAlias

from google.protobuf import descriptor

if TYPE_CHECKING:
    # The runtime descriptors are upb's, which the stubs type apart from the pure-Python ones.
    from google._upb import _message as _upb_message

    EnumDescriptor: TypeAlias = descriptor.EnumDescriptor | _upb_message.EnumDescriptor
    EnumValueDescriptor: TypeAlias = descriptor.EnumValueDescriptor | _upb_message.EnumValueDescriptor

__all__ = ["is_unspecified", "lookup", "parse", "short_name", "short_names", "value_prefix"]

# Word boundaries of a CamelCase name: lower/digit -> Upper, and Upper -> Upper+lower (the end of an acronym).
_WORD = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def value_prefix(enum: EnumDescriptor) -> str:
    """``TaskStatus`` -> ``TASK_STATUS_``; ``JWTRole`` -> ``JWT_ROLE_`` (nested enums: their own name only)."""
    return _WORD.sub("_", enum.name).upper() + "_"


def is_unspecified(value: EnumValueDescriptor) -> bool:
    """The ``*_UNSPECIFIED`` zero value: "not set"."""
    return value.number == 0 and value.name.endswith("_UNSPECIFIED")


@functools.cache
def short_names(enum: EnumDescriptor) -> Mapping[int, str | None]:
    """Number -> short lowercase name; the ``*_UNSPECIFIED`` zero value -> None."""
    prefix = value_prefix(enum)
    names: dict[int, str | None] = {}
    for v in enum.values:
        if v.number in names:  # allow_alias: the first name wins
            continue
        if is_unspecified(v):
            names[v.number] = None
        elif v.name.startswith(prefix) and len(v.name) > len(prefix):
            names[v.number] = v.name[len(prefix) :].lower()
        else:
            names[v.number] = v.name.lower()
    return MappingProxyType(names)


def short_name(enum: EnumDescriptor, number: int) -> str | None:
    """The short name of ``number``; None for the unspecified zero value and for a number the enum lacks."""
    return short_names(enum).get(number)


@functools.cache
def lookup(enum: EnumDescriptor) -> Mapping[str, int]:
    """Lowercase name -> number, for every value but the unspecified one: short names and full names.

    A short name never shadows a full name (``lookup[v.name.lower()]`` is always ``v``).
    """
    out: dict[str, int] = {}
    for v in enum.values:
        if not is_unspecified(v):
            out[v.name.lower()] = v.number
    shorts = short_names(enum)
    for v in enum.values:
        s = shorts.get(v.number)
        if s is not None and s not in out:
            out[s] = v.number
    return MappingProxyType(out)


def parse(enum: EnumDescriptor, text: str) -> int | None:
    """The number named by ``text`` (short or full name, any case, ``-`` for ``_``), or None."""
    return lookup(enum).get(text.strip().lower().replace("-", "_"))
