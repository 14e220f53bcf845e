"""Issue 9, part 2: what a new user trips over in the first ten minutes, over the transports it concerns.

The schedule text the API shows is what the jobs file takes; `since` is `created_after` over
HTTP; a reused request_id with another request is a conflict; an update that changes nothing
writes nothing; a control character in a name is refused, naming the field.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from lobwife.cli import build_parser
from lobwife.v1 import jobs_pb2, jobs_pb2_grpc, tasks_pb2, tasks_pb2_grpc
from tests.conftest import ServerProcess, start_server
from tests.grpc_util import error_of, violations
from tests.http_util import Reply, curl


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[tasks_pb2_grpc.TaskServiceStub]:
    with grpc.insecure_channel(server.grpc_addr) as ch:
        yield tasks_pb2_grpc.TaskServiceStub(ch)


def http_violations(r: Reply) -> list[str]:
    return [v["field"] for d in r.json.get("details", []) for v in d.get("field_violations", [])]


def tasks_url(srv: ServerProcess, tail: str = "") -> str:
    return f"{srv.http_url}/api/v1/tasks{tail}"


# --------------------------------------------------------------------------- 1. schedule text round trip


def test_the_jobs_file_takes_the_schedule_text_the_api_shows(tmp_path: Path) -> None:
    """Each schedule as GET /api/jobs/NAME shows it, written back as `schedule = ...`, is the same job."""
    first = tmp_path / "first.toml"
    first.write_text(
        """
