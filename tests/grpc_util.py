"""Helpers for gRPC in tests: the error a call raises, the fields it names, and timestamps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def error_of(call: Callable[[], Any]) -> grpc.RpcError:
    """The RpcError ``call`` raises (the test fails if it raises none)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def violations(err: grpc.RpcError) -> list[str]:
    """The fields named by the error's BadRequest field violations, in order."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    fields: list[str] = []
    for d in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if d.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields


def ts(text: str) -> timestamp_pb2.Timestamp:
    """A Timestamp from ISO 8601 text; naive times are UTC."""
    at = datetime.fromisoformat(text)
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(at if at.tzinfo is not None else at.replace(tzinfo=UTC))
    return t
