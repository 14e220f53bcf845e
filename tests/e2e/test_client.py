"""The typed clients (lobwife.client) against a real gRPC server.

The first half runs the clients against a small in-process grpc.aio TaskService
(``FakeServer``) that records what it received and fails on request, so request
building, metadata, deadlines, gRPC's retry policy and error conversion are tested
over a real channel with real grpc errors. The second half runs them end to end
against the real lobwife server (the ``server`` fixture: a subprocess on a free port).
"""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2, duration_pb2, message, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from lobwife.client import (
    LOBWIFE_SERVICES,
    AsyncClient,
    Client,
    FieldViolation,
    LobwifeError,
    _create_job_request,
    _update_job_request,
    channel_options,
    estimate_minutes,
    parse_enum,
    parse_status,
    service_config,
    status_name,
    to_duration,
    to_timestamp,
)
from lobwife.v1 import jobs_pb2, tasks_pb2, tasks_pb2_grpc
from tests.conftest import ServerProcess, free_port, start_server

S = tasks_pb2.TaskStatus

# --- a small TaskService to talk to -----------------------------------------------------


def rich_status(
    code: grpc.StatusCode, msg: str, violations: Sequence[tuple[str, str]] = (), reason: str = ""
) -> grpc.Status:
    status = status_pb2.Status(code=code.value[0], message=msg)
    if violations:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
                ]
            )
        )
        status.details.append(detail)
    if reason:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="lobwife"))
        status.details.append(detail)
    return rpc_status.to_status(status)


def fake_task(n: int, **kw: Any) -> tasks_pb2.Task:
    fields: dict[str, Any] = {
        "id": n,
        "task_id": f"T{n}",
        "name": f"task {n}",
        "type": "swe",
        "priority": "normal",
        "status": S.TASK_STATUS_QUEUED,
        "created_at": timestamp_pb2.Timestamp(seconds=1_700_000_000 + n * 60),
    }
    return tasks_pb2.Task(**(fields | kw))


class FakeTasks(tasks_pb2_grpc.TaskServiceServicer):
    """Answers every TaskService RPC; some inputs fail on purpose (see each method)."""

    TASKS = [fake_task(n) for n in range(5, 0, -1)]  # newest first, as the real server lists
    EVENTS = [tasks_pb2.TaskEvent(id=n, task_id=1, event_type=f"e{n}", actor="me") for n in range(3, 0, -1)]

    def __init__(self) -> None:
        self.calls: list[tuple[str, message.Message, dict[str, str]]] = []
        self.attempts: Counter[str] = Counter()
        self.watch_cancelled = threading.Event()

    def _record(self, name: str, request: message.Message, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        md = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        self.calls.append((name, request, md))

    def last(self, name: str) -> tuple[Any, dict[str, str]]:
        for call_name, request, md in reversed(self.calls):
            if call_name == name:
                return request, md
        raise AssertionError(f"no {name} call")

    async def CreateTask(self, request: Any, context: Any) -> tasks_pb2.CreateTaskResponse:
        self._record("CreateTask", request, context)
        if not request.name.strip():
            await context.abort_with_status(
                rich_status(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "name: must not be blank",
                    [("name", "must not be blank")],
                    reason="BLANK_NAME",
                )
            )
        task = fake_task(7, repos=request.repos, status=request.status or S.TASK_STATUS_QUEUED)
        task.name = request.name
        return tasks_pb2.CreateTaskResponse(task=task)

    async def GetTask(self, request: Any, context: Any) -> tasks_pb2.GetTaskResponse:
        """``T9``: NOT_FOUND (no details); ``slow``: answers after 1 s; ``flaky:N:tag``:
        UNAVAILABLE for the first N attempts of that tag."""
        self._record("GetTask", request, context)
        ref = request.task_id
        self.attempts[ref] += 1
        if ref == "T9":
            await context.abort(grpc.StatusCode.NOT_FOUND, "Task T9 not found")
        if ref == "slow":
            await asyncio.sleep(1)
        if ref.startswith("flaky:") and self.attempts[ref] <= int(ref.split(":")[1]):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        return tasks_pb2.GetTaskResponse(task=fake_task(1))

    async def ListTasks(self, request: Any, context: Any) -> tasks_pb2.ListTasksResponse:
        self._record("ListTasks", request, context)
        start = int(request.page_token or 0)
        end = start + (request.page_size or 100)
        more = end < len(self.TASKS)
        return tasks_pb2.ListTasksResponse(tasks=self.TASKS[start:end], next_page_token=str(end) if more else "")

    async def UpdateTask(self, request: Any, context: Any) -> tasks_pb2.UpdateTaskResponse:
        self._record("UpdateTask", request, context)
        return tasks_pb2.UpdateTaskResponse(
            id=1, task_id="T1", updated=list(request.update_mask.paths), task=fake_task(1)
        )

    async def CancelTask(self, request: Any, context: Any) -> tasks_pb2.CancelTaskResponse:
        """``T2`` is already cancelled: FAILED_PRECONDITION with an ErrorInfo reason."""
        self._record("CancelTask", request, context)
        if request.task_id == "T2":
            await context.abort_with_status(
                rich_status(
                    grpc.StatusCode.FAILED_PRECONDITION, "Task T2 is already cancelled", reason="ALREADY_CANCELLED"
                )
            )
        task = fake_task(1, status=S.TASK_STATUS_CANCELLED)
        return tasks_pb2.CancelTaskResponse(id=1, task_id="T1", status=S.TASK_STATUS_CANCELLED, task=task)

    async def CreateTaskEvent(self, request: Any, context: Any) -> tasks_pb2.CreateTaskEventResponse:
        self._record("CreateTaskEvent", request, context)
        event = tasks_pb2.TaskEvent(id=100, task_id=1, event_type=request.event_type, detail=request.detail)
        return tasks_pb2.CreateTaskEventResponse(status="logged", task_id="T1", event=event)

    async def ListTaskEvents(self, request: Any, context: Any) -> tasks_pb2.ListTaskEventsResponse:
        self._record("ListTaskEvents", request, context)
        start = int(request.page_token or 0)
        end = start + (request.page_size or 100)
        more = end < len(self.EVENTS)
        return tasks_pb2.ListTaskEventsResponse(events=self.EVENTS[start:end], next_page_token=str(end) if more else "")

    async def RegisterTaskRepos(self, request: Any, context: Any) -> tasks_pb2.RegisterTaskReposResponse:
        self._record("RegisterTaskRepos", request, context)
        task = fake_task(1, broker_repos=request.repos, broker_status="active")
        return tasks_pb2.RegisterTaskReposResponse(status="registered", task_id="T1", task=task)

    async def WatchTasks(self, request: Any, context: Any) -> AsyncIterator[tasks_pb2.WatchTasksResponse]:
        """Three changes after the cursor, then silence until the client goes away."""
        self._record("WatchTasks", request, context)
        try:
            for cursor in range(request.after_cursor + 1, request.after_cursor + 4):
                event = tasks_pb2.TaskEvent(id=cursor, task_id=1, event_type="updated", detail=f"change {cursor}")
                yield tasks_pb2.WatchTasksResponse(cursor=cursor, event=event, task=fake_task(1))
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.watch_cancelled.set()
            raise


class FakeServer:
    """FakeTasks on a grpc.aio server in its own thread and event loop, so that both the
    blocking client and the asyncio client (on the test's loop) can call it."""

    def __init__(self, port: int = 0) -> None:
        self.servicer = FakeTasks()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-lobwife", daemon=True)
        self._thread.start()
        self.port: int = asyncio.run_coroutine_threadsafe(self._start(port), self._loop).result(10)
        self.addr = f"127.0.0.1:{self.port}"

    async def _start(self, port: int) -> int:
        self._server = grpc.aio.server()
        tasks_pb2_grpc.add_TaskServiceServicer_to_server(self.servicer, self._server)
        bound = self._server.add_insecure_port(f"127.0.0.1:{port}")
        await self._server.start()
        return bound

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeServer]:
    srv = FakeServer()
    yield srv
    srv.stop()


