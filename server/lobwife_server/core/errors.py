"""Errors: one exception type for every failure a client should see, mapped once.

Service code raises :class:`ApiError`. The gRPC binding turns it into a
``google.rpc.Status`` (with ``BadRequest`` field violations) in the call's
trailers; the HTTP gateway turns it into grpc-gateway's status code and a JSON
body that also carries the legacy ``error`` string.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2


class ApiError(Exception):
    """A failure with a gRPC status code, a message and optional field violations."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        violations: Sequence[tuple[str, str]] = (),
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = tuple(violations)
        self.reason = reason

    def to_status(self) -> status_pb2.Status:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in self.violations
                ]
            )
            detail = any_pb2.Any()
            detail.Pack(bad)
            status.details.append(detail)
        if self.reason:
            info = error_details_pb2.ErrorInfo(reason=self.reason, domain="lobwife")
            detail = any_pb2.Any()
            detail.Pack(info)
            status.details.append(detail)
        return status

    def __repr__(self) -> str:
        return f"ApiError({self.code.name}, {self.message!r})"


def invalid_argument(field: str, description: str) -> ApiError:
    """INVALID_ARGUMENT naming the field, e.g. ``name: must not be blank``."""
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {description}", violations=[(field, description)])


def not_found(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str, reason: str | None = None) -> ApiError:
    return ApiError(grpc.StatusCode.FAILED_PRECONDITION, message, reason=reason)


def unavailable(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNAVAILABLE, message)


def internal(message: str = "internal error") -> ApiError:
    return ApiError(grpc.StatusCode.INTERNAL, message)


def unimplemented(method: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet")


# grpc-gateway's mapping of gRPC codes to HTTP statuses (runtime/errors.go HTTPStatusFromCode).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    # grpc-gateway maps FAILED_PRECONDITION to 400; the legacy API (and AIP-193's
    # conflict semantics for "already cancelled" / "already running") need 409.
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
