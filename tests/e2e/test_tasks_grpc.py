"""TaskService over real gRPC against the real server and a real SQLite file."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from lobwife.v1 import tasks_pb2, tasks_pb2_grpc
from tests.grpc_util import error_of, violations

S = tasks_pb2.TaskStatus


@pytest.fixture
def stub(channel: grpc.Channel) -> tasks_pb2_grpc.TaskServiceStub:
    return tasks_pb2_grpc.TaskServiceStub(channel)


def add_events(stub: tasks_pb2_grpc.TaskServiceStub, task_id: str, n: int, wave: int = 100) -> None:
    """n events, at most ``wave`` calls in flight (thousands at once overrun the client's channel)."""
    for start in range(0, n, wave):
        futures = [
            stub.CreateTaskEvent.future(
                tasks_pb2.CreateTaskEventRequest(task_id=task_id, event_type=f"e{i}"), timeout=30
            )
            for i in range(start, min(n, start + wave))
        ]
        for f in futures:
            f.result()


def create(stub: tasks_pb2_grpc.TaskServiceStub, name: str = "t", **kw: object) -> tasks_pb2.Task:
    return stub.CreateTask(tasks_pb2.CreateTaskRequest(name=name, **kw), timeout=5).task  # type: ignore[arg-type]


def test_create_defaults_and_get_by_number_or_T(stub: tasks_pb2_grpc.TaskServiceStub) -> None:
    t = create(stub, "first", actor="lobboss", repos=["o/r"], estimate_minutes=30)
    assert t.id == 1 and t.task_id == "T1"
    assert (t.type, t.status, t.priority) == ("swe", S.TASK_STATUS_QUEUED, "normal")
    assert t.created_by == "lobboss" and list(t.repos) == ["o/r"] and t.estimate_minutes == 30
    assert not t.HasField("assigned_at") and t.HasField("queued_at")
    for ref in ("1", "T1", "t1", " T1 "):
        assert stub.GetTask(tasks_pb2.GetTaskRequest(task_id=ref), timeout=5).task == t
    events = stub.ListTaskEvents(tasks_pb2.ListTaskEventsRequest(task_id="T1"), timeout=5).events
    assert [(e.event_type, e.actor, e.task_id) for e in events] == [("created", "lobboss", 1)]


@pytest.mark.parametrize("ref", ["T", "T-1", "Tabc", "", "0", "99999999999999999999", "1.5", "T1x"])
def test_bad_task_ids_name_the_field(stub: tasks_pb2_grpc.TaskServiceStub, ref: str) -> None:
    err = error_of(lambda: stub.GetTask(tasks_pb2.GetTaskRequest(task_id=ref), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(err) == ["task_id"]


def test_missing_task_is_not_found(stub: tasks_pb2_grpc.TaskServiceStub) -> None:
    err = error_of(lambda: stub.GetTask(tasks_pb2.GetTaskRequest(task_id="T424242"), timeout=5))
    assert err.code() == grpc.StatusCode.NOT_FOUND and err.details() == "Task T424242 not found"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 501}, "name"),
        ({"name": "ok", "estimate_minutes": -1}, "estimate_minutes"),
        ({"name": "ok", "repos": [""]}, "repos[0]"),
        ({"name": "ok", "repos": ["a/b"] * 101}, "repos"),
        ({"name": "ok", "request_id": "r" * 129}, "request_id"),
        ({"name": "ok", "status": 99}, "status"),
    ],
)
def test_create_rejects_bad_input_and_stores_nothing(
    stub: tasks_pb2_grpc.TaskServiceStub, kwargs: dict[str, object], field: str
) -> None:
    err = error_of(lambda: stub.CreateTask(tasks_pb2.CreateTaskRequest(**kwargs), timeout=5))  # type: ignore[arg-type]
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(err) == [field]
    assert list(stub.ListTasks(tasks_pb2.ListTasksRequest(), timeout=5).tasks) == []


