"""The HTTP gateway against a real aiohttp server on 127.0.0.1 (and real curl),
with a small in-test TaskService / JobService behind the real Dispatcher."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from lobwife.v1 import jobs_pb2, tasks_pb2
from lobwife_server.api import gateway
from lobwife_server.api.rpc import CallContext, Dispatcher
from lobwife_server.core.errors import failed_precondition, invalid_argument, not_found

TIMEOUT = aiohttp.ClientTimeout(total=20)

# --------------------------------------------------------------------------- fakes


class FakeTasks:
    """Just enough of TaskService to see what the gateway hands it."""

    def __init__(self) -> None:
        self.tasks: dict[int, tasks_pb2.Task] = {}
        self.requests: list[Any] = []
        self.contexts: list[CallContext] = []
        # "finite": 3 messages; "idle": 3 then wait forever; "silent": wait forever;
        # "fail": an error after the first message.
        self.watch_mode = "finite"
        self.watch_closed = asyncio.Event()

    def _record(self, req: Any, ctx: CallContext) -> None:
        self.requests.append(req)
        self.contexts.append(ctx)

    def _find(self, ref: str) -> tasks_pb2.Task:
        if ref == "boom":
            raise RuntimeError("kaboom")
        num = ref[1:] if ref[:1] in ("T", "t") else ref
        if not num.isdigit() or int(num) not in self.tasks:
            raise not_found(f"Task {ref} not found")
        return self.tasks[int(num)]

    async def CreateTask(self, req: tasks_pb2.CreateTaskRequest, ctx: CallContext) -> tasks_pb2.CreateTaskResponse:
        self._record(req, ctx)
        if not req.name.strip():
            raise invalid_argument("name", "must not be blank")
        n = len(self.tasks) + 1
        t = tasks_pb2.Task(
            id=n,
            task_id=f"T{n}",
            name=req.name,
            type=req.type if req.HasField("type") else "swe",
            status=req.status or tasks_pb2.TASK_STATUS_QUEUED,
            priority=req.priority if req.HasField("priority") else "normal",
            repos=req.repos,
            requires_qa=req.requires_qa,
        )
        if req.HasField("estimate_minutes_exact"):  # the HTTP JSON's `estimate_minutes`
            t.estimate_minutes_exact = req.estimate_minutes_exact
        t.created_at.FromSeconds(1771243200 + n)
        self.tasks[n] = t
        return tasks_pb2.CreateTaskResponse(task=t)

    async def GetTask(self, req: tasks_pb2.GetTaskRequest, ctx: CallContext) -> tasks_pb2.GetTaskResponse:
        self._record(req, ctx)
        return tasks_pb2.GetTaskResponse(task=self._find(req.task_id))

    async def ListTasks(self, req: tasks_pb2.ListTasksRequest, ctx: CallContext) -> tasks_pb2.ListTasksResponse:
        self._record(req, ctx)
        if req.page_size < 0:
            raise invalid_argument("page_size", "must not be negative")
        found = [
            t
            for t in sorted(self.tasks.values(), key=lambda t: -t.id)
            if (not req.status or t.status == req.status) and (not req.type or t.type == req.type)
        ]
        return tasks_pb2.ListTasksResponse(tasks=found[: req.page_size or 100], next_page_token="more")

    async def UpdateTask(self, req: tasks_pb2.UpdateTaskRequest, ctx: CallContext) -> tasks_pb2.UpdateTaskResponse:
        self._record(req, ctx)
        t = self._find(req.task_id)
        if req.HasField("status"):
            t.status = req.status
        return tasks_pb2.UpdateTaskResponse(id=t.id, task_id=t.task_id, updated=list(req.update_mask.paths), task=t)

    async def CancelTask(self, req: tasks_pb2.CancelTaskRequest, ctx: CallContext) -> tasks_pb2.CancelTaskResponse:
        self._record(req, ctx)
        t = self._find(req.task_id)
        if t.status == tasks_pb2.TASK_STATUS_CANCELLED:
            raise failed_precondition(f"Task {t.task_id} is already cancelled")
        t.status = tasks_pb2.TASK_STATUS_CANCELLED
        return tasks_pb2.CancelTaskResponse(id=t.id, task_id=t.task_id, status=t.status, task=t)

    async def CreateTaskEvent(
        self, req: tasks_pb2.CreateTaskEventRequest, ctx: CallContext
    ) -> tasks_pb2.CreateTaskEventResponse:
        self._record(req, ctx)
        t = self._find(req.task_id)
        if not req.event_type:
            raise invalid_argument("event_type", "is required")
        ev = tasks_pb2.TaskEvent(id=1, task_id=t.id, event_type=req.event_type, detail=req.detail)
        return tasks_pb2.CreateTaskEventResponse(status="logged", task_id=t.task_id, event=ev)

    # RegisterTaskRepos and ListTaskEvents are deliberately missing: UNIMPLEMENTED.

    async def WatchTasks(
        self, req: tasks_pb2.WatchTasksRequest, ctx: CallContext
    ) -> AsyncIterator[tasks_pb2.WatchTasksResponse]:
        self._record(req, ctx)
        try:
            if req.task_id == "T404":
                raise not_found("Task T404 not found")
            if self.watch_mode == "silent":
                await asyncio.Event().wait()
            for cursor in range(req.after_cursor + 1, req.after_cursor + 4):
                ev = tasks_pb2.TaskEvent(id=cursor, task_id=1, event_type="updated")
                yield tasks_pb2.WatchTasksResponse(cursor=cursor, event=ev, task=tasks_pb2.Task(id=1, task_id="T1"))
                if self.watch_mode == "fail":
                    raise failed_precondition("the watch broke")
            if self.watch_mode == "idle":
                await asyncio.Event().wait()
        finally:
            self.watch_closed.set()


class FakeJobs:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def UpdateJob(self, req: jobs_pb2.UpdateJobRequest, ctx: CallContext) -> jobs_pb2.UpdateJobResponse:
        self.requests.append(req)
        return jobs_pb2.UpdateJobResponse(job=req.job)

    async def GetStatus(self, req: jobs_pb2.GetStatusRequest, ctx: CallContext) -> jobs_pb2.GetStatusResponse:
        job = jobs_pb2.JobSummary(schedule="0 3 * * *", enabled=True, run_count=4)
        return jobs_pb2.GetStatusResponse(status="ok", uptime=1.5, jobs={"nightly": job})

    async def GetJobRun(self, req: jobs_pb2.GetJobRunRequest, ctx: CallContext) -> jobs_pb2.GetJobRunResponse:
        self.requests.append(req)
        return jobs_pb2.GetJobRunResponse(run=jobs_pb2.JobRun(run_id=req.run_id, job_name=req.name))


# --------------------------------------------------------------------------- fixtures


@dataclass
class Gateway:
    url: str
    app: web.Application
    tasks: FakeTasks
    jobs: FakeJobs
    session: aiohttp.ClientSession
    port: int
    extra_hits: list[str] = field(default_factory=list)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        async with self.session.request(method, self.url + path, data=data, headers=headers) as resp:
            text = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, (json.loads(text) if ctype.startswith("application/json") else text), resp


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    return runner, port


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    tasks, jobs = FakeTasks(), FakeJobs()
    dispatcher = Dispatcher({"lobwife.v1.TaskService": tasks, "lobwife.v1.JobService": jobs})
    hits: list[str] = []

    async def extra_route(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        return web.json_response({"extra": True})

    app = gateway.build_app(dispatcher, sse_keepalive=0.3, extra=lambda routes: routes.add_get("/extra", extra_route))
    runner, port = await _serve(app)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        yield Gateway(f"http://127.0.0.1:{port}", app, tasks, jobs, session, port, hits)
    await runner.cleanup()


async def curl(*args: str, body: bytes | None = None, max_time: float = 20) -> tuple[int, str, bytes]:
    """Run real curl; return (status, content type, body)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cmd = ["curl", "-sS", "-o", str(out), "-w", "%{http_code} %{content_type}", "--max-time", str(max_time)]
        if body is not None:
            src = Path(tmp) / "in"
            src.write_bytes(body)
            cmd += ["-H", "Content-Type: application/json", "--data-binary", f"@{src}"]
        proc = await asyncio.create_subprocess_exec(
            *cmd, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), max_time + 5)
        assert proc.returncode == 0, stderr.decode()
        code, _, ctype = stdout.decode().partition(" ")
        return int(code), ctype, out.read_bytes() if out.exists() else b""


