"""The auth hook in the dispatcher: enforce refuses with the right code, permissive lets through and counts,
a denial never reaches the implementation, and the log says who, what and why without the credential."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest

from lobwife.v1 import broker_pb2, system_pb2, tasks_pb2
from lobwife_server.api.rpc import CallContext, Dispatcher
from lobwife_server.auth.enforcer import Authenticator, Enforcer, MemoryDirectory, Mode
from lobwife_server.auth.keys import KeyRing
from lobwife_server.auth.policy import Role
from lobwife_server.auth.tokens import LobwifeTokens
from lobwife_server.core import metrics
from lobwife_server.core.errors import ApiError


class _Tasks:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def GetTask(self, req: Any, ctx: CallContext) -> Any:
        self.calls.append(req.task_id)
        return tasks_pb2.GetTaskResponse(task=tasks_pb2.Task(task_id=req.task_id))

    async def CreateTask(self, req: Any, ctx: CallContext) -> Any:
        self.calls.append("create")
        return tasks_pb2.CreateTaskResponse()


class _System:
    async def GetHealth(self, req: Any, ctx: CallContext) -> Any:
        return system_pb2.GetHealthResponse(status="ok")


@pytest.fixture
def tokens(tmp_path: Path) -> LobwifeTokens:
    return LobwifeTokens(KeyRing.load_or_create(tmp_path))


def make(mode: Mode, tokens: LobwifeTokens, live: Mapping[int, bool] | None = None) -> tuple[Dispatcher, _Tasks]:
    tasks = _Tasks()
    directory = MemoryDirectory(live if live is not None else {1: True, 2: True})
    enforcer = Enforcer(mode, Authenticator(tokens), directory)
    d = Dispatcher({"lobwife.v1.TaskService": tasks, "lobwife.v1.SystemService": _System()}, authorizer=enforcer)
    return d, tasks


def ctx(method: str, token: str | None = None, header: str | None = None) -> CallContext:
    md: dict[str, str] = {}
    if token is not None:
        md["authorization"] = f"Bearer {token}"
    if header is not None:
        md["authorization"] = header
    return CallContext(method, "grpc", lambda: md, "ipv4:127.0.0.1:1")


async def call(d: Dispatcher, name: str, req: Any, token: str | None = None, header: str | None = None) -> Any:
    m = d.methods[name]
    c = ctx(name, token, header)
    return await d.unary(m, req, c), c


async def code_of(d: Dispatcher, name: str, req: Any, token: str | None = None, header: str | None = None) -> str:
    try:
        await call(d, name, req, token, header)
    except ApiError as e:
        return e.code.name
    return "OK"


GET = "/lobwife.v1.TaskService/GetTask"
CREATE = "/lobwife.v1.TaskService/CreateTask"


def count(metric: Any, rule: str, reason: str) -> float:
    return float(metric.labels(rule, reason)._value.get())


async def test_enforce_answers_each_case_with_its_code(tokens: LobwifeTokens) -> None:
    d, impl = make(Mode.ENFORCE, tokens)
    admin, _ = tokens.mint(Role.ADMIN)
    reader, _ = tokens.mint(Role.READER)
    own, _ = tokens.mint(Role.TASK, task=1)
    get = tasks_pb2.GetTaskRequest(task_id="T1")
    assert await code_of(d, GET, get) == "UNAUTHENTICATED"
    assert await code_of(d, GET, get, header="Basic dXNlcjpwYXNz") == "UNAUTHENTICATED"
    assert await code_of(d, GET, get, header="Bearer garbage") == "UNAUTHENTICATED"
    assert await code_of(d, GET, get, admin) == "OK"
    assert await code_of(d, GET, get, reader) == "OK"
    assert await code_of(d, GET, get, own) == "OK"
    assert await code_of(d, GET, tasks_pb2.GetTaskRequest(task_id="2"), own) == "PERMISSION_DENIED"
    assert await code_of(d, GET, tasks_pb2.GetTaskRequest(task_id=""), own) == "PERMISSION_DENIED"
    assert await code_of(d, CREATE, tasks_pb2.CreateTaskRequest(name="x"), reader) == "PERMISSION_DENIED"
    assert await code_of(d, CREATE, tasks_pb2.CreateTaskRequest(name="x"), own) == "PERMISSION_DENIED"
    assert impl.calls == ["T1", "T1", "T1"]  # only the admitted calls reached the implementation


async def test_a_denied_call_to_an_unbuilt_rpc_is_denied_not_unimplemented(tokens: LobwifeTokens) -> None:
    d, _ = make(Mode.ENFORCE, tokens)
    reader, _ = tokens.mint(Role.READER)
    own, _ = tokens.mint(Role.TASK, task=1)
    service = "/lobwife.v1.BrokerService/IssueServiceToken"
    task_token = "/lobwife.v1.BrokerService/IssueTaskToken"
    assert await code_of(d, service, broker_pb2.IssueServiceTokenRequest(service="x"), reader) == "PERMISSION_DENIED"
    assert await code_of(d, service, broker_pb2.IssueServiceTokenRequest(service="x"), own) == "PERMISSION_DENIED"
    assert await code_of(d, task_token, broker_pb2.IssueTaskTokenRequest(task_id="T2"), own) == "PERMISSION_DENIED"
    assert await code_of(d, task_token, broker_pb2.IssueTaskTokenRequest(task_id="T1"), own) == "UNIMPLEMENTED"


async def test_a_task_credential_stops_working_when_its_task_ends(tokens: LobwifeTokens) -> None:
    live = {1: True}
    d, _ = make(Mode.ENFORCE, tokens, live)
    own, _ = tokens.mint(Role.TASK, task=1)
    get = tasks_pb2.GetTaskRequest(task_id="T1")
    assert await code_of(d, GET, get, own) == "OK"
    d.authorizer.directory.live[1] = False  # type: ignore[attr-defined]
    before = count(metrics.AUTH_DENIED, GET, "task_ended")
    assert await code_of(d, GET, get, own) == "UNAUTHENTICATED"  # even with its token cached
    assert count(metrics.AUTH_DENIED, GET, "task_ended") == before + 1


async def test_health_is_open_and_does_not_look_at_the_credential(tokens: LobwifeTokens) -> None:
    d, _ = make(Mode.ENFORCE, tokens)
    health = "/lobwife.v1.SystemService/GetHealth"
    assert await code_of(d, health, system_pb2.GetHealthRequest()) == "OK"
    assert await code_of(d, health, system_pb2.GetHealthRequest(), header="Bearer garbage") == "OK"


async def test_permissive_lets_everything_through_and_counts_what_enforce_would_deny(
    tokens: LobwifeTokens, caplog: pytest.LogCaptureFixture
) -> None:
    d, impl = make(Mode.PERMISSIVE, tokens)
    reader, _ = tokens.mint(Role.READER)
    missing = count(metrics.AUTH_WOULD_DENY, GET, "missing")
    role = count(metrics.AUTH_WOULD_DENY, CREATE, "role")
    denied = count(metrics.AUTH_DENIED, CREATE, "role")
    caplog.set_level(logging.INFO, "lobwife.auth")
    resp, c = await call(d, GET, tasks_pb2.GetTaskRequest(task_id="T1"))
    assert resp.task.task_id == "T1" and c.identity is None
    _, c = await call(d, CREATE, tasks_pb2.CreateTaskRequest(name="x"), reader)
    assert c.identity is not None and c.identity.role is Role.READER  # authenticated, then let through
    assert impl.calls == ["T1", "create"]
    assert count(metrics.AUTH_WOULD_DENY, GET, "missing") == missing + 1
    assert count(metrics.AUTH_WOULD_DENY, CREATE, "role") == role + 1
    assert count(metrics.AUTH_DENIED, CREATE, "role") == denied  # nothing denied
    lines = [r for r in caplog.records if r.name == "lobwife.auth"]
    assert any("would deny" in r.getMessage() and getattr(r, "reason", None) == "role" for r in lines)


async def test_a_denial_logs_who_what_and_why_and_never_the_credential(
    tokens: LobwifeTokens, caplog: pytest.LogCaptureFixture
) -> None:
    d, _ = make(Mode.ENFORCE, tokens)
    reader, _ = tokens.mint(Role.READER, subject="grafana")
    caplog.set_level(logging.INFO)
    assert await code_of(d, CREATE, tasks_pb2.CreateTaskRequest(name="x"), reader) == "PERMISSION_DENIED"
    assert await code_of(d, CREATE, tasks_pb2.CreateTaskRequest(name="x"), header="Bearer " + reader[:-4]) == (
        "UNAUTHENTICATED"
    )
    denials = [r for r in caplog.records if r.name == "lobwife.auth" and "denied" in r.getMessage()]
    assert len(denials) == 2
    first = vars(denials[0])
    assert (first["subject"], first["role"], first["method"], first["reason"]) == ("grafana", "reader", CREATE, "role")
    assert vars(denials[1])["reason"] in ("signature", "malformed")
    for r in caplog.records:
        text = r.getMessage() + repr(vars(r))
        assert reader not in text and reader.split(".")[2] not in text


async def test_the_hook_is_skipped_when_auth_is_off() -> None:
    d = Dispatcher({"lobwife.v1.TaskService": _Tasks()})
    m = d.methods[GET]
    resp = await d.unary(m, tasks_pb2.GetTaskRequest(task_id="T9"), ctx(GET))
    assert resp.task.task_id == "T9" and not d._checks_auth


def test_off_has_no_enforcer(tokens: LobwifeTokens) -> None:
    with pytest.raises(ValueError):
        Enforcer(Mode.OFF, Authenticator(tokens), MemoryDirectory())


async def test_the_denial_codes_match_the_http_statuses(tokens: LobwifeTokens) -> None:
    from lobwife_server.core.errors import HTTP_STATUS

    assert HTTP_STATUS[grpc.StatusCode.UNAUTHENTICATED] == 401
    assert HTTP_STATUS[grpc.StatusCode.PERMISSION_DENIED] == 403
