"""Rules the contract declares on fields (``google.api.field_behavior``), enforced once.

- ``REQUIRED`` on a request field: :func:`required_check` builds, once per method, the
  check the dispatcher runs on every request of that method, whatever the transport.
- ``OUTPUT_ONLY`` / ``IDENTIFIER`` on a resource field: :class:`UpdateMask` is the one
  reading of an Update RPC's ``update_mask`` (TaskService.UpdateTask, JobService.UpdateJob).

When a REQUIRED field counts as missing follows proto3, where the wire cannot tell
an unset field without presence from its zero value:

- a message field: unset (``HasField`` false);
- a string or bytes field: empty (a blank string is the service's to judge: its
  message says "must not be blank");
- a repeated or map field: no element;
- an enum field without presence: its ``*_UNSPECIFIED`` zero value, which by the
  contract's convention means "not set" (the gateway shows it as null);
- a number or bool with presence (``optional``): unset;
- a number or bool without presence: never -- 0 and false are values. A service
  that refuses 0 (``run_id``, ``id``) says so in its own terms.

A REQUIRED message field that is set has its own REQUIRED fields checked, and so on
down (``job.name`` if Job declared it); an optional message field's REQUIRED fields
are checked when that field is set. Fields are checked in declaration order and the
first missing one is the answer: INVALID_ARGUMENT naming its dotted path.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor, field_mask_pb2
from google.protobuf.message import Message

from lobwife import enums
from lobwife_server.core.errors import invalid_argument

FD = descriptor.FieldDescriptor
_BEHAVIOR = field_behavior_pb2.field_behavior
REQUIRED = field_behavior_pb2.REQUIRED
OUTPUT_ONLY = field_behavior_pb2.OUTPUT_ONLY
IDENTIFIER = field_behavior_pb2.IDENTIFIER

#: The description of a missing field's violation.
MISSING = "is required"
MISSING_ITEMS = "is required: at least one item"


def behaviors(fd: FD) -> frozenset[int]:
    """The field's ``google.api.field_behavior`` values."""
    opts: Any = fd.GetOptions()
    return frozenset(opts.Extensions[_BEHAVIOR])


def fields_with(desc: descriptor.Descriptor, behavior: int) -> frozenset[str]:
    """Names of the fields of ``desc`` that declare ``behavior``."""
    return frozenset(fd.name for fd in desc.fields if behavior in behaviors(fd))


# --------------------------------------------------------------------------- REQUIRED

#: A request check: raises INVALID_ARGUMENT for the first missing REQUIRED field.
Check = Callable[[Message], None]


def required_paths(desc: descriptor.Descriptor) -> tuple[str, ...]:
    """The dotted paths of the REQUIRED fields the check of ``desc`` enforces (for docs and tests).

    A REQUIRED number without presence is not among them: proto3 cannot tell it missing.
    """
    out: list[str] = []

    def walk(d: descriptor.Descriptor, prefix: str, seen: frozenset[str]) -> None:
        for fd in d.fields:
            path = prefix + fd.name
            if REQUIRED in behaviors(fd) and _missing(fd) is not None:
                out.append(path)
            sub = _singular_message(fd)
            if sub is not None and sub.full_name not in seen:
                walk(sub, path + ".", seen | {sub.full_name})

    walk(desc, "", frozenset({desc.full_name}))
    return tuple(out)


def required_check(desc: descriptor.Descriptor) -> Check | None:
    """The check of a request type's REQUIRED fields, or None when it has none (the common case costs nothing).

    Everything is decided here, once: the check a call runs is a few attribute reads.
    """
    return _message_check(desc, "", frozenset({desc.full_name}))


def _singular_message(fd: FD) -> descriptor.Descriptor | None:
    if fd.type == FD.TYPE_MESSAGE and not fd.is_repeated:
        return fd.message_type
    return None


def _missing(fd: FD) -> Callable[[Message], bool] | None:
    """A predicate "this REQUIRED field is missing", or None when proto3 cannot tell (a number without presence)."""
    name = fd.name
    if fd.is_repeated or fd.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
        return lambda msg: not getattr(msg, name)  # empty text, bytes, list or map
    if fd.has_presence:  # a message, a oneof member or an `optional` scalar
        return lambda msg: not msg.HasField(name)
    if fd.type == FD.TYPE_ENUM:
        enum = fd.enum_type
        assert enum is not None
        zero = enum.values_by_number.get(0)
        if zero is not None and enums.is_unspecified(zero):
            return lambda msg: not getattr(msg, name)
    return None