async def create(gw: Gateway, name: str = "Fix it", **fields: Any) -> dict[str, Any]:
    status, body, _ = await gw.call("POST", "/api/v1/tasks", {"name": name, **fields})
    assert status == 201, body
    assert isinstance(body, dict)
    return body


# --------------------------------------------------------------------------- binding


async def test_create_with_curl_201_and_response_body(gw: Gateway) -> None:
    status, ctype, raw = await curl(
        "-X", "POST", f"{gw.url}/api/v1/tasks", "-H", "X-Request-Id: abc",
        body=b'{"name": "Fix it", "estimate_minutes": 30, "repos": ["o/r"], "status": "QUEUED", "limit": 3}',
    )  # fmt: skip
    assert status == 201 and ctype == "application/json"
    task = json.loads(raw)
    # response_body "task": the bare task, numbers as numbers, short enum names.
    assert task["id"] == 1 and task["task_id"] == "T1" and task["estimate_minutes"] == 30
    assert task["status"] == "queued" and task["repos"] == ["o/r"] and task["slug"] is None
    assert task["created_at"] == "2026-02-16T12:00:01Z"
    ctx = gw.tasks.contexts[-1]
    assert ctx.transport == "http" and ctx.method == "/lobwife.v1.TaskService/CreateTask"
    assert ctx.metadata["x-request-id"] == "abc" and ctx.peer == "127.0.0.1"