def test_oversized_grpc_message_is_refused(stub: tasks_pb2_grpc.TaskServiceStub) -> None:
    err = error_of(lambda: stub.CreateTask(tasks_pb2.CreateTaskRequest(name="x" * (5 * 1024 * 1024)), timeout=10))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_create_is_idempotent_by_request_id(stub: tasks_pb2_grpc.TaskServiceStub) -> None:
    a = create(stub, "once", request_id="req-1")
    b = create(stub, "once", request_id="req-1")
    assert a == b
    # The same id with another request is a conflict, not the first task (issue 9).
    err = error_of(lambda: create(stub, "once again", request_id="req-1"))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and violations(err) == ["request_id"]
    assert len(stub.ListTasks(tasks_pb2.ListTasksRequest(), timeout=5).tasks) == 1


def test_list_newest_first_filters_and_pages(stub: tasks_pb2_grpc.TaskServiceStub) -> None:
    for i in range(7):
        create(stub, f"t{i}", type="qa" if i % 2 else "swe", assigned_to="w1" if i < 3 else None)
    ids = [t.id for t in stub.ListTasks(tasks_pb2.ListTasksRequest(), timeout=5).tasks]
    assert ids == [7, 6, 5, 4, 3, 2, 1]
    qa = stub.ListTasks(tasks_pb2.ListTasksRequest(type="qa"), timeout=5).tasks
    assert [t.id for t in qa] == [6, 4, 2]
    w1 = stub.ListTasks(tasks_pb2.ListTasksRequest(assigned_to="w1"), timeout=5).tasks
    assert [t.id for t in w1] == [3, 2, 1]
    # Page through swe tasks two at a time.
    seen: list[int] = []
    token = ""
    while True:
        resp = stub.ListTasks(tasks_pb2.ListTasksRequest(type="swe", page_size=2, page_token=token), timeout=5)
        seen += [t.id for t in resp.tasks]
        token = resp.next_page_token
        if not token:
            break
    assert seen == [7, 5, 3, 1]
    # A token is bound to its filters.
    first = stub.ListTasks(tasks_pb2.ListTasksRequest(type="swe", page_size=2), timeout=5)
    err = error_of(
        lambda: stub.ListTasks(tasks_pb2.ListTasksRequest(type="qa", page_token=first.next_page_token), timeout=5)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == ["page_token"]
    for forged in ("garbage", first.next_page_token[:-3] + "AAA", "eyJrIjoidGFza3MiLCJwIjoxfQ"):
        err = error_of(lambda f=forged: stub.ListTasks(tasks_pb2.ListTasksRequest(page_token=f), timeout=5))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == ["page_token"]


def test_page_size_rules(stub: tasks_pb2_grpc.TaskServiceStub) -> None:
    for i in range(3):
        create(stub, f"t{i}")
    err = error_of(lambda: stub.ListTasks(tasks_pb2.ListTasksRequest(page_size=-1), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == ["page_size"]
    assert len(stub.ListTasks(tasks_pb2.ListTasksRequest(page_size=0), timeout=5).tasks) == 3
    assert len(stub.ListTasks(tasks_pb2.ListTasksRequest(page_size=2**31 - 1), timeout=5).tasks) == 3


def test_list_by_created_range(stub: tasks_pb2_grpc.TaskServiceStub) -> None:
    a = create(stub, "a")
    time.sleep(0.01)
    b = create(stub, "b")
    req = tasks_pb2.ListTasksRequest(created_after=b.created_at)
    assert [t.id for t in stub.ListTasks(req, timeout=5).tasks] == [b.id]
    req = tasks_pb2.ListTasksRequest(created_before=b.created_at)
    assert [t.id for t in stub.ListTasks(req, timeout=5).tasks] == [a.id]


# Past 9999-12-31, and far enough that the microseconds overflow SQLite's 64-bit integer.
_HUGE = timestamp_pb2.Timestamp(seconds=9_223_372_036_855)


@pytest.mark.parametrize(
    ("field", "ts", "needle"),
    [
        ("created_after", _HUGE, "out of range (years 0001-9999)"),
        ("created_before", _HUGE, "out of range (years 0001-9999)"),
        ("created_after", timestamp_pb2.Timestamp(seconds=-62_135_596_801), "out of range"),
        ("created_before", timestamp_pb2.Timestamp(seconds=1, nanos=-1), "nanos"),
        ("created_after", timestamp_pb2.Timestamp(seconds=1, nanos=1_000_000_000), "nanos"),
    ],
)
def test_list_timestamp_out_of_range_names_the_field(
    stub: tasks_pb2_grpc.TaskServiceStub, field: str, ts: timestamp_pb2.Timestamp, needle: str
) -> None:
    """The HTTP gateway's timestamp bounds, over gRPC too: INVALID_ARGUMENT, never INTERNAL."""
    req = tasks_pb2.ListTasksRequest()
    getattr(req, field).CopyFrom(ts)
    err = error_of(lambda: stub.ListTasks(req, timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert violations(err) == [field] and needle in (err.details() or "")
    # The bounds themselves are valid.
    getattr(req, field).CopyFrom(timestamp_pb2.Timestamp(seconds=253_402_300_799, nanos=999_999_999))
    stub.ListTasks(req, timeout=5)


@pytest.mark.parametrize("field", ["queued_at", "assigned_at", "completed_at"])
def test_update_timestamp_out_of_range_names_the_field_and_changes_nothing(
    stub: tasks_pb2_grpc.TaskServiceStub, field: str
) -> None:
    before = create(stub, "stamped")
    req = tasks_pb2.UpdateTaskRequest(task_id=before.task_id, name="renamed")
    getattr(req, field).CopyFrom(_HUGE)
    err = error_of(lambda: stub.UpdateTask(req, timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert violations(err) == [field] and "out of range (years 0001-9999)" in (err.details() or "")
    assert stub.GetTask(tasks_pb2.GetTaskRequest(task_id=before.task_id), timeout=5).task == before


def test_update_with_mask_stamps_and_logs(stub: tasks_pb2_grpc.TaskServiceStub) -> None:
    t = create(stub, "work", assigned_to="someone")
    resp = stub.UpdateTask(
        tasks_pb2.UpdateTaskRequest(
            task_id=t.task_id,
            actor="lobboss",
            status=S.TASK_STATUS_ACTIVE,
            update_mask=field_mask_pb2.FieldMask(paths=["status", "assigned_to"]),
        ),
        timeout=5,
    )
    assert list(resp.updated) == ["status", "assigned_to"]
    assert resp.task.status == S.TASK_STATUS_ACTIVE
    assert not resp.task.HasField("assigned_to"), "named in the mask without a value: cleared"
    assert resp.task.HasField("assigned_at") and not resp.task.HasField("completed_at")
    # A client-set completion time wins over the stamp.
    done_at = timestamp_pb2.Timestamp(seconds=1_700_000_000)
    resp = stub.UpdateTask(
        tasks_pb2.UpdateTaskRequest(task_id="1", status=S.TASK_STATUS_COMPLETED, completed_at=done_at), timeout=5
    )
    assert resp.task.completed_at == done_at and list(resp.updated) == ["status", "completed_at"]
    events = stub.ListTaskEvents(tasks_pb2.ListTaskEventsRequest(task_id="1"), timeout=5).events
    assert [(e.event_type, e.actor, e.detail) for e in events[:2]] == [
        ("updated", "", "Updated: status, completed_at"),
        ("updated", "lobboss", "Updated: status, assigned_to"),
    ]


@pytest.mark.parametrize(
    ("paths", "message"),
    [(["bogus"], "unknown field"), (["created_at"], "output only"), (["id"], "output only"), ([], "no valid field")],
)
def test_update_mask_errors(stub: tasks_pb2_grpc.TaskServiceStub, paths: list[str], message: str) -> None:
    t = create(stub, "x")
    req = tasks_pb2.UpdateTaskRequest(task_id=t.task_id, update_mask=field_mask_pb2.FieldMask(paths=paths))
    err = error_of(lambda: stub.UpdateTask(req, timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and message in (err.details() or "")
    assert stub.GetTask(tasks_pb2.GetTaskRequest(task_id=t.task_id), timeout=5).task == t


def test_cancel_is_soft_and_final(stub: tasks_pb2_grpc.TaskServiceStub) -> None:
    t = create(stub, "to cancel")
    resp = stub.CancelTask(tasks_pb2.CancelTaskRequest(task_id="T1", actor="op", reason="dup"), timeout=5)
    assert resp.status == S.TASK_STATUS_CANCELLED and resp.task.HasField("completed_at")
    assert stub.GetTask(tasks_pb2.GetTaskRequest(task_id="1"), timeout=5).task.status == S.TASK_STATUS_CANCELLED
    err = error_of(lambda: stub.CancelTask(tasks_pb2.CancelTaskRequest(task_id="1"), timeout=5))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "already cancelled" in (err.details() or "")
    err = error_of(lambda: stub.UpdateTask(tasks_pb2.UpdateTaskRequest(task_id="1", name="again"), timeout=5))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert stub.GetTask(tasks_pb2.GetTaskRequest(task_id="1"), timeout=5).task.name == t.name
    done = create(stub, "done", status=S.TASK_STATUS_COMPLETED)
    err = error_of(lambda: stub.CancelTask(tasks_pb2.CancelTaskRequest(task_id=done.task_id), timeout=5))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_events_page_and_bound(stub: tasks_pb2_grpc.TaskServiceStub) -> None:
    create(stub, "chatty")
    add_events(stub, "1", 1200)
    stub.CreateTaskEvent(tasks_pb2.CreateTaskEventRequest(task_id="1", event_type="last", detail="d"), timeout=30)
    page = stub.ListTaskEvents(tasks_pb2.ListTaskEventsRequest(task_id="1", page_size=5000), timeout=5)
    assert len(page.events) == 1000 and page.next_page_token
    assert page.events[0].event_type == "last"
    rest = stub.ListTaskEvents(
        tasks_pb2.ListTaskEventsRequest(task_id="1", page_size=5000, page_token=page.next_page_token), timeout=5
    )
    assert len(rest.events) == 1202 - 1000 and not rest.next_page_token
    assert rest.events[-1].event_type == "created"
    err = error_of(lambda: stub.CreateTaskEvent(tasks_pb2.CreateTaskEventRequest(task_id="1"), timeout=5))
    assert violations(err) == ["event_type"]
    err = error_of(
        lambda: stub.CreateTaskEvent(tasks_pb2.CreateTaskEventRequest(task_id="9", event_type="x"), timeout=5)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_register_repos_sets_broker_fields(stub: tasks_pb2_grpc.TaskServiceStub) -> None:
    create(stub, "reg")
    resp = stub.RegisterTaskRepos(
        tasks_pb2.RegisterTaskReposRequest(task_id="T1", repos=["o/a", "o/b"], lobster_type="swe"), timeout=5
    )
    assert (resp.status, resp.task_id) == ("registered", "T1")
    assert list(resp.task.broker_repos) == ["o/a", "o/b"] and resp.task.broker_status == "active"
    ev = stub.ListTaskEvents(tasks_pb2.ListTaskEventsRequest(task_id="1"), timeout=5).events[0]
    assert (ev.event_type, ev.actor) == ("broker_registered", "swe")
    err = error_of(lambda: stub.RegisterTaskRepos(tasks_pb2.RegisterTaskReposRequest(task_id="1"), timeout=5))
    assert violations(err) == ["repos"]


@pytest.mark.parametrize(
    ("repos", "field"),
    [(["\x00"], "repos[0]"), (["o/a", "o r/b"], "repos[1]"), (["noslash"], "repos[0]"), (["o/a/b"], "repos[0]")],
)
def test_register_repos_validated_as_create_repos(
    stub: tasks_pb2_grpc.TaskServiceStub, repos: list[str], field: str
) -> None:
    """One rule for repos: what CreateTask refuses, RegisterTaskRepos refuses, naming the same field."""
    err = error_of(lambda: stub.CreateTask(tasks_pb2.CreateTaskRequest(name="n", repos=repos), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == [field]
    task = create(stub, "reg")
    req = tasks_pb2.RegisterTaskReposRequest(task_id=task.task_id, repos=repos)
    err = error_of(lambda: stub.RegisterTaskRepos(req, timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == [field]
    upd = tasks_pb2.UpdateTaskRequest(task_id=task.task_id, repos=repos)
    err = error_of(lambda: stub.UpdateTask(upd, timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == [field]
    assert stub.GetTask(tasks_pb2.GetTaskRequest(task_id=task.task_id), timeout=5).task == task


@pytest.mark.parametrize("final", ["cancelled", "completed", "failed"])
def test_register_repos_refused_for_a_finished_task(stub: tasks_pb2_grpc.TaskServiceStub, final: str) -> None:
    task = create(stub, "done")
    if final == "cancelled":
        stub.CancelTask(tasks_pb2.CancelTaskRequest(task_id=task.task_id), timeout=5)
    else:
        status = S.TASK_STATUS_COMPLETED if final == "completed" else S.TASK_STATUS_FAILED
        stub.UpdateTask(tasks_pb2.UpdateTaskRequest(task_id=task.task_id, status=status), timeout=5)
    before = stub.GetTask(tasks_pb2.GetTaskRequest(task_id=task.task_id), timeout=5).task
    events = stub.ListTaskEvents(tasks_pb2.ListTaskEventsRequest(task_id=task.task_id), timeout=5).events
    req = tasks_pb2.RegisterTaskReposRequest(task_id=task.task_id, repos=["o/a"], lobster_type="swe")
    err = error_of(lambda: stub.RegisterTaskRepos(req, timeout=5))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
    assert err.details() == f"Task {task.task_id} is {final}: only an unfinished task can register repositories"
    # Nothing stored changed: no broker fields, no event.
    after = stub.GetTask(tasks_pb2.GetTaskRequest(task_id=task.task_id), timeout=5).task
    assert after == before and not after.broker_repos and not after.HasField("broker_status")
    again = stub.ListTaskEvents(tasks_pb2.ListTaskEventsRequest(task_id=task.task_id), timeout=5).events
    assert list(again) == list(events)


def test_a_method_the_contract_lacks_answers_unimplemented(channel: grpc.Channel) -> None:
    # Every RPC of the contract is built (app.NOT_BUILT is empty; tests/unit/api covers a dispatcher
    # with an RPC not implemented): a method no service has is UNIMPLEMENTED, not a crash.
    call = channel.unary_unary("/lobwife.v1.CostService/NoSuchMethod")
    err = error_of(lambda: call(b"", timeout=5))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


def _collect(stream: Iterator[tasks_pb2.WatchTasksResponse], out: list[tasks_pb2.WatchTasksResponse], n: int) -> None:
    try:
        for msg in stream:
            out.append(msg)
            if len(out) >= n:
                return
    except grpc.RpcError:
        return


def test_watch_streams_changes_and_resumes_without_gaps(stub: tasks_pb2_grpc.TaskServiceStub) -> None:
    create(stub, "before watch")
    got: list[tasks_pb2.WatchTasksResponse] = []
    stream = stub.WatchTasks(tasks_pb2.WatchTasksRequest(from_now=True), timeout=30)
    reader = threading.Thread(target=_collect, args=(stream, got, 4))
    reader.start()
    time.sleep(0.3)  # let the stream subscribe
    create(stub, "a")
    stub.UpdateTask(tasks_pb2.UpdateTaskRequest(task_id="2", status=S.TASK_STATUS_ACTIVE), timeout=5)
    stub.CreateTaskEvent(tasks_pb2.CreateTaskEventRequest(task_id="2", event_type="note"), timeout=5)
    reader.join(10)
    stream.cancel()  # type: ignore[attr-defined]
    # from_now: first the position alone (after the one change so far), then only what came later.
    position, *got = got
    assert (position.cursor, position.HasField("event"), position.HasField("task")) == (1, False, False)
    assert [m.event.event_type for m in got] == ["created", "updated", "note"]
    assert got[1].task.status == S.TASK_STATUS_ACTIVE
    cursor = got[-1].cursor
    # While no one watches: more changes. A resumed watch gets exactly those.
    create(stub, "b")
    stub.CancelTask(tasks_pb2.CancelTaskRequest(task_id="2"), timeout=5)
    resumed: list[tasks_pb2.WatchTasksResponse] = []
    stream = stub.WatchTasks(tasks_pb2.WatchTasksRequest(after_cursor=cursor), timeout=30)
    _collect(stream, resumed, 2)
    stream.cancel()  # type: ignore[attr-defined]
    assert [(m.event.event_type, m.event.task_id) for m in resumed] == [("created", 3), ("cancelled", 2)]
    assert [m.cursor for m in resumed] == sorted(m.cursor for m in resumed) and resumed[0].cursor > cursor
    # Filtered by task, from the beginning of time (no cursor: every retained change).
    only: list[tasks_pb2.WatchTasksResponse] = []
    stream = stub.WatchTasks(tasks_pb2.WatchTasksRequest(after_cursor=0, task_id="T1"), timeout=30)
    t = threading.Thread(target=_collect, args=(stream, only, 2))
    t.start()
    time.sleep(0.3)
    stub.CreateTaskEvent(tasks_pb2.CreateTaskEventRequest(task_id="3", event_type="other"), timeout=5)
    stub.CreateTaskEvent(tasks_pb2.CreateTaskEventRequest(task_id="1", event_type="mine"), timeout=5)
    t.join(10)
    stream.cancel()  # type: ignore[attr-defined]
    # T1's own trail from its first event, then its later change; T3's change is not shown.
    assert [(m.event.event_type, m.event.task_id) for m in only] == [("created", 1), ("mine", 1)]


def test_watch_replays_many_changes_in_order(stub: tasks_pb2_grpc.TaskServiceStub) -> None:
    """A consumer that resumes from an old cursor gets everything, across replay pages."""
    create(stub, "x")
    add_events(stub, "1", 1100)
    got: list[tasks_pb2.WatchTasksResponse] = []
    stream = stub.WatchTasks(tasks_pb2.WatchTasksRequest(after_cursor=1), timeout=30)
    _collect(stream, got, 1100)
    stream.cancel()  # type: ignore[attr-defined]
    cursors = [m.cursor for m in got]
    assert len(got) == 1100 and cursors == sorted(cursors) and len(set(cursors)) == 1100


def test_unparseable_request_bytes_are_invalid_argument(channel: grpc.Channel) -> None:
    """A string field with invalid UTF-8 (which no generated stub would send) is refused cleanly."""
    raw_call = channel.unary_unary(
        "/lobwife.v1.TaskService/CreateTask",
        request_serializer=lambda b: b,
        response_deserializer=tasks_pb2.CreateTaskResponse.FromString,
    )
    err = error_of(lambda: raw_call(b"\x1a\x02\xff\xfe", timeout=5))  # field 3 (name) = bytes FF FE
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "UTF-8" in (err.details() or "")
    stub = tasks_pb2_grpc.TaskServiceStub(channel)
    assert list(stub.ListTasks(tasks_pb2.ListTasksRequest(), timeout=5).tasks) == []


def test_create_job_run_at_out_of_range_names_the_field(channel: grpc.Channel) -> None:
    from lobwife.v1 import jobs_pb2, jobs_pb2_grpc

    jobs = jobs_pb2_grpc.JobServiceStub(channel)
    job = jobs_pb2.Job(name="far", command=["true"], run_at=timestamp_pb2.Timestamp(seconds=9_223_372_036_855))
    err = error_of(lambda: jobs.CreateJob(jobs_pb2.CreateJobRequest(job=job), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert violations(err) == ["job.run_at"]
    with pytest.raises(grpc.RpcError) as missing:
        jobs.GetJob(jobs_pb2.GetJobRequest(name="far"), timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