@pytest.fixture
def client(fake: FakeServer) -> Iterator[Client]:
    with Client(fake.addr, timeout=5, token="s3cret") as c:
        yield c


# --- configuration ----------------------------------------------------------------------


def test_service_config_retries_unavailable_for_every_lobwife_service() -> None:
    config = service_config()
    [method] = config["methodConfig"]
    assert {n["service"] for n in method["name"]} == set(LOBWIFE_SERVICES)
    assert {"lobwife.v1.TaskService", "lobwife.v1.JobService", "lobwife.v1.BrokerService"} <= set(LOBWIFE_SERVICES)
    assert method["retryPolicy"] == {
        "maxAttempts": 5,
        "initialBackoff": "0.5s",
        "maxBackoff": "5.0s",
        "backoffMultiplier": 2.0,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    assert service_config(1)["methodConfig"][0]["retryPolicy"]["maxAttempts"] == 2
    # gRPC rejects a retryPolicy with maxAttempts < 2, so no retries means no policy.
    assert "retryPolicy" not in service_config(0)["methodConfig"][0]
    for bad in (-1, 5):
        with pytest.raises(ValueError, match="retries"):
            service_config(bad)


def test_channel_options_carry_the_service_config_as_json() -> None:
    options = dict(channel_options(2))
    assert json.loads(str(options["grpc.service_config"])) == service_config(2)
    assert options["grpc.enable_retries"] == 1
    assert int(options["grpc.max_reconnect_backoff_ms"]) <= 2000


def test_addr_defaults_to_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOBWIFE_ADDR", "10.1.2.3:6000")
    with Client() as c:
        assert c.addr == "10.1.2.3:6000"
    with Client("host:1") as c:
        assert c.addr == "host:1"
    monkeypatch.delenv("LOBWIFE_ADDR")
    with Client() as c:
        assert c.addr == "127.0.0.1:50051"
    with pytest.raises(ValueError, match="timeout"):
        Client(timeout=0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("active", S.TASK_STATUS_ACTIVE),
        ("ACTIVE", S.TASK_STATUS_ACTIVE),
        ("task_status_blocked", S.TASK_STATUS_BLOCKED),
        (" Completed ", S.TASK_STATUS_COMPLETED),
        (S.TASK_STATUS_FAILED, S.TASK_STATUS_FAILED),
        (1, S.TASK_STATUS_QUEUED),
    ],
)
def test_parse_status(value: int | str, expected: int) -> None:
    assert parse_status(value) == expected


@pytest.mark.parametrize("value", ["actve", "", "unspecified", 99, -1])
def test_parse_status_rejects_unknown_names(value: int | str) -> None:
    with pytest.raises(ValueError, match="status"):
        parse_status(value)


def test_status_name() -> None:
    assert [status_name(v) for v in (1, 2, 5, 42)] == ["queued", "active", "cancelled", "42"]


def test_to_timestamp_takes_aware_and_naive_datetimes() -> None:
    aware = datetime(2025, 1, 31, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert to_timestamp(aware).ToJsonString() == "2025-01-31T10:00:00Z"
    assert to_timestamp(datetime(2025, 1, 31, 12, 0)).ToJsonString() == "2025-01-31T12:00:00Z"  # naive = UTC
    ts = timestamp_pb2.Timestamp(seconds=5)
    assert to_timestamp(ts) is ts


# --- calls over a real channel -----------------------------------------------------------


def test_create_sends_fields_a_fresh_request_id_and_the_token(client: Client, fake: FakeServer) -> None:
    task = client.create_task(
        "write docs",
        repos=["o/r"],
        status="active",
        estimate_minutes=0,
        requires_qa=False,
        model="opus",
        actor="lobboss",
    )
    assert isinstance(task, tasks_pb2.Task)
    assert (task.id, task.name, list(task.repos), task.status) == (7, "write docs", ["o/r"], S.TASK_STATUS_ACTIVE)
    req, md = fake.servicer.last("CreateTask")
    assert uuid.UUID(req.request_id).version == 4
    assert md["authorization"] == "Bearer s3cret"
    assert md["user-agent"].startswith("lobwife-python/")
    # Given values are sent even when falsy; the ones not given stay unset.
    assert req.HasField("estimate_minutes_exact") and req.estimate_minutes_exact == 0
    assert not req.HasField("estimate_minutes")  # the deprecated int32 is not sent
    assert req.requires_qa is False
    assert (req.model, req.actor) == ("opus", "lobboss")
    for unset in ("type", "priority", "assigned_to", "slug", "workflow", "discord_thread_id"):
        assert not req.HasField(unset), unset

    client.create_task("again")
    req2, _ = fake.servicer.last("CreateTask")
    assert req2.request_id != req.request_id
    client.create_task("mine", request_id="req-1")
    assert fake.servicer.last("CreateTask")[0].request_id == "req-1"


def test_rich_error_becomes_lobwife_error_with_violations(client: Client) -> None:
    with pytest.raises(LobwifeError) as info:
        client.create_task("   ")
    err = info.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.message == "name: must not be blank"
    assert err.field_violations == (FieldViolation("name", "must not be blank"),)
    assert err.reason == "BLANK_NAME"
    assert str(err) == "INVALID_ARGUMENT: name: must not be blank"
    assert isinstance(err.__cause__, grpc.RpcError)


def test_plain_error_has_no_violations(client: Client) -> None:
    with pytest.raises(LobwifeError) as info:
        client.get_task("T9")
    assert (info.value.code, info.value.message, info.value.field_violations) == (
        grpc.StatusCode.NOT_FOUND,
        "Task T9 not found",
        (),
    )
    assert str(info.value) == "NOT_FOUND: Task T9 not found"


def test_failed_precondition_carries_the_reason(client: Client) -> None:
    with pytest.raises(LobwifeError) as info:
        client.cancel_task("T2")
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION and info.value.reason == "ALREADY_CANCELLED"


def test_errors_pickle() -> None:
    err = LobwifeError(grpc.StatusCode.INVALID_ARGUMENT, "bad", [("name", "blank")], reason="R")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.code, copy.message, copy.field_violations, copy.reason, str(copy)) == (
        err.code,
        err.message,
        err.field_violations,
        err.reason,
        str(err),
    )


