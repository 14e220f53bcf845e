"""RPC metrics: what the dispatcher's per-method meters count is what /metrics exposes."""

from __future__ import annotations

import re

import pytest
from prometheus_client import generate_latest

from lobwife.v1 import tasks_pb2
from lobwife_server.api.rpc import CallContext, Dispatcher
from lobwife_server.core import metrics
from lobwife_server.core.errors import ApiError, not_found


def _sample(name: str, **labels: str) -> float:
    text = generate_latest(metrics.REGISTRY).decode()
    for line in text.splitlines():
        m = re.match(r"^(\w+)\{(.*)\} (\S+)$", line)
        if m and m.group(1) == name and dict(re.findall(r'(\w+)="([^"]*)"', m.group(2))) == labels:
            return float(m.group(3))
    return 0.0


class _Svc:
    async def GetTask(self, req: tasks_pb2.GetTaskRequest, ctx: CallContext) -> tasks_pb2.GetTaskResponse:
        if req.task_id == "missing":
            raise not_found("no such task")
        return tasks_pb2.GetTaskResponse()


async def test_calls_are_counted_by_code_and_timed_per_transport() -> None:
    d = Dispatcher({"lobwife.v1.TaskService": _Svc()})
    m = d.methods["/lobwife.v1.TaskService/GetTask"]
    labels = {"service": "TaskService", "method": "GetTask", "transport": "grpc"}
    ok0 = _sample("lobwife_rpc_calls_total", **labels, code="OK")
    nf0 = _sample("lobwife_rpc_calls_total", **labels, code="NOT_FOUND")
    n0 = _sample("lobwife_rpc_duration_seconds_count", **labels)
    http0 = _sample("lobwife_rpc_duration_seconds_count", **{**labels, "transport": "http"})
    for _ in range(3):
        await d.unary(m, tasks_pb2.GetTaskRequest(task_id="T1"), CallContext(m.full_name, "grpc", dict))
    with pytest.raises(ApiError):
        await d.unary(m, tasks_pb2.GetTaskRequest(task_id="missing"), CallContext(m.full_name, "grpc", dict))
    assert _sample("lobwife_rpc_calls_total", **labels, code="OK") == ok0 + 3
    assert _sample("lobwife_rpc_calls_total", **labels, code="NOT_FOUND") == nf0 + 1
    assert _sample("lobwife_rpc_duration_seconds_count", **labels) == n0 + 4
    assert _sample("lobwife_rpc_duration_seconds_bucket", **labels, le="+Inf") >= 4
    # The other transport's series is its own.
    assert _sample("lobwife_rpc_duration_seconds_count", **{**labels, "transport": "http"}) == http0
    # A second dispatcher (another server in the same process) adds to the same series.
    d2 = Dispatcher({"lobwife.v1.TaskService": _Svc()})
    m2 = d2.methods[m.full_name]
    await d2.unary(m2, tasks_pb2.GetTaskRequest(task_id="T1"), CallContext(m.full_name, "grpc", dict))
    assert _sample("lobwife_rpc_calls_total", **labels, code="OK") == ok0 + 4