async def test_path_params_and_percent_decoding(gw: Gateway) -> None:
    await create(gw)
    status, body, _ = await gw.call("GET", "/api/v1/tasks/T1")
    assert status == 200 and body["task_id"] == "T1"
    status, body, _ = await gw.call("GET", "/api/v1/tasks/T%31")
    assert status == 200 and gw.tasks.requests[-1].task_id == "T1"
    status, body, _ = await gw.call("GET", "/api/v1/tasks/%FF")
    assert status == 400 and body["error"] == "task_id: invalid UTF-8 in the URL path"
    # Path parameters are converted to the field's type; the error names the field.
    status, body, _ = await gw.call("GET", "/api/v1/jobs/nightly/runs/17")
    assert status == 200 and body["run_id"] == 17 and body["job_name"] == "nightly"
    status, body, _ = await gw.call("GET", "/api/v1/jobs/nightly/runs/seventeen")
    assert status == 400 and body["error"] == "run_id: expected an integer, got string"


async def test_query_params_bind_fields_not_in_path(gw: Gateway) -> None:
    for i in range(3):
        await create(gw, f"t{i}")
    await create(gw, "other", type="ops")
    status, body, resp = await gw.call("GET", "/api/v1/tasks?status=queued&type=swe&limit=2&bogus=1")
    assert status == 200 and resp.headers["Content-Type"] == "application/json"
    # response_body "tasks" (repeated): a bare JSON array, the legacy shape.
    assert [t["task_id"] for t in body] == ["T3", "T2"]
    req = gw.tasks.requests[-1]
    assert (req.status, req.type, req.page_size) == (tasks_pb2.TASK_STATUS_QUEUED, "swe", 2)
    # Legacy scripts send empty filters.
    status, body, _ = await gw.call("GET", "/api/v1/tasks?status=&type=&limit=")
    assert status == 200 and len(body) == 4
    # Query parameters never override path parameters.
    status, body, _ = await gw.call("GET", "/api/v1/tasks/T1?task_id=T2")
    assert status == 200 and body["task_id"] == "T1"


async def test_query_param_errors(gw: Gateway) -> None:
    status, body, _ = await gw.call("GET", "/api/v1/tasks?limit=lots")
    assert status == 400
    assert body == {
        "error": "limit: expected an integer, got string",
        "code": 3,
        "message": "limit: expected an integer, got string",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "field_violations": [{"field": "limit", "description": "expected an integer, got string"}],
            }
        ],
    }
    status, body, _ = await gw.call("GET", "/api/v1/tasks?status=sleeping")
    assert status == 400 and body["error"].startswith('status: unknown value "sleeping"; expected one of: queued')