def test_secure_client_does_not_fall_back_to_plaintext(fake: FakeServer) -> None:
    with Client(fake.addr, secure=True, retries=0, timeout=5) as c, pytest.raises(LobwifeError) as info:
        c.get_task(1)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_mismatched_details_are_still_read() -> None:
    """A status-details trailer that disagrees with the status line (a proxy rewrote the
    message) makes grpc_status refuse it; the violations are read anyway."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[{"field": "repos", "description": "empty"}]))
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="original", details=[detail])
    trailers = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    error = grpc.aio.AioRpcError(grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.Metadata(), trailers, "rewritten", None)
    err = LobwifeError.from_rpc_error(error)
    assert err.field_violations == (FieldViolation("repos", "empty"),)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT


def test_get_accepts_numbers_and_display_ids(client: Client, fake: FakeServer) -> None:
    assert client.get_task(1).task_id == "T1"
    assert fake.servicer.last("GetTask")[0].task_id == "1"
    client.get_task("T1")
    assert fake.servicer.last("GetTask")[0].task_id == "T1"


def test_deadline_default_and_per_call_override(fake: FakeServer) -> None:
    with Client(fake.addr, timeout=0.3) as c:
        started = time.monotonic()
        with pytest.raises(LobwifeError) as info:
            c.get_task("slow")
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 0.9
        assert c.get_task("slow", timeout=5).id == 1


def test_server_unavailable_is_retried_by_the_channel(fake: FakeServer) -> None:
    with Client(fake.addr, timeout=10) as c:
        assert c.get_task("flaky:2:a").id == 1
    assert fake.servicer.attempts["flaky:2:a"] == 3


def test_retries_are_bounded(fake: FakeServer) -> None:
    with Client(fake.addr, timeout=10, retries=1) as c, pytest.raises(LobwifeError) as info:
        c.get_task("flaky:3:b")
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and info.value.message == "draining"
    assert fake.servicer.attempts["flaky:3:b"] == 2
    with Client(fake.addr, timeout=10, retries=0) as c, pytest.raises(LobwifeError):
        c.get_task("flaky:1:c")
    assert fake.servicer.attempts["flaky:1:c"] == 1


def test_call_started_while_server_is_down_succeeds_once_it_is_up() -> None:
    port = free_port()
    result: dict[str, Any] = {}

    def call() -> None:
        with Client(f"127.0.0.1:{port}", timeout=10) as c:
            try:
                result["task"] = c.get_task(1)
            except LobwifeError as e:
                result["error"] = e

    started = time.monotonic()
    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(1.0)  # the first attempts find nothing listening
    assert caller.is_alive(), result
    srv = FakeServer(port)
    try:
        caller.join(15)
        assert "error" not in result, result["error"]
        assert result["task"].id == 1
        assert srv.servicer.attempts["1"] == 1
        # The retry schedule (0.5 s, 1 s, 2 s, ...) and a 200 ms reconnect backoff put
        # the successful attempt within ~2.5 s of the server coming up.
        assert time.monotonic() - started < 6
    finally:
        srv.stop()


def test_call_gives_up_after_the_retries(fake: FakeServer) -> None:
    port = free_port()
    started = time.monotonic()
    with Client(f"127.0.0.1:{port}", timeout=20, retries=2) as c, pytest.raises(LobwifeError) as info:
        c.get_task(1)
    elapsed = time.monotonic() - started
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    # Two retries: backoffs of about 0.5 s and 1 s (gRPC jitters them by ±20 %).
    assert 1.0 < elapsed < 3.0, elapsed


def test_list_and_iter_tasks(client: Client, fake: FakeServer) -> None:
    after = datetime(2025, 1, 1, tzinfo=UTC)
    page = client.list_tasks(
        status="queued",
        type="swe",
        assigned_to="w1",
        created_after=after,
        created_before=after + timedelta(days=1),
        page_size=2,
    )
    assert isinstance(page, tasks_pb2.ListTasksResponse)
    assert [t.id for t in page.tasks] == [5, 4] and page.next_page_token == "2"
    req, _ = fake.servicer.last("ListTasks")
    assert (req.status, req.type, req.assigned_to, req.page_size) == (S.TASK_STATUS_QUEUED, "swe", "w1", 2)
    assert req.created_after.ToJsonString() == "2025-01-01T00:00:00Z"
    assert req.created_before.ToJsonString() == "2025-01-02T00:00:00Z"
    assert [t.id for t in client.iter_tasks(page_size=2)] == [5, 4, 3, 2, 1]
    tokens = [request.page_token for _, request, _ in fake.servicer.calls[-3:]]  # type: ignore[attr-defined]
    assert tokens == ["", "2", "4"]


def test_update_mask_names_exactly_the_given_fields(client: Client, fake: FakeServer) -> None:
    resp = client.update_task(
        "T1", status="active", assigned_to=None, repos=[], actor="me", completed_at=datetime(2025, 2, 3, tzinfo=UTC)
    )
    assert isinstance(resp, tasks_pb2.UpdateTaskResponse)
    req, _ = fake.servicer.last("UpdateTask")
    assert list(req.update_mask.paths) == ["status", "assigned_to", "repos", "completed_at"]
    assert req.status == S.TASK_STATUS_ACTIVE and req.HasField("status")
    assert not req.HasField("assigned_to")  # masked and unset: cleared
    assert list(req.repos) == [] and req.actor == "me"
    assert req.completed_at.ToJsonString() == "2025-02-03T00:00:00Z"
    assert list(resp.updated) == ["status", "assigned_to", "repos", "completed_at"]

    client.update_task(1, requires_qa=False, estimate_minutes=0)
    req, _ = fake.servicer.last("UpdateTask")
    assert list(req.update_mask.paths) == ["requires_qa", "estimate_minutes_exact"]
    assert req.HasField("requires_qa") and req.HasField("estimate_minutes_exact")
    assert req.estimate_minutes_exact == 0 and not req.HasField("estimate_minutes")
    client.update_task(1, estimate_minutes=12.5)
    req, _ = fake.servicer.last("UpdateTask")
    assert req.estimate_minutes_exact == 12.5
    client.update_task(1, estimate_minutes=None)  # cleared: masked and unset
    req, _ = fake.servicer.last("UpdateTask")
    assert list(req.update_mask.paths) == ["estimate_minutes_exact"] and not req.HasField("estimate_minutes_exact")
    with pytest.raises(TypeError, match="estimate_minutes"):
        client.update_task(1, estimate_minutes="soon")  # type: ignore[typeddict-item]


def test_update_rejects_unknown_or_no_fields(client: Client) -> None:
    with pytest.raises(TypeError, match="colour"):
        client.update_task(1, colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="at least one"):
        client.update_task(1)
    with pytest.raises(TypeError, match="repos"):
        client.update_task(1, repos="o/r")


def test_cancel_events_register(client: Client, fake: FakeServer) -> None:
    resp = client.cancel_task(1, actor="me", reason="dup")
    assert resp.status == S.TASK_STATUS_CANCELLED
    req, _ = fake.servicer.last("CancelTask")
    assert (req.task_id, req.actor, req.reason) == ("1", "me", "dup")

    event = client.add_event("T1", "note", detail="hi", actor="me")
    assert isinstance(event, tasks_pb2.TaskEvent) and (event.id, event.event_type) == (100, "note")
    req, _ = fake.servicer.last("CreateTaskEvent")
    assert (req.task_id, req.event_type, req.detail, req.actor) == ("T1", "note", "hi", "me")

    page = client.list_events(1, page_size=2)
    assert [e.id for e in page.events] == [3, 2] and page.next_page_token
    assert [e.id for e in client.iter_events(1, page_size=2)] == [3, 2, 1]

    task = client.register_repos(1, ["o/a", "o/b"], lobster_type="swe", actor="me")
    assert list(task.broker_repos) == ["o/a", "o/b"]
    req, _ = fake.servicer.last("RegisterTaskRepos")
    assert (req.lobster_type, req.actor) == ("swe", "me")


def test_watch_yields_changes_and_cancels_on_close(client: Client, fake: FakeServer) -> None:
    fake.servicer.watch_cancelled.clear()
    stream = client.watch_tasks(after_cursor=10, task_id="T1")
    got = [next(stream).cursor for _ in range(3)]
    assert got == [11, 12, 13]
    req, md = fake.servicer.last("WatchTasks")
    assert (req.after_cursor, req.task_id, md["authorization"]) == (10, "T1", "Bearer s3cret")
    stream.close()
    assert fake.servicer.watch_cancelled.wait(5)


# --- the asyncio client -----------------------------------------------------------------


async def test_async_client_calls(fake: FakeServer) -> None:
    async with AsyncClient(fake.addr, timeout=5, token="tok") as c:
        task = await c.create_task("async one", status=S.TASK_STATUS_BLOCKED)
        assert task.status == S.TASK_STATUS_BLOCKED
        req, md = fake.servicer.last("CreateTask")
        assert uuid.UUID(req.request_id) and md["authorization"] == "Bearer tok"

        assert (await c.get_task("T1")).id == 1
        page = await c.list_tasks(page_size=3)
        assert [t.id for t in page.tasks] == [5, 4, 3]
        assert [t.id async for t in c.iter_tasks(page_size=2)] == [5, 4, 3, 2, 1]

        resp = await c.update_task(1, assigned_to=None, name="renamed")
        assert list(resp.updated) == ["assigned_to", "name"]
        assert (await c.cancel_task(1)).task_id == "T1"
        assert (await c.add_event(1, "note")).id == 100
        assert [e.id for e in (await c.list_events(1)).events] == [3, 2, 1]
        assert [e.id async for e in c.iter_events(1, page_size=1)] == [3, 2, 1]
        assert list((await c.register_repos(1, ["o/r"])).broker_repos) == ["o/r"]


async def test_async_client_errors(fake: FakeServer) -> None:
    async with AsyncClient(fake.addr, timeout=5) as c:
        with pytest.raises(LobwifeError) as info:
            await c.create_task("")
        assert info.value.field_violations == (FieldViolation("name", "must not be blank"),)
        assert info.value.reason == "BLANK_NAME"
        with pytest.raises(LobwifeError) as info:
            await c.get_task("T9")
        assert str(info.value) == "NOT_FOUND: Task T9 not found"
        with pytest.raises(LobwifeError) as info:
            await c.get_task("slow", timeout=0.2)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert (await c.get_task("flaky:2:async")).id == 1
        assert fake.servicer.attempts["flaky:2:async"] == 3


async def test_async_watch_cancels_when_closed(fake: FakeServer) -> None:
    fake.servicer.watch_cancelled.clear()
    async with AsyncClient(fake.addr) as c:
        stream = c.watch_tasks(after_cursor=0)
        got = [(await anext(stream)).cursor for _ in range(3)]
        assert got == [1, 2, 3]
        await stream.aclose()
        assert await asyncio.to_thread(fake.servicer.watch_cancelled.wait, 5)


# --- end to end: the real server ----------------------------------------------------------


@pytest.fixture
def lw(server: ServerProcess) -> Iterator[Client]:
    with Client(server.grpc_addr, timeout=10) as c:
        yield c


def test_e2e_create_get_list_pages(lw: Client) -> None:
    created = [lw.create_task(f"e2e {i}", repos=["o/r"], actor="test", estimate_minutes=i) for i in range(5)]
    assert [t.task_id for t in created] == ["T1", "T2", "T3", "T4", "T5"]
    assert created[0].status == S.TASK_STATUS_QUEUED and created[0].created_by == "test"
    assert lw.get_task("T3") == created[2] and lw.get_task(3) == created[2]

    page = lw.list_tasks(page_size=2)
    assert [t.id for t in page.tasks] == [5, 4] and page.next_page_token
    page2 = lw.list_tasks(page_size=2, page_token=page.next_page_token)
    assert [t.id for t in page2.tasks] == [3, 2]
    assert [t.id for t in lw.iter_tasks(page_size=2)] == [5, 4, 3, 2, 1]
    assert [t.id for t in lw.iter_tasks(status="queued", page_size=3)] == [5, 4, 3, 2, 1]
    assert list(lw.iter_tasks(status="active")) == []


def test_e2e_the_estimate_keeps_fractions(lw: Client) -> None:
    task = lw.create_task("estimate", estimate_minutes=12.5)
    assert estimate_minutes(task) == 12.5 and task.estimate_minutes_exact == 12.5
    assert task.estimate_minutes == 12  # the deprecated field: whole minutes, for older clients
    resp = lw.update_task(task.id, estimate_minutes=0.25)
    assert estimate_minutes(resp.task) == 0.25 == estimate_minutes(lw.get_task(task.id))
    lw.update_task(task.id, estimate_minutes=None)
    assert estimate_minutes(lw.get_task(task.id)) is None
    with pytest.raises(LobwifeError) as info:
        lw.update_task(task.id, estimate_minutes=-1)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.value.field_violations] == ["estimate_minutes"]  # the name callers use


def test_e2e_create_is_idempotent_by_request_id(lw: Client) -> None:
    first = lw.create_task("once", request_id="same-id")
    again = lw.create_task("once", request_id="same-id")
    assert again.id == first.id
    assert [t.id for t in lw.iter_tasks()] == [first.id]


def test_e2e_update_mask_sets_and_clears(lw: Client) -> None:
    task = lw.create_task("to update", assigned_to="worker-1", model="opus", repos=["o/a"])
    assert task.assigned_to == "worker-1"
    resp = lw.update_task(task.id, status="active", assigned_to=None, actor="me")
    assert set(resp.updated) == {"status", "assigned_to"}
    assert resp.task.status == S.TASK_STATUS_ACTIVE
    assert not resp.task.HasField("assigned_to")
    assert resp.task.model == "opus" and list(resp.task.repos) == ["o/a"]  # not in the mask: untouched
    assert resp.task.HasField("assigned_at")  # stamped on the move to active
    got = lw.get_task(task.id)
    assert not got.HasField("assigned_to") and got.status == S.TASK_STATUS_ACTIVE

    resp = lw.update_task(task.task_id, repos=[], model=None)
    assert list(resp.task.repos) == [] and not resp.task.HasField("model")


def test_e2e_errors(lw: Client) -> None:
    with pytest.raises(LobwifeError) as info:
        lw.get_task("T424242")
    assert str(info.value) == "NOT_FOUND: Task T424242 not found"
    with pytest.raises(LobwifeError) as info:
        lw.create_task("  ")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.value.field_violations] == ["name"]


def test_e2e_cancel_twice_is_failed_precondition(lw: Client) -> None:
    task = lw.create_task("to cancel")
    resp = lw.cancel_task(task.id, actor="me", reason="duplicate")
    assert resp.status == S.TASK_STATUS_CANCELLED and resp.task.status == S.TASK_STATUS_CANCELLED
    with pytest.raises(LobwifeError) as info:
        lw.cancel_task(task.id)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    events = list(lw.iter_events(task.id))
    cancelled = [e for e in events if e.event_type == "cancelled"]
    assert len(cancelled) == 1 and cancelled[0].detail == "duplicate" and cancelled[0].actor == "me"


def test_e2e_events_and_register(lw: Client) -> None:
    task = lw.create_task("with events", actor="boss")
    for i in range(3):
        event = lw.add_event(task.id, "progress", detail=f"step {i}", actor="lobster")
        assert event.task_id == task.id and event.event_type == "progress"
    page = lw.list_events(task.task_id, page_size=2)
    assert [e.detail for e in page.events] == ["step 2", "step 1"] and page.next_page_token
    everything = list(lw.iter_events(task.id, page_size=2))
    assert [e.event_type for e in everything] == ["progress"] * 3 + ["created"]
    registered = lw.register_repos(task.id, ["o/a", "o/b"], lobster_type="swe")
    assert list(registered.broker_repos) == ["o/a", "o/b"]
    assert lw.iter_events(task.id).__next__().event_type == "broker_registered"


def test_e2e_watch_resumes_from_a_cursor(lw: Client) -> None:
    task = lw.create_task("watched")
    [created] = list(lw.iter_events(task.id))
    lw.update_task(task.id, status="active")
    lw.add_event(task.id, "note", detail="one")

    stream = lw.watch_tasks(after_cursor=created.id, timeout=20)
    first = next(stream)
    assert first.event.event_type == "updated" and first.task.status == S.TASK_STATUS_ACTIVE
    stream.close()

    # Reconnect after the first change: the next one arrives, nothing is repeated.
    lw.add_event(task.id, "note", detail="two")
    stream = lw.watch_tasks(after_cursor=first.cursor, task_id=task.task_id, timeout=20)
    rest = [next(stream) for _ in range(2)]
    stream.close()
    assert [c.event.detail for c in rest] == ["one", "two"]
    assert all(c.cursor > first.cursor for c in rest)
    assert rest[0].cursor < rest[1].cursor


async def test_e2e_async_client(server: ServerProcess) -> None:
    async with AsyncClient(server.grpc_addr, timeout=10) as c:
        tasks = [await c.create_task(f"async {i}") for i in range(3)]
        assert (await c.get_task(tasks[0].task_id)).name == "async 0"
        assert [t.id async for t in c.iter_tasks(page_size=2)] == [3, 2, 1]
        resp = await c.update_task(tasks[0].id, assigned_to="w", status="active")
        assert resp.task.assigned_to == "w"
        resp = await c.update_task(tasks[0].id, assigned_to=None)
        assert not resp.task.HasField("assigned_to")
        await c.cancel_task(tasks[1].id)
        with pytest.raises(LobwifeError) as info:
            await c.cancel_task(tasks[1].id)
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION

        watch = c.watch_tasks(from_now=True, task_id=tasks[2].id, timeout=20)
        # From now on: the first message is the position alone, so nothing before it is shown.
        position = await asyncio.wait_for(anext(watch), 5)
        assert not position.HasField("event") and position.cursor > 0
        await c.add_event(tasks[2].id, "ping")
        got = await asyncio.wait_for(anext(watch), 5)
        assert got.event.event_type == "ping" and got.task.id == tasks[2].id
        assert got.cursor > position.cursor
        await c.add_event(tasks[2].id, "pong")
        async with asyncio.timeout(5):
            async for nxt in watch:
                assert nxt.cursor > got.cursor
                if nxt.event.event_type == "pong":
                    break
        await watch.aclose()


def test_e2e_retry_covers_a_server_starting_up(tmp_path: Path) -> None:
    """The client is called while nothing listens; the server starts within the retry
    window (about 7.5 s with the defaults) and the call succeeds."""
    port = free_port()
    result: dict[str, Any] = {}

    def call() -> None:
        with Client(f"127.0.0.1:{port}", timeout=15) as c:
            try:
                result["task"] = c.create_task("made while starting", request_id="boot-1")
            except LobwifeError as e:
                result["error"] = e

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.3)
    assert caller.is_alive()
    # start_server picks its own ports; the later --grpc-port wins, so the server
    # comes up where the client is already calling.
    srv = start_server(tmp_path / "state", "--grpc-port", str(port), wait=False)
    try:
        caller.join(20)
        assert not caller.is_alive()
        assert "error" not in result, f"{result['error']}\n{srv.log()}"
        assert result["task"].task_id == "T1"
        with Client(f"127.0.0.1:{port}") as c:
            assert [t.name for t in c.iter_tasks()] == ["made while starting"]
    finally:
        srv.terminate()


# --- cron jobs: request building --------------------------------------------------------

J = jobs_pb2


def test_parse_enum_takes_numbers_short_and_full_names() -> None:
    concurrency = J.ConcurrencyPolicy.DESCRIPTOR
    assert parse_enum(concurrency, "forbid", "concurrency") == J.CONCURRENCY_POLICY_FORBID
    assert parse_enum(concurrency, " Replace ", "concurrency") == J.CONCURRENCY_POLICY_REPLACE
    assert parse_enum(concurrency, "CONCURRENCY_POLICY_ALLOW", "concurrency") == J.CONCURRENCY_POLICY_ALLOW
    assert parse_enum(J.CatchUpPolicy.DESCRIPTOR, 3, "catch_up") == J.CATCH_UP_POLICY_ALL
    with pytest.raises(ValueError, match=r"concurrency: unknown value 'sometimes' \(one of forbid, allow, replace\)"):
        parse_enum(concurrency, "sometimes", "concurrency")
    with pytest.raises(ValueError, match="catch_up"):
        parse_enum(J.CatchUpPolicy.DESCRIPTOR, "unspecified", "catch_up")
    with pytest.raises(ValueError, match="9"):
        parse_enum(concurrency, 9, "concurrency")
    with pytest.raises(TypeError):
        parse_enum(concurrency, True, "concurrency")


def test_to_duration() -> None:
    assert to_duration(90).ToTimedelta() == timedelta(seconds=90)
    assert to_duration(0.25).ToNanoseconds() == 250_000_000
    assert to_duration(timedelta(minutes=2)).seconds == 120
    d = duration_pb2.Duration(seconds=5)
    assert to_duration(d) is d
    with pytest.raises(TypeError, match="run_timeout"):
        to_duration("10s", "run_timeout")  # type: ignore[arg-type]


def test_create_job_request_from_fields() -> None:
    req = _create_job_request(
        "nightly",
        None,
        None,
        {
            "command": ["backup.sh", "--all"],
            "cron": "0 3 * * *",
            "time_zone": "Europe/Berlin",
            "run_timeout": 600,
            "concurrency": "replace",
            "catch_up": "all",
            "catch_up_window": timedelta(hours=2),
            "retry": {"max_retries": 2, "initial_backoff": 5, "multiplier": 3.0},
            "env": {"LEVEL": "info"},
            "run_at": None,  # None in a create: left unset
        },
    )
    job = req.job
    assert uuid.UUID(req.request_id).version == 4
    assert (job.name, list(job.command), job.cron, job.time_zone) == (
        "nightly",
        ["backup.sh", "--all"],
        "0 3 * * *",
        "Europe/Berlin",
    )
    assert job.enabled is True  # the default, as in the jobs file
    assert job.timeout.seconds == 600 and job.catch_up_window.seconds == 7200
    assert (job.concurrency, job.catch_up) == (J.CONCURRENCY_POLICY_REPLACE, J.CATCH_UP_POLICY_ALL)
    assert (job.retry.max_retries, job.retry.initial_backoff.seconds, job.retry.multiplier) == (2, 5, 3.0)
    assert dict(job.env) == {"LEVEL": "info"} and job.WhichOneof("trigger") == "cron"
    assert _create_job_request(None, "x", "rid", {"enabled": False, "interval": 30}).job.enabled is False
    assert _create_job_request(None, "x", "rid", {}).request_id == "rid"


def test_create_job_request_from_a_message_is_sent_as_is() -> None:
    message = J.Job(name="m", command=["true"], cron="* * * * *")
    assert _create_job_request(message, None, None, {}).job == message
    with pytest.raises(TypeError, match="not both"):
        _create_job_request(message, None, None, {"cron": "* * * * *"})


@pytest.mark.parametrize(
    ("job", "name", "fields", "error", "match"),
    [
        (None, None, {}, ValueError, "name is required"),
        ("a", "b", {}, TypeError, "given twice"),
        ("a", None, {"colour": "red"}, TypeError, "unexpected field.*colour"),
        ("a", None, {"cron": "* * * * *", "interval": 5}, ValueError, "only one schedule, not cron and interval"),
        ("a", None, {"command": "echo hi"}, TypeError, "command must be a list"),
        ("a", None, {"concurrency": "nope"}, ValueError, "concurrency: unknown value"),
        ("a", None, {"retry": {"tries": 2}}, TypeError, "retry: unknown field.*tries"),
    ],
)
def test_create_job_request_rejects_bad_arguments(
    job: str | None, name: str | None, fields: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        _create_job_request(job, name, None, fields)


def test_update_job_mask_names_exactly_the_given_fields() -> None:
    req = _update_job_request("nightly", None, {"description": "new", "working_dir": None, "run_timeout": 30})
    assert list(req.update_mask.paths) == ["description", "working_dir", "timeout"]
    assert req.job.name == "nightly" and req.job.description == "new" and req.job.timeout.seconds == 30
    assert not req.job.working_dir  # masked and unset: cleared
    assert not req.job.enabled  # not defaulted in an update: not in the mask either
    req = _update_job_request("n", None, {"enabled": False})
    assert list(req.update_mask.paths) == ["enabled"]

    message = J.Job(name="n", description="d", cron="0 * * * *")
    req = _update_job_request(message, ["description"], {})
    assert req.job == message and list(req.update_mask.paths) == ["description"]
    assert not _update_job_request(message, None, {}).HasField("update_mask")  # the server uses the set fields
    with pytest.raises(ValueError, match="at least one"):
        _update_job_request("n", None, {})
    with pytest.raises(TypeError, match="update_mask goes with a Job message"):
        _update_job_request("n", ["description"], {"description": "x"})
    with pytest.raises(TypeError, match="not both"):
        _update_job_request(message, None, {"description": "x"})


# --- cron jobs: end to end against the real server -----------------------------------------

JOBS_TOML = """
[jobs.hello]
description = "says two things"
command = ["sh", "-c", "echo one; sleep 0.5; echo two"]
schedule = "0 9 * * 1-5"
time_zone = "Europe/Berlin"