[jobs.slow]
command = ["true"]
every = "60s"
[jobs.fast]
command = ["true"]
every = "1.5s"
enabled = false
[jobs.once]
command = ["true"]
at = 2030-06-01T09:30:00Z
[jobs.nightly]
command = ["true"]
schedule = "17 3 * * *"
time_zone = "Europe/London"
"""
    )
    srv = start_server(tmp_path / "state", "--jobs", str(first))
    try:
        shown = {n: curl("GET", f"{srv.http_url}/api/jobs/{n}").json for n in ("slow", "fast", "once", "nightly")}
        defs = {n: curl("GET", f"{srv.http_url}/api/v1/jobs/{n}").json for n in shown}
    finally:
        srv.terminate()
    texts = {n: job["schedule"] for n, job in shown.items()}
    assert texts == {
        "slow": "every 60s",
        "fast": "every 1.5s",
        "once": "at 2030-06-01T09:30:00Z",
        "nightly": "17 3 * * *",
    }
    # The same jobs, each schedule given as the text shown.
    second = tmp_path / "second.toml"
    second.write_text(
        "\n".join(
            f'[jobs.{n}]\ncommand = ["true"]\nschedule = "{texts[n]}"\n'
            + ("enabled = false\n" if n == "fast" else "")
            + ('time_zone = "Europe/London"\n' if n == "nightly" else "")
            for n in texts
        )
    )
    srv = start_server(tmp_path / "state", "--jobs", str(second))
    try:
        again = {n: curl("GET", f"{srv.http_url}/api/jobs/{n}").json["schedule"] for n in texts}
        redefs = {n: curl("GET", f"{srv.http_url}/api/v1/jobs/{n}").json for n in texts}
        assert "jobs file not used" not in srv.log()
    finally:
        srv.terminate()
    assert again == texts

    run_state = {"running", "last_run", "last_status", "last_duration", "run_count", "fail_count", "last_output"}
    run_state |= {"next_run", "next_runs"}

    def definition(job: dict[str, Any]) -> dict[str, Any]:
        # The definition (its trigger: cron, interval or run_at, included), not the state of its runs.
        return {k: v for k, v in job.items() if k not in run_state}

    assert defs["once"]["run_at"] == "2030-06-01T09:30:00Z" and defs["slow"]["interval"] == "60s"
    for n in texts:
        assert definition(redefs[n]) == definition(defs[n]), n


def test_a_bad_schedule_names_the_key_the_file_wrote(tmp_path: Path) -> None:
    """The server keeps going, and the log line names `jobs.slow.schedule`, not a field the user never wrote."""
    bad = tmp_path / "jobs.toml"
    bad.write_text('[jobs.slow]\ncommand = ["true"]\nschedule = "every 60 seconds please"\n')
    srv = start_server(tmp_path / "state", "--jobs", str(bad))
    try:
        deadline = time.monotonic() + 10
        while "jobs file not used" not in srv.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = srv.log()
    finally:
        srv.terminate()
    assert "jobs file not used" in log and "jobs.slow.schedule: expected a duration" in log
    assert "jobs.slow.cron" not in log and "jobs.slow.interval" not in log


# --------------------------------------------------------------------------- 2. since = created_after


def test_since_and_until_are_created_after_and_created_before_over_http(server: ServerProcess) -> None:
    assert curl("POST", tasks_url(server), {"name": "old"}).status == 201
    time.sleep(0.05)
    middle = curl("POST", tasks_url(server), {"name": "middle"}).json["created_at"]
    time.sleep(0.05)
    assert curl("POST", tasks_url(server), {"name": "new"}).status == 201

    def names(query: str) -> list[str]:
        r = curl("GET", tasks_url(server, "?" + query))
        assert r.status == 200, r.body
        return [t["name"] for t in r.json]

    assert names(f"since={middle}") == names(f"created_after={middle}") == ["new", "middle"]
    assert names(f"until={middle}") == names(f"created_before={middle}") == ["old"]
    assert names(f"since={middle}&until={middle}") == []
    assert names("since=2999-01-01T00:00:00Z") == []
    # A mistake names the parameter as written; one field under two names is refused, not guessed.
    r = curl("GET", tasks_url(server, "?since=yesterday-ish"))
    assert r.status == 400 and http_violations(r) == ["since"] and r.json["error"].startswith("since: ")
    r = curl("GET", tasks_url(server, f"?since={middle}&created_after={middle}"))
    assert r.status == 400 and http_violations(r) == ["created_after"] and "'since'" in r.json["error"]
    # The CLI spells it both ways too.
    parser = build_parser()
    a = parser.parse_args(["tasks", "list", "--since", "2h", "--until", "2025-01-31"])
    b = parser.parse_args(["tasks", "list", "--created-after", "2h", "--created-before", "2025-01-31"])
    assert abs((a.since - b.since).total_seconds()) < 60 and a.until == b.until


# --------------------------------------------------------------------------- 3. request_id reuse


def test_a_request_id_reused_with_another_request_is_a_conflict(
    server: ServerProcess, stub: tasks_pb2_grpc.TaskServiceStub
) -> None:
    req = tasks_pb2.CreateTaskRequest(request_id="r-1", name="Fix login", repos=["org/app"], actor="me")
    first = stub.CreateTask(req, timeout=5).task
    # The same request again, over either transport, is the first task (idempotent).
    assert stub.CreateTask(req, timeout=5).task == first
    body = {"request_id": "r-1", "name": "Fix login", "repos": ["org/app"], "actor": "me", "type": "swe"}
    r = curl("POST", tasks_url(server), body)
    assert r.status == 201 and r.json["id"] == first.id
    # Another request under the same id is refused, naming request_id, and creates nothing.
    other = tasks_pb2.CreateTaskRequest(request_id="r-1", name="Fix logout", repos=["org/app"], actor="me")
    err = error_of(lambda: stub.CreateTask(other, timeout=5))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and violations(err) == ["request_id"]
    assert "T1" in (err.details() or "")
    r = curl("POST", tasks_url(server), {**body, "estimate_minutes": 30})
    assert r.status == 409 and http_violations(r) == ["request_id"] and r.json["error"].startswith("request_id: ")
    assert [t["id"] for t in curl("GET", tasks_url(server)).json] == [first.id]
    events = curl("GET", tasks_url(server, f"/{first.id}/events")).json
    assert [e["event_type"] for e in events] == ["created"]
    # A new id is a new task.
    assert stub.CreateTask(tasks_pb2.CreateTaskRequest(request_id="r-2", name="Fix logout"), timeout=5).task.id == 2


# --------------------------------------------------------------------------- 4. no-op updates


def test_an_update_that_changes_nothing_writes_nothing(
    server: ServerProcess, stub: tasks_pb2_grpc.TaskServiceStub
) -> None:
    made = curl("POST", tasks_url(server), {"name": "x", "assigned_to": "w1", "repos": ["o/r"]}).json
    r = curl("PATCH", tasks_url(server, "/T1"), {"status": "active", "actor": "boss"})
    assert r.status == 200 and r.json["updated"] == ["status"]
    before = curl("GET", tasks_url(server, "/T1")).json
    assert before["updated_at"] != made["updated_at"]
    events = len(curl("GET", tasks_url(server, "/T1/events")).json)
    # The same values again: the answer as always, `updated: []`, no event, updated_at as it was.
    r = curl("PATCH", tasks_url(server, "/T1"), {"status": "active", "assigned_to": "w1", "repos": ["o/r"]})
    assert r.status == 200 and r.json["updated"] == [] and r.json["task_id"] == "T1"
    assert r.json["task"]["updated_at"] == before["updated_at"]
    got = stub.UpdateTask(
        tasks_pb2.UpdateTaskRequest(
            task_id="1",
            name="x",
            status=tasks_pb2.TASK_STATUS_ACTIVE,
            slug="",  # cleared, as it already is
            update_mask=field_mask_pb2.FieldMask(paths=["name", "status", "slug"]),
        ),
        timeout=5,
    )
    assert list(got.updated) == [] and got.task.updated_at.ToJsonString() == before["updated_at"]
    assert curl("GET", tasks_url(server, "/T1")).json == before
    assert len(curl("GET", tasks_url(server, "/T1/events")).json) == events
    # A change beside unchanged fields names only the change, in the answer and the event.
    r = curl("PATCH", tasks_url(server, "/T1"), {"status": "active", "assigned_to": "w2"})
    assert r.json["updated"] == ["assigned_to"]
    latest = curl("GET", tasks_url(server, "/T1/events")).json[0]
    assert latest["event_type"] == "updated" and latest["detail"] == "Updated: assigned_to"


# --------------------------------------------------------------------------- 5. control characters


@pytest.mark.parametrize("bad", ["a\0b", "tab\there", "two\nlines", "esc\x1b[31m", "del\x7f", "c1\x85x"])
def test_control_characters_in_a_task_name_are_refused(
    server: ServerProcess, stub: tasks_pb2_grpc.TaskServiceStub, bad: str
) -> None:
    err = error_of(lambda: stub.CreateTask(tasks_pb2.CreateTaskRequest(name=bad), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == ["name"]
    assert "control character" in (err.details() or "")
    r = curl("POST", tasks_url(server), {"name": bad})
    assert r.status == 400 and http_violations(r) == ["name"]
    # Renaming to it is refused as well; the field named over HTTP is the body key.
    assert curl("POST", tasks_url(server), {"name": "ok"}).status == 201
    r = curl("PATCH", tasks_url(server, "/T1"), {"name": bad})
    assert r.status == 400 and http_violations(r) == ["name"]
    err = error_of(lambda: stub.UpdateTask(tasks_pb2.UpdateTaskRequest(task_id="T1", name=bad), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == ["name"]
    assert curl("GET", tasks_url(server, "/T1")).json["name"] == "ok"
    assert [t["name"] for t in curl("GET", tasks_url(server)).json] == ["ok"]


def test_multi_line_text_keeps_tabs_and_newlines_and_names_stay_stripped(
    server: ServerProcess, stub: tasks_pb2_grpc.TaskServiceStub
) -> None:
    # A trailing newline (a shell's) is surrounding whitespace, stripped as always.
    assert curl("POST", tasks_url(server), {"name": "  Fix login\n"}).json["name"] == "Fix login"
    detail = "step 1\tok\r\nstep 2\tok\n"
    r = curl("POST", tasks_url(server, "/T1/events"), {"event_type": "progress", "detail": detail})
    assert r.status == 201 and r.json["event"]["detail"] == detail.strip()
    r = curl("POST", tasks_url(server, "/T1/events"), {"event_type": "progress", "detail": "bell\x07"})
    assert r.status == 400 and http_violations(r) == ["detail"]
    r = curl("POST", tasks_url(server, "/T1/events"), {"event_type": "pro\0gress"})
    assert r.status == 400 and http_violations(r) == ["event_type"]
    err = error_of(lambda: stub.CancelTask(tasks_pb2.CancelTaskRequest(task_id="T1", reason="a\0b"), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == ["reason"]


def test_job_names_refuse_control_characters(server: ServerProcess) -> None:
    """A job name was already strict, but its `$` also matched before a trailing newline."""
    with grpc.insecure_channel(server.grpc_addr) as ch:
        jobs = jobs_pb2_grpc.JobServiceStub(ch)
        for name in ("nightly\n", "night\0ly"):
            job = jobs_pb2.Job(name=name, command=["true"], cron="0 3 * * *", enabled=True)
            err = error_of(lambda job=job: jobs.CreateJob(jobs_pb2.CreateJobRequest(job=job), timeout=5))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == ["job.name"]
    r = curl("POST", f"{server.http_url}/api/v1/jobs", {"name": "nightly\n", "command": ["true"], "cron": "0 3 * * *"})
    assert r.status == 400 and http_violations(r) == ["job.name"]
    assert [j["name"] for j in curl("GET", f"{server.http_url}/api/v1/jobs").json["jobs"] if "night" in j["name"]] == []