async def test_body_errors(gw: Gateway) -> None:
    status, body, _ = await gw.call("POST", "/api/v1/tasks", {"name": "x", "estimate_minutes": "soon"})
    assert status == 400 and body["error"] == "estimate_minutes: expected a number, got string"
    assert body["details"][0]["field_violations"] == [
        {"field": "estimate_minutes", "description": "expected a number, got string"}
    ]
    status, body, _ = await gw.call("POST", "/api/v1/tasks", [1, 2])
    assert status == 400 and body["error"] == "body: expected a JSON object, got array"
    # An empty body is `{}`: the contract's REQUIRED `name` is missing (the dispatcher's check answers).
    status, body, _ = await gw.call("POST", "/api/v1/tasks", raw=b"")
    assert status == 400 and body["error"] == "name: is required"
    assert body["details"][0]["field_violations"][0]["field"] == "name"


async def test_malformed_json_and_invalid_utf8_with_curl(gw: Gateway) -> None:
    status, ctype, raw = await curl("-X", "POST", f"{gw.url}/api/v1/tasks", body=b'{"name": ')
    body = json.loads(raw)
    assert status == 400 and ctype == "application/json"
    assert body["error"].startswith("invalid JSON: ") and body["code"] == 3
    status, _, raw = await curl("-X", "POST", f"{gw.url}/api/v1/tasks", body=b'{"name": "caf\xe9"}')
    assert status == 400 and json.loads(raw)["error"].startswith("invalid JSON: ")
    assert "utf-8" in json.loads(raw)["error"].lower()
    assert gw.tasks.requests == []


async def test_patch_derives_update_mask_from_body_keys(gw: Gateway) -> None:
    await create(gw)
    body = {"status": "active", "slug": None, "bogus": 1, "task_id": "T9", "actor": "me", "estimateMinutes": 5}
    status, resp, _ = await gw.call("PATCH", "/api/v1/tasks/T1", body)
    assert status == 200
    req = gw.tasks.requests[-1]
    assert req.task_id == "T1"  # the path wins over the body
    # Present keys that are fields, by proto name, in body order; `null` counts
    # (it clears), unknown keys and path-bound fields do not.
    # The mask names fields by proto name: the HTTP key `estimate_minutes` is estimate_minutes_exact.
    assert list(req.update_mask.paths) == ["status", "slug", "actor", "estimate_minutes_exact"]
    assert not req.HasField("slug") and req.status == tasks_pb2.TASK_STATUS_ACTIVE
    assert resp["id"] == 1 and resp["task_id"] == "T1" and resp["updated"] == list(req.update_mask.paths)
    # An explicit mask is the client's and stays as given.
    status, resp, _ = await gw.call("PATCH", "/api/v1/tasks/T1", {"status": "blocked", "update_mask": "status"})
    assert status == 200 and list(gw.tasks.requests[-1].update_mask.paths) == ["status"]
    # A body with nothing known leaves no mask at all.
    status, resp, _ = await gw.call("PATCH", "/api/v1/tasks/T1", {"nope": 1})
    assert status == 200 and not gw.tasks.requests[-1].HasField("update_mask")


async def test_patch_with_body_field_and_nested_path_param(gw: Gateway) -> None:
    body = {"name": "other", "description": "d", "retry": {"max_retries": 2}, "junk": True}
    status, resp, _ = await gw.call("PATCH", "/api/v1/jobs/nightly", body)
    assert status == 200
    req = gw.jobs.requests[-1]
    assert req.job.name == "nightly"  # {job.name} from the path
    assert list(req.update_mask.paths) == ["description", "retry"]  # relative to the body message
    assert resp["name"] == "nightly" and resp["retry"]["max_retries"] == 2  # response_body "job"
    status, resp, _ = await gw.call("PATCH", "/api/v1/jobs/nightly", {"retry": {"max_retries": "x"}})
    assert status == 400 and resp["error"] == "job.retry.max_retries: expected an integer, got string"
    status, resp, _ = await gw.call("PATCH", "/api/v1/jobs/nightly", ["x"])
    assert status == 400 and resp["error"] == "job: expected a JSON object, got array"