[jobs.tick]
command = ["sh", "-c", "echo tick"]
schedule = "* * * * * *"
"""


@pytest.fixture(scope="module")
def jobs_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("jobs")
    (root / "jobs.toml").write_text(JOBS_TOML)
    srv = start_server(root / "state", "--jobs", str(root / "jobs.toml"))
    yield srv
    if srv.proc.poll() is None:
        srv.terminate()


@pytest.fixture
def jw(jobs_srv: ServerProcess) -> Iterator[Client]:
    with Client(jobs_srv.grpc_addr, timeout=10) as c:
        yield c


def wait_run(lw: Client, name: str, run_id: int, timeout: float = 10) -> J.JobRun:
    """The run once it is over (polled: a bounded wait, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        run = lw.get_run(name, run_id)
        if run.status not in (J.RUN_STATUS_PENDING, J.RUN_STATUS_RUNNING) or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def test_e2e_jobs_list_get_status(jw: Client) -> None:
    names = [j.name for j in jw.iter_jobs()]
    assert names == sorted(names) and {"hello", "tick", "lobwife-backup"} <= set(names)
    page = jw.list_jobs(page_size=2)
    assert isinstance(page, J.ListJobsResponse) and len(page.jobs) == 2 and page.next_page_token
    assert [j.name for j in jw.iter_jobs(page_size=2)] == names

    hello = jw.get_job("hello", next_runs=3)
    assert isinstance(hello, J.Job)
    assert (hello.source, hello.time_zone, hello.schedule) == (J.JOB_SOURCE_FILE, "Europe/Berlin", "0 9 * * 1-5")
    assert len(hello.next_runs) == 3 and hello.next_runs[0] == hello.next_run
    assert len(jw.get_job("hello").next_runs) == 5  # the server's default preview

    status = jw.status()
    assert status.status == "ok" and status.jobs["hello"].schedule == "0 9 * * 1-5"
    with pytest.raises(LobwifeError) as info:
        jw.get_job("nope")
    assert str(info.value) == "NOT_FOUND: Unknown job: nope"
    with pytest.raises(LobwifeError) as info:
        jw.get_job("hello", next_runs=101)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.value.field_violations] == ["next_runs_count"]


