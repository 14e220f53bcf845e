"""The error every client call raises: :class:`LobwifeError`, with the gRPC code, message and field violations."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, cast

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

_DETAILS_KEY = "grpc-status-details-bin"


class FieldViolation(NamedTuple):
    """One bad field of a request, from the ``google.rpc.BadRequest`` error detail."""

    field: str
    description: str


class LobwifeError(Exception):
    """A failed call: the gRPC status code, its message and the field violations, if any.

    ``str(err)`` is ``"NOT_FOUND: Task T9 not found"``. ``reason`` is the
    ``google.rpc.ErrorInfo`` reason when the server gave one.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        field_violations: Sequence[FieldViolation | tuple[str, str]] = (),
        *,
        reason: str | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.field_violations: tuple[FieldViolation, ...] = tuple(FieldViolation(*v) for v in field_violations)
        self.reason = reason

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> LobwifeError:
        """Build from a failed call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``)."""
        code = _call_attr(error, "code")
        if not isinstance(code, grpc.StatusCode):
            code = grpc.StatusCode.UNKNOWN
        message = _call_attr(error, "details")
        if not isinstance(message, str):
            message = str(error)
        status = _rich_status(error)
        violations: list[FieldViolation] = []
        reason: str | None = None
        if status is not None:
            message = status.message or message
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
                elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason or None
        return cls(code, message, violations, reason=reason)

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle as cls(*args); ours has a different signature, and errors
        # cross process boundaries (concurrent.futures, multiprocessing).
        return (_rebuild_error, (self.code.name, self.message, self.field_violations, self.reason))

    def __repr__(self) -> str:
        return f"LobwifeError({self.code.name}, {self.message!r}, {list(self.field_violations)!r})"


def _rebuild_error(code: str, message: str, violations: Sequence[tuple[str, str]], reason: str | None) -> LobwifeError:
    return LobwifeError(grpc.StatusCode[code], message, violations, reason=reason)


def _call_attr(error: grpc.RpcError, name: str) -> object:
    # A grpc.RpcError that is not also a grpc.Call (rare, e.g. raised by an
    # interceptor) has no code()/details(); fall back rather than mask the failure.
    method = getattr(error, name, None)
    if method is None:
        return None
    try:
        return method()
    except Exception:
        return None


def _rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` the server put in the trailers, if any."""
    try:
        status = rpc_status.from_call(cast(grpc.Call, error))
    except ValueError:
        # The details disagree with the call's status line (a proxy rewrote one of
        # them); the details still say which fields were wrong, so read them anyway.
        status = _details_from_trailers(error)
    except Exception:
        # Not a grpc.Call (no trailers to read): there are no details to add.
        return None
    return status if isinstance(status, status_pb2.Status) else None


def _details_from_trailers(error: grpc.RpcError) -> status_pb2.Status | None:
    trailers = _call_attr(error, "trailing_metadata")
    if not isinstance(trailers, Iterable):
        return None
    for item in trailers:
        key, value = item
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None