async def test_additional_bindings_and_map_response_body(gw: Gateway) -> None:
    status, body, _ = await gw.call("GET", "/api/status")
    assert status == 200 and body["status"] == "ok" and body["uptime"] == 1.5
    assert body["jobs"]["nightly"]["run_count"] == 4
    status, body, _ = await gw.call("GET", "/api/jobs")
    assert status == 200 and list(body) == ["nightly"] and body["nightly"]["enabled"] is True


# --------------------------------------------------------------------------- status codes


async def test_error_status_codes(gw: Gateway) -> None:
    await create(gw)
    status, body, _ = await gw.call("GET", "/api/v1/tasks/T42")
    assert status == 404 and body == {"error": "Task T42 not found", "code": 5, "message": "Task T42 not found"}
    status, body, _ = await gw.call("DELETE", "/api/v1/tasks/T1")
    assert status == 200 and body["status"] == "cancelled" and body["id"] == 1
    status, body, _ = await gw.call("DELETE", "/api/v1/tasks/T1")
    assert status == 409 and body["error"] == "Task T1 is already cancelled" and body["code"] == 9
    status, body, _ = await gw.call("POST", "/api/v1/tasks/T1/events", {"event_type": "note", "detail": "hi"})
    assert status == 201 and body["status"] == "logged" and body["task_id"] == "T1"
    status, body, _ = await gw.call("POST", "/api/v1/tasks/T1/register", {"repos": ["o/r"]})
    assert status == 501 and body["code"] == 12 and "not implemented" in body["error"]
    status, body, _ = await gw.call("GET", "/api/v1/tasks/boom")
    assert status == 500 and body["error"] == "internal error"


async def test_unknown_path_404_and_wrong_method_405(gw: Gateway) -> None:
    status, body, _ = await gw.call("GET", "/x")
    assert status == 404 and body["error"] == "not found: GET /x"
    status, body, _ = await gw.call("GET", "/api/v1/tasks/T1/nope")
    assert status == 404
    status, body, resp = await gw.call("PUT", "/api/v1/tasks")
    assert status == 405 and body["error"] == "method not allowed: PUT /api/v1/tasks"
    assert resp.headers["Allow"] == "GET, HEAD, POST"
    status, body, resp = await gw.call("POST", "/api/v1/tasks/T1")
    assert status == 405 and resp.headers["Allow"] == "DELETE, GET, HEAD, PATCH"
    code, ctype, raw = await curl("-X", "DELETE", f"{gw.url}/nowhere")
    assert code == 404 and ctype == "application/json" and json.loads(raw)["error"] == "not found: DELETE /nowhere"


# --------------------------------------------------------------------------- body size


async def test_ten_mib_body_is_413_with_curl(gw: Gateway) -> None:
    big = b'{"name": "' + b"x" * (10 << 20) + b'"}'
    # curl sends `Expect: 100-continue` for a body this size: refused before it is sent.
    status, ctype, raw = await curl("-X", "POST", f"{gw.url}/api/v1/tasks", body=big)
    assert status == 413 and ctype == "application/json"
    assert json.loads(raw)["error"] == "request body too large (limit 1048576 bytes)"
    # Without Expect the Content-Length alone is enough.
    status, _, raw = await curl("-X", "POST", f"{gw.url}/api/v1/tasks", "-H", "Expect:", body=big)
    assert status == 413 and json.loads(raw)["code"] == 8
    assert gw.tasks.requests == []


async def test_chunked_body_over_the_limit_is_413(gw: Gateway) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}'

    async with gw.session.post(gw.url + "/api/v1/tasks", data=chunks()) as resp:
        assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert resp.status == 413
        assert (await resp.json())["error"].startswith("request body too large")
    assert gw.tasks.requests == []