def test_e2e_watch_runs_sees_state_changes_and_live_output(jw: Client) -> None:
    """A manual run of `echo one; sleep 0.5; echo two`: running, "one", "two", success."""
    stream = jw.watch_runs(include_output=True, timeout=20)
    try:
        # The watch only shows what happens after it is subscribed: `tick` (every
        # second) proves it is, before the run under test starts.
        assert next(stream).run.job_name == "tick"
        run = jw.trigger_job("hello")
        assert isinstance(run, J.JobRun)
        assert (run.job_name, run.trigger, run.attempt) == ("hello", J.RUN_TRIGGER_MANUAL, 1)
        # As read just after the trigger: the process may already have started.
        assert run.status in (J.RUN_STATUS_PENDING, J.RUN_STATUS_RUNNING)
        with pytest.raises(LobwifeError) as info:
            jw.trigger_job("hello")  # forbid: one run at a time
        assert str(info.value) == "FAILED_PRECONDITION: Job hello is already running"
        assert info.value.reason == "JOB_RUNNING"
        seen: list[tuple[int, str]] = []
        for msg in stream:
            if msg.run.job_name != "hello":
                continue
            assert msg.run.run_id == run.run_id
            seen.append((msg.run.status, msg.output_chunk))
            if msg.run.status == J.RUN_STATUS_SUCCESS:
                assert msg.run.exit_code == 0 and msg.run.duration >= 0.5
                final = msg.run
                break
    finally:
        stream.close()
    assert seen == [
        (J.RUN_STATUS_RUNNING, ""),
        (J.RUN_STATUS_RUNNING, "one\n"),
        (J.RUN_STATUS_RUNNING, "two\n"),
        (J.RUN_STATUS_SUCCESS, ""),
    ]
    stored = jw.get_run("hello", run.run_id)
    assert stored.output == "one\ntwo\n" and stored.status == J.RUN_STATUS_SUCCESS
    assert jw.list_runs("hello").runs[0] == stored
    # The final message carries the run's times, close to the recorded ones, and a duration without
    # float noise.
    assert final.HasField("started_at") and final.HasField("finished_at")
    assert abs(final.finished_at.ToMicroseconds() - stored.finished_at.ToMicroseconds()) < 1_000_000
    assert abs(final.started_at.ToMicroseconds() - stored.started_at.ToMicroseconds()) < 1_000_000
    assert final.duration == round(final.duration, 6) == stored.duration


