"""Helpers for asserting gRPC errors in tests: the error a call raises, and the fields it names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
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