async def test_body_limit_boundary() -> None:
    tasks = FakeTasks()
    app = gateway.build_app(Dispatcher({"lobwife.v1.TaskService": tasks}), max_body_bytes=64)
    runner, port = await _serve(app)
    try:
        at_limit = b'{"name": "a"}'.ljust(64)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            async with s.post(f"http://127.0.0.1:{port}/api/v1/tasks", data=at_limit) as resp:
                assert resp.status == 201
            async with s.post(f"http://127.0.0.1:{port}/api/v1/tasks", data=at_limit + b" ") as resp:
                assert resp.status == 413
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- streams


async def test_ndjson_stream(gw: Gateway) -> None:
    async with gw.session.get(gw.url + "/api/v1/tasks:watch?after_cursor=10") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in (await resp.read()).splitlines()]
    assert [m["cursor"] for m in lines] == [11, 12, 13]
    assert lines[0]["event"]["event_type"] == "updated" and lines[0]["task"]["task_id"] == "T1"
    await asyncio.wait_for(gw.tasks.watch_closed.wait(), 5)
    # With curl, as a bash script would read it.
    status, ctype, raw = await curl(f"{gw.url}/api/v1/tasks:watch")
    assert status == 200 and ctype == "application/x-ndjson" and len(raw.splitlines()) == 3


async def test_sse_stream_with_last_event_id(gw: Gateway) -> None:
    headers = {"Accept": "text/event-stream", "Last-Event-ID": "41"}
    async with gw.session.get(gw.url + "/api/v1/tasks:watch?after_cursor=1", headers=headers) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        text = (await resp.read()).decode()
    # Last-Event-ID (a reconnecting EventSource) wins over the original query.
    assert gw.tasks.requests[-1].after_cursor == 41
    events = [e for e in text.split("\n\n") if e]
    assert len(events) == 3
    first = events[0].split("\n")
    assert first[0] == "id: 42" and first[1].startswith("data: ")
    assert json.loads(first[1][len("data: ") :])["cursor"] == 42
    status, body, _ = await gw.call("GET", "/api/v1/tasks:watch", headers={"Last-Event-ID": "x"})
    assert status == 400 and body["error"] == "Last-Event-ID: expected an integer, got string"
    status, body, _ = await gw.call("GET", "/api/v1/tasks:watch", headers={"Last-Event-ID": "9" * 19})
    assert status == 400 and body["error"] == "Last-Event-ID: 9999999999999999999 is out of range for int64"


async def test_sse_keepalive_when_idle(gw: Gateway) -> None:
    gw.tasks.watch_mode = "idle"
    headers = {"Accept": "text/event-stream"}
    async with gw.session.get(gw.url + "/api/v1/tasks:watch", headers=headers) as resp:
        seen = b""
        while b": keepalive\n\n" not in seen:
            seen += await asyncio.wait_for(resp.content.readany(), 5)
    assert seen.count(b"id: ") == 3