def test_e2e_watch_runs_of_one_job(jw: Client) -> None:
    stream = jw.watch_runs(name="tick", timeout=10)
    try:
        got = [next(stream) for _ in range(2)]
    finally:
        stream.close()
    assert {m.run.job_name for m in got} == {"tick"} and not any(m.output_chunk for m in got)
    with pytest.raises(LobwifeError) as info:
        next(jw.watch_runs(name="nope", timeout=5))
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_e2e_runs_pages_and_errors(jw: Client) -> None:
    deadline = time.monotonic() + 10
    while len(jw.list_runs("tick", page_size=3).runs) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    page = jw.list_runs("tick", page_size=2)
    assert len(page.runs) == 2 and page.next_page_token
    assert page.runs[0].run_id > page.runs[1].run_id  # newest first
    everything = list(jw.iter_runs("tick", page_size=2))
    assert [r.run_id for r in everything[:2]] == [r.run_id for r in page.runs]
    assert len({r.run_id for r in everything}) == len(everything) >= 3
    with pytest.raises(LobwifeError) as info:
        jw.get_run("hello", page.runs[0].run_id)  # a run of another job
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(LobwifeError) as info:
        jw.list_runs("nope")
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_e2e_enable_disable(jw: Client) -> None:
    job = jw.disable_job("hello")
    assert not job.enabled and not job.HasField("next_run")
    assert len(jw.get_job("hello").next_runs) == 0
    job = jw.enable_job("hello")
    assert job.enabled and job.HasField("next_run")