def _message_check(desc: descriptor.Descriptor, prefix: str, seen: frozenset[str]) -> Check | None:
    # In declaration order, depth first (the order of required_paths): each REQUIRED field of this
    # message as (path, is-missing predicate, description), and each message field whose type has
    # REQUIRED fields of its own as (name, its check), run when that field is set.
    own: list[tuple[str, Callable[[Message], bool], str]] = []
    steps: list[tuple[str, Callable[[Message], bool], str] | tuple[str, Check]] = []
    for fd in desc.fields:
        path = prefix + fd.name
        if REQUIRED in behaviors(fd):
            missing = _missing(fd)
            if missing is not None:
                own.append((path, missing, MISSING_ITEMS if fd.is_repeated else MISSING))
                steps.append(own[-1])
        sub = _singular_message(fd)
        if sub is not None and sub.full_name not in seen:
            sub_check = _message_check(sub, path + ".", seen | {sub.full_name})
            if sub_check is not None:
                steps.append((fd.name, sub_check))
    if not steps:
        return None
    if len(steps) == len(own) and all(_is_plain(desc, p[len(prefix) :]) for p, _, _ in own):
        # Only text, bytes, repeated or enum fields (every REQUIRED field of this contract but the
        # `job` and `finding` messages): one getattr each, no predicate call.
        names = tuple((p[len(prefix) :], p, d) for p, _, d in own)
        if len(names) == 1:  # the common case (GetTask, CreateTask, every job by name): no loop
            ((only, only_path, only_description),) = names

            def check_one(msg: Message) -> None:
                if not getattr(msg, only):
                    raise invalid_argument(only_path, only_description)

            return check_one

        def check_plain(msg: Message) -> None:
            for name, path, description in names:
                if not getattr(msg, name):
                    raise invalid_argument(path, description)

        return check_plain
    plan = tuple(steps)

    def check_nested(msg: Message) -> None:
        for step in plan:
            if len(step) == 3:
                path, missing, description = step
                if missing(msg):
                    raise invalid_argument(path, description)
            else:
                name, inner = step
                if msg.HasField(name):
                    inner(getattr(msg, name))

    return check_nested


def _is_plain(desc: descriptor.Descriptor, name: str) -> bool:
    """A field whose emptiness is its falsiness: text, bytes, repeated, or an UNSPECIFIED-zero enum."""
    fd = desc.fields_by_name[name]
    return (
        fd.is_repeated
        or fd.type in (FD.TYPE_STRING, FD.TYPE_BYTES)
        or (fd.type == FD.TYPE_ENUM and not fd.has_presence)
    )


# --------------------------------------------------------------------------- update masks


class UpdateMask:
    """The one reading of an Update RPC's ``update_mask``, from the resource's field behaviors.

    ``resource`` is the message the mask's paths name fields of (AIP-134): Task for
    UpdateTask (whose request repeats Task's fields), Job for UpdateJob. A path is:

    - passed over when it names a field of the request that is not the resource's
      (``request_only``: UpdateTask's ``actor``; an HTTP PATCH body's keys become the
      mask, so these appear), or the resource's IDENTIFIER (it says which resource,
      it cannot change);
    - refused when the resource declares it OUTPUT_ONLY: ``update_mask: created_at is
      output only``;
    - refused when it is none of ``updatable``: ``update_mask: unknown field 'bogus'``
      (``what`` words it for the service);
    - else kept, once, in the order given.
    """

    __slots__ = ("_identifier", "_output_only", "_skip", "_unknown", "_updatable")

    def __init__(
        self,
        resource: descriptor.Descriptor,
        updatable: Collection[str],
        *,
        request_only: Collection[str] = (),
        unknown: str = "unknown field {path!r}",
    ) -> None:
        self._output_only = fields_with(resource, OUTPUT_ONLY)
        self._identifier = fields_with(resource, IDENTIFIER)
        self._skip = frozenset(request_only) | self._identifier
        self._updatable = frozenset(updatable)
        self._unknown = unknown
        known = frozenset(f.name for f in resource.fields)
        wrong = sorted((self._updatable - known) | (self._updatable & (self._output_only | self._identifier)))
        if wrong:
            # A service's table and the contract disagree: refuse to start rather than refuse calls.
            raise ValueError(f"{resource.full_name}: not updatable fields listed as updatable: {', '.join(wrong)}")

    @property
    def output_only(self) -> frozenset[str]:
        return self._output_only

    def paths(self, mask: field_mask_pb2.FieldMask | Sequence[str]) -> list[str]:
        """The mask's updatable paths, checked, each once, in order (empty when none is left)."""
        names: list[str] = []
        given = mask.paths if isinstance(mask, field_mask_pb2.FieldMask) else mask
        for path in given:
            if path in self._skip:
                continue
            if path in self._output_only:
                raise invalid_argument("update_mask", f"{path} is output only")
            if path not in self._updatable:
                raise invalid_argument("update_mask", self._unknown.format(path=path))
            if path not in names:
                names.append(path)
        return names