async def test_silent_watch_gets_headers_promptly(gw: Gateway) -> None:
    # "Changes from now on" with no change yet: the client still gets its 200
    # and (SSE) keepalives instead of waiting for headers until something happens.
    gw.tasks.watch_mode = "silent"
    async with gw.session.get(gw.url + "/api/v1/tasks:watch", headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        assert await asyncio.wait_for(resp.content.readany(), 5) == b": keepalive\n\n"
    await asyncio.wait_for(gw.tasks.watch_closed.wait(), 5)


async def test_stream_error_before_first_message_is_plain_json(gw: Gateway) -> None:
    status, body, resp = await gw.call("GET", "/api/v1/tasks:watch?task_id=T404")
    assert status == 404 and body["error"] == "Task T404 not found"
    assert resp.headers["Content-Type"] == "application/json"
    status, body, _ = await gw.call("GET", "/api/v1/tasks:watch?after_cursor=abc")
    assert status == 400 and body["error"] == "after_cursor: expected an integer, got string"


async def test_stream_error_after_first_message_is_final_line(gw: Gateway) -> None:
    gw.tasks.watch_mode = "fail"
    async with gw.session.get(gw.url + "/api/v1/tasks:watch") as resp:
        assert resp.status == 200
        lines = [json.loads(line) for line in (await resp.read()).splitlines()]
    assert lines[0]["cursor"] == 1
    assert lines[-1] == {"error": "the watch broke", "code": 9, "message": "the watch broke"}
    async with gw.session.get(gw.url + "/api/v1/tasks:watch", headers={"Accept": "text/event-stream"}) as resp:
        text = (await resp.read()).decode()
    assert text.endswith('event: error\ndata: {"error":"the watch broke","code":9,"message":"the watch broke"}\n\n')


async def test_stream_ends_when_client_goes_away(gw: Gateway) -> None:
    gw.tasks.watch_mode = "idle"
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /api/v1/tasks:watch HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    got = b""
    while got.count(b'"cursor"') < 3:
        got += await asyncio.wait_for(reader.read(65536), 5)
    assert not gw.tasks.watch_closed.is_set()
    writer.close()
    await writer.wait_closed()
    # The server notices within its poll interval and closes the RPC's generator.
    await asyncio.wait_for(gw.tasks.watch_closed.wait(), 5)


async def test_draining_ends_open_streams(gw: Gateway) -> None:
    gw.tasks.watch_mode = "idle"
    async with gw.session.get(gw.url + "/api/v1/tasks:watch") as resp:
        first = await asyncio.wait_for(resp.content.readline(), 5)
        assert json.loads(first)["cursor"] == 1
        gateway.set_draining(gw.app)
        rest = await asyncio.wait_for(resp.read(), 5)  # ends: EOF, not a hang
    assert rest.count(b"\n") == 2
    await asyncio.wait_for(gw.tasks.watch_closed.wait(), 5)


async def test_unimplemented_stream_is_501(gw: Gateway) -> None:
    status, body, _ = await gw.call("GET", "/api/v1/runs:watch")
    assert status == 501 and body["code"] == 12


# --------------------------------------------------------------------------- non-RPC routes, draining


async def test_metrics_index_and_extra_routes(gw: Gateway) -> None:
    await gw.call("GET", "/api/v1/tasks")
    status, body, resp = await gw.call("GET", "/metrics")
    assert status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    assert b'lobwife_rpc_calls_total{code="OK",method="ListTasks",service="TaskService",transport="http"}' in body
    status, ctype, raw = await curl(f"{gw.url}/")
    assert status == 200 and ctype.startswith("text/html")
    page = raw.decode()
    assert "<title>lobwife</title>" in page and "/health" in page and "/api/v1/tasks?limit=50" in page
    assert 'src="http' not in page and 'href="http' not in page  # self-contained
    status, body, _ = await gw.call("GET", "/extra")
    assert status == 200 and body == {"extra": True} and gw.extra_hits == ["/extra"]


async def test_draining_answers_503_everywhere(gw: Gateway) -> None:
    await create(gw)
    gateway.set_draining(gw.app)
    for path in ("/api/v1/tasks", "/metrics", "/extra", "/nowhere"):
        status, body, _ = await gw.call("GET", path)
        assert status == 503 and body["error"] == "server is shutting down", path
    code, ctype, _ = await curl("-X", "POST", f"{gw.url}/api/v1/tasks", body=b'{"name": "x"}')
    assert code == 503 and ctype == "application/json"
    assert len(gw.tasks.tasks) == 1


def test_route_table_comes_from_the_annotations() -> None:
    app = gateway.build_app(Dispatcher({}))
    routes = gateway.route_list(app)
    for expected in (
        "GET /api/v1/tasks",
        "POST /api/v1/tasks",
        "PATCH /api/v1/tasks/*",
        "GET /api/v1/tasks:watch",
        "POST /api/v1/findings/*:resolve",
        "GET /api/jobs",
        "GET /api/status",
        "GET /health",
        "GET /metrics",
        "GET /",
    ):
        assert expected in routes
    with pytest.raises(ValueError):
        gateway.parse_template("/a/{name=shelves/*}")
    t = gateway.parse_template("/v1/{book.name}/x/{rest=**}:act")
    assert t.segments == ("v1", None, "x") and t.tail and t.verb == "act"
    assert t.variables == (("book.name", 1), ("rest", -1))