def test_e2e_create_update_delete_api_job(jw: Client, tmp_path: Path) -> None:
    job = jw.create_job(
        "api-job",
        description="made by a test",
        command=["sh", "-c", "echo $GREETING from $PWD"],
        env={"GREETING": "hi"},
        working_dir=str(tmp_path),
        cron="0 3 * * *",
        time_zone="Europe/Berlin",
        run_timeout=60,
        concurrency="allow",
        retry={"max_retries": 1, "initial_backoff": 2},
    )
    assert (job.source, job.enabled, job.concurrency) == (J.JOB_SOURCE_API, True, J.CONCURRENCY_POLICY_ALLOW)
    assert job.timeout.seconds == 60 and job.retry.max_retries == 1 and job.retry.initial_backoff.seconds == 2
    with pytest.raises(LobwifeError) as info:
        jw.create_job("api-job", command=["true"], cron="0 3 * * *")
    assert info.value.code == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(LobwifeError) as info:
        jw.create_job("bad-zone", command=["true"], cron="0 3 * * *", time_zone="Mars/Olympus")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "time_zone" in " ".join(v.field for v in info.value.field_violations)

    updated = jw.update_job("api-job", interval=3600, working_dir=None, description="changed")
    assert updated.WhichOneof("trigger") == "interval" and updated.schedule == "every 3600s"
    assert updated.description == "changed" and not updated.working_dir
    assert dict(updated.env) == {"GREETING": "hi"}  # not in the mask: untouched
    msg = J.Job(name="api-job", description="from a message", run_on_startup=True)
    assert jw.update_job(msg, update_mask=["description"]).run_on_startup is False

    run = wait_run(jw, "api-job", jw.trigger_job("api-job").run_id)
    assert run.status == J.RUN_STATUS_SUCCESS and run.output.startswith("hi from /")

    with pytest.raises(LobwifeError) as info:
        jw.update_job("hello", description="x")
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION and info.value.reason == "JOB_NOT_API_OWNED"
    with pytest.raises(LobwifeError) as info:
        jw.delete_job("hello")
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION

    jw.delete_job("api-job")
    assert "api-job" not in [j.name for j in jw.iter_jobs()]
    with pytest.raises(LobwifeError) as info:
        jw.get_job("api-job")
    assert info.value.code == grpc.StatusCode.NOT_FOUND


