"""The contract's field rules over both transports of the real server: REQUIRED fields, OUTPUT_ONLY mask paths."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from lobwife.v1 import jobs_pb2, jobs_pb2_grpc, tasks_pb2, tasks_pb2_grpc
from tests.conftest import ServerProcess
from tests.http_util import Reply, curl


def grpc_error(call: Any) -> tuple[grpc.StatusCode, str, list[tuple[str, str]]]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    err: Any = info.value
    status = rpc_status.from_call(err)
    found: list[tuple[str, str]] = []
    for d in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if d.Unpack(bad):
            found += [(v.field, v.description) for v in bad.field_violations]
    return err.code(), err.details(), found


def http_error(reply: Reply) -> tuple[int, str, list[tuple[str, str]]]:
    body = reply.json
    found = [(v["field"], v["description"]) for d in body.get("details", []) for v in d.get("field_violations", [])]
    return reply.status, body["error"], found


@pytest.fixture
def stubs(channel: grpc.Channel) -> tuple[tasks_pb2_grpc.TaskServiceStub, jobs_pb2_grpc.JobServiceStub]:
    return tasks_pb2_grpc.TaskServiceStub(channel), jobs_pb2_grpc.JobServiceStub(channel)


def test_a_missing_required_field_is_named_the_same_over_grpc_and_http(server: ServerProcess, stubs: Any) -> None:
    tasks, jobs = stubs
    url = server.http_url
    missing = (grpc.StatusCode.INVALID_ARGUMENT, "name: is required", [("name", "is required")])
    assert grpc_error(lambda: tasks.CreateTask(tasks_pb2.CreateTaskRequest(actor="me"), timeout=5)) == missing
    assert http_error(curl("POST", url + "/api/v1/tasks", {"actor": "me"})) == (400, *missing[1:])
    assert curl("GET", url + "/api/v1/tasks").json == []  # nothing was stored

    t = tasks.CreateTask(tasks_pb2.CreateTaskRequest(name="t"), timeout=5).task
    repos = (grpc.StatusCode.INVALID_ARGUMENT, "repos: is required: at least one item")
    code, message, violations = grpc_error(
        lambda: tasks.RegisterTaskRepos(tasks_pb2.RegisterTaskReposRequest(task_id=t.task_id), timeout=5)
    )
    assert (code, message, violations) == (*repos, [("repos", "is required: at least one item")])
    status, message, violations = http_error(curl("POST", url + f"/api/v1/tasks/{t.task_id}/register", {}))
    assert (status, message, violations) == (400, repos[1], [("repos", "is required: at least one item")])

    event = ("event_type: is required", [("event_type", "is required")])
    req = tasks_pb2.CreateTaskEventRequest(task_id=t.task_id, detail="d")
    assert grpc_error(lambda: tasks.CreateTaskEvent(req, timeout=5)) == (grpc.StatusCode.INVALID_ARGUMENT, *event)
    assert http_error(curl("POST", url + f"/api/v1/tasks/{t.task_id}/events", {"detail": "d"})) == (400, *event)

    # A message field: CreateJob without its job.
    job = (grpc.StatusCode.INVALID_ARGUMENT, "job: is required", [("job", "is required")])
    assert grpc_error(lambda: jobs.CreateJob(jobs_pb2.CreateJobRequest(request_id="r"), timeout=5)) == job
    # The empty task id the path cannot carry: gRPC alone can send it.
    code, message, _ = grpc_error(lambda: tasks.GetTask(tasks_pb2.GetTaskRequest(), timeout=5))
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "task_id: is required")
    # A blank (not empty) name is the service's to refuse, in its words.
    code, message, _ = grpc_error(lambda: tasks.CreateTask(tasks_pb2.CreateTaskRequest(name="  "), timeout=5))
    assert message == "name: must not be blank"
    assert http_error(curl("POST", url + "/api/v1/tasks", {"name": "  "}))[1] == "name: must not be blank"


def test_output_only_fields_are_refused_in_update_masks(server: ServerProcess, stubs: Any) -> None:
    tasks, jobs = stubs
    url = server.http_url
    t = tasks.CreateTask(tasks_pb2.CreateTaskRequest(name="t"), timeout=5).task
    for path in ("created_at", "updated_at", "created_by"):  # (the broker fields are updatable: PATCH)
        req = tasks_pb2.UpdateTaskRequest(task_id="1", update_mask=field_mask_pb2.FieldMask(paths=["status", path]))
        want = (f"update_mask: {path} is output only", [("update_mask", f"{path} is output only")])
        assert grpc_error(lambda req=req: tasks.UpdateTask(req, timeout=5)) == (grpc.StatusCode.INVALID_ARGUMENT, *want)
        body = {"status": "active", "update_mask": f"status,{path}"}
        assert http_error(curl("PATCH", url + "/api/v1/tasks/1", body)) == (400, *want)
    assert tasks.GetTask(tasks_pb2.GetTaskRequest(task_id="1"), timeout=5).task == t  # nothing changed

    job = jobs_pb2.Job(name="nightly", command=["true"], cron="0 3 * * *")
    jobs.CreateJob(jobs_pb2.CreateJobRequest(job=job), timeout=5)
    for path in ("running", "run_count", "source"):
        req = jobs_pb2.UpdateJobRequest(
            job=jobs_pb2.Job(name="nightly", description="d"),
            update_mask=field_mask_pb2.FieldMask(paths=["description", path]),
        )
        want = (f"update_mask: {path} is output only", [("update_mask", f"{path} is output only")])
        assert grpc_error(lambda req=req: jobs.UpdateJob(req, timeout=5)) == (grpc.StatusCode.INVALID_ARGUMENT, *want)
    # Over HTTP the body's keys are the mask: an output-only key sent back is refused the same way.
    r = curl("PATCH", url + "/api/v1/jobs/nightly", {"description": "d", "running": True})
    assert http_error(r) == (400, "update_mask: running is output only", [("update_mask", "running is output only")])
    # The identifier names the job and is passed over; a definition field still changes.
    req = jobs_pb2.UpdateJobRequest(
        job=jobs_pb2.Job(name="nightly", description="new"),
        update_mask=field_mask_pb2.FieldMask(paths=["name", "description"]),
    )
    assert jobs.UpdateJob(req, timeout=5).job.description == "new"
    r = curl("PATCH", url + "/api/v1/jobs/nightly", {"schedule": "every 5m"})
    assert http_error(r)[:2] == (400, "update_mask: 'schedule' is not a field of a job's definition")