async def test_e2e_async_jobs(jobs_srv: ServerProcess) -> None:
    async with AsyncClient(jobs_srv.grpc_addr, timeout=10) as c:
        names = [j.name async for j in c.iter_jobs(page_size=2)]
        assert names == [j.name for j in (await c.list_jobs()).jobs]
        assert (await c.get_job("hello", next_runs=2)).next_runs[1].seconds > 0
        assert (await c.status()).jobs["tick"].enabled

        created = await c.create_job(name="async-job", command=["sh", "-c", "echo async"], interval=3600)
        assert created.source == J.JOB_SOURCE_API
        assert (await c.update_job("async-job", description="d")).description == "d"
        assert not (await c.disable_job("async-job")).enabled
        assert (await c.enable_job("async-job")).enabled

        watch = c.watch_runs(name="async-job", include_output=True, timeout=20)
        first = asyncio.ensure_future(anext(watch))
        # Subscribed once a run shows up: trigger until one does (each run is short).
        run_ids: set[int] = set()
        for _ in range(50):
            try:
                run_ids.add((await c.trigger_job("async-job")).run_id)
            except LobwifeError as e:
                assert e.code == grpc.StatusCode.FAILED_PRECONDITION  # the previous run is still going
            done, _ = await asyncio.wait({first}, timeout=0.2)
            if done:
                break
        msg = await asyncio.wait_for(first, 5)
        assert msg.run.job_name == "async-job" and msg.run.run_id in run_ids
        # The first message may already be a run's end (the watch can subscribe mid-run),
        # and then no further message is due: only read on while no run has ended yet.
        async with asyncio.timeout(10):
            while msg.run.status != J.RUN_STATUS_SUCCESS:
                msg = await anext(watch)
                if msg.output_chunk:
                    assert msg.output_chunk == "async\n"
        await watch.aclose()

        last = max(run_ids)
        for _ in range(100):
            run = await c.get_run("async-job", last)
            if run.status == J.RUN_STATUS_SUCCESS:
                break
            await asyncio.sleep(0.05)
        assert run.output == "async\n"
        assert [r.run_id async for r in c.iter_runs("async-job", page_size=1)] == sorted(run_ids, reverse=True)
        assert (await c.list_runs("async-job", page_size=1)).next_page_token or len(run_ids) == 1
        await c.delete_job("async-job")
        with pytest.raises(LobwifeError) as info:
            await c.trigger_job("async-job")
        assert info.value.code == grpc.StatusCode.NOT_FOUND
