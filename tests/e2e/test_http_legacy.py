"""The Tasks rows and /health of shared/LEGACY_HTTP.md, against real curl, field for field."""

from __future__ import annotations

import subprocess

import grpc
import pytest

from lobwife.v1 import tasks_pb2, tasks_pb2_grpc
from tests.conftest import ServerProcess
from tests.http_util import curl

TASK_FIELDS = {
    "id",
    "task_id",
    "name",
    "slug",
    "type",
    "status",
    "priority",
    "model",
    "assigned_to",
    "repos",
    "discord_thread_id",
    "estimate_minutes",
    "requires_qa",
    "workflow",
    "created_at",
    "updated_at",
    "queued_at",
    "assigned_at",
    "completed_at",
    "broker_repos",
    "broker_status",
    "token_count",
    "broker_registered_at",
}


def api(server: ServerProcess, path: str) -> str:
    return server.http_url + path


def is_error(reply: object, status: int, *needles: str) -> None:
    assert reply.status == status, (reply.status, reply.body)  # type: ignore[attr-defined]
    body = reply.json  # type: ignore[attr-defined]
    assert isinstance(body.get("error"), str) and body["error"]
    assert isinstance(body.get("code"), int) and body.get("message") == body["error"]
    for n in needles:
        assert n in body["error"], (n, body)


def count_tasks(server: ServerProcess) -> int:
    return len(curl("GET", api(server, "/api/v1/tasks")).json)


def test_create_returns_201_with_numeric_id_and_full_object(server: ServerProcess) -> None:
    r = curl(
        "POST",
        api(server, "/api/v1/tasks"),
        {
            "name": "Fix login",
            "estimate_minutes": 30,
            "requires_qa": True,
            "repos": ["o/r"],
            "actor": "lobboss",
            "ignored_field": 1,
        },
    )
    assert r.status == 201 and r.content_type.startswith("application/json")
    t = r.json
    assert t["id"] == 1 and t["task_id"] == "T1"
    assert set(t) >= TASK_FIELDS
    assert (t["type"], t["status"], t["priority"]) == ("swe", "queued", "normal")
    assert t["estimate_minutes"] == 30 and t["requires_qa"] is True and t["repos"] == ["o/r"]
    assert t["model"] is None and t["assigned_at"] is None and t["broker_repos"] == []
    assert isinstance(t["created_at"], str) and t["created_at"].endswith("Z")
    assert b'"estimate_minutes":30,' in r.body, "a whole estimate stays a JSON integer"


def test_fractional_estimate_round_trips(server: ServerProcess) -> None:
    # The legacy contract's estimate is a JSON number: 12.5 stays 12.5, through create, patch and get.
    t = curl("POST", api(server, "/api/v1/tasks"), {"name": "half", "estimate_minutes": 12.5}).json
    assert t["estimate_minutes"] == 12.5
    assert curl("GET", api(server, f"/api/v1/tasks/{t['id']}")).json["estimate_minutes"] == 12.5
    r = curl("PATCH", api(server, f"/api/v1/tasks/{t['id']}"), {"estimate_minutes": 0.25})
    assert r.status == 200 and r.json["updated"] == ["estimate_minutes"]
    assert curl("GET", api(server, f"/api/v1/tasks/{t['id']}")).json["estimate_minutes"] == 0.25
    r = curl("PATCH", api(server, f"/api/v1/tasks/{t['id']}"), {"estimate_minutes": None})
    assert r.status == 200 and curl("GET", api(server, f"/api/v1/tasks/{t['id']}")).json["estimate_minutes"] is None


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x", "status": "bogus"}, "status"),
        ({"name": 5}, "name"),
        ({"name": "x", "estimate_minutes": "abc"}, "estimate_minutes"),
        ({"name": "x", "estimate_minutes": -0.5}, "estimate_minutes"),
        ({"name": "x", "requires_qa": "yes"}, "requires_qa"),
        ({"name": "x", "repos": "o/r"}, "repos"),
        ({"name": "x", "estimate_minutes": 2**70}, "estimate_minutes"),
        ({"name": "x" * 501}, "name"),
        (["not", "an", "object"], "object"),
    ],
)
def test_create_bad_input_is_400_naming_the_field(server: ServerProcess, body: object, needle: str) -> None:
    is_error(curl("POST", api(server, "/api/v1/tasks"), body), 400, needle)  # type: ignore[arg-type]
    assert count_tasks(server) == 0


def test_malformed_json_invalid_utf8_and_huge_bodies(server: ServerProcess) -> None:
    curl("POST", api(server, "/api/v1/tasks"), {"name": "keep me"})
    is_error(curl("POST", api(server, "/api/v1/tasks"), '{"name": '), 400, "invalid JSON")
    is_error(curl("POST", api(server, "/api/v1/tasks"), b'{"name": "\xff\xfe"}'), 400)
    is_error(curl("PATCH", api(server, "/api/v1/tasks/1"), "not json"), 400, "invalid JSON")
    big = b'{"name": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    r = curl("POST", api(server, "/api/v1/tasks"), big)
    assert r.status == 413 and "error" in r.json
    tasks = curl("GET", api(server, "/api/v1/tasks")).json
    assert [t["name"] for t in tasks] == ["keep me"]


def test_list_is_a_newest_first_array_with_filters_and_limit(server: ServerProcess) -> None:
    for name, typ in [("a", "swe"), ("b", "qa"), ("c", "swe")]:
        assert curl("POST", api(server, "/api/v1/tasks"), {"name": name, "type": typ}).status == 201
    curl("PATCH", api(server, "/api/v1/tasks/1"), {"status": "active"})
    r = curl("GET", api(server, "/api/v1/tasks"))
    assert r.status == 200 and [t["task_id"] for t in r.json] == ["T3", "T2", "T1"]
    assert [t["name"] for t in curl("GET", api(server, "/api/v1/tasks?type=swe")).json] == ["c", "a"]
    assert [t["name"] for t in curl("GET", api(server, "/api/v1/tasks?status=active")).json] == ["a"]
    assert [t["name"] for t in curl("GET", api(server, "/api/v1/tasks?status=queued&type=swe&limit=1")).json] == ["c"]
    assert len(curl("GET", api(server, "/api/v1/tasks?limit=1000&whatever=1")).json) == 3
    is_error(curl("GET", api(server, "/api/v1/tasks?limit=-1")), 400, "limit")
    is_error(curl("GET", api(server, "/api/v1/tasks?limit=abc")), 400, "limit")
    is_error(curl("GET", api(server, "/api/v1/tasks?status=nope")), 400, "status")


def test_list_limit_defaults_to_100_and_caps_at_500(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_addr) as ch:
        stub = tasks_pb2_grpc.TaskServiceStub(ch)
        futures = [stub.CreateTask.future(tasks_pb2.CreateTaskRequest(name=f"t{i}"), timeout=30) for i in range(510)]
        for f in futures:
            f.result()
    assert len(curl("GET", api(server, "/api/v1/tasks")).json) == 100
    assert len(curl("GET", api(server, "/api/v1/tasks?limit=100000")).json) == 500


def test_get_by_number_or_T_and_errors(server: ServerProcess) -> None:
    curl("POST", api(server, "/api/v1/tasks"), {"name": "x"})
    assert curl("GET", api(server, "/api/v1/tasks/1")).json["name"] == "x"
    assert curl("GET", api(server, "/api/v1/tasks/T1")).json["task_id"] == "T1"
    r = curl("GET", api(server, "/api/v1/tasks/42"))
    is_error(r, 404)
    assert r.json["error"] == "Task T42 not found"
    for bad in ("T", "T-1", "Tabc", "99999999999999999999"):
        is_error(curl("GET", api(server, f"/api/v1/tasks/{bad}")), 400, "task_id")


def test_patch_updates_named_fields_logs_actor_and_stamps(server: ServerProcess) -> None:
    curl("POST", api(server, "/api/v1/tasks"), {"name": "x"})
    r = curl(
        "PATCH",
        api(server, "/api/v1/tasks/1"),
        {"status": "active", "assigned_to": "lobster-1", "actor": "lobboss", "unknown": True},
    )
    assert r.status == 200 and r.json["id"] == 1 and r.json["task_id"] == "T1"
    assert r.json["updated"] == ["status", "assigned_to"]
    t = curl("GET", api(server, "/api/v1/tasks/1")).json
    assert t["status"] == "active" and t["assigned_to"] == "lobster-1" and t["assigned_at"] is not None
    ev = curl("GET", api(server, "/api/v1/tasks/1/events")).json[0]
    assert (ev["event_type"], ev["actor"]) == ("updated", "lobboss") and "status" in ev["detail"]
    # null clears a field
    r = curl("PATCH", api(server, "/api/v1/tasks/T1"), {"assigned_to": None})
    assert r.json["updated"] == ["assigned_to"]
    assert curl("GET", api(server, "/api/v1/tasks/1")).json["assigned_to"] is None


def test_patch_errors(server: ServerProcess) -> None:
    curl("POST", api(server, "/api/v1/tasks"), {"name": "x"})
    is_error(curl("PATCH", api(server, "/api/v1/tasks/1"), {"status": "bogus"}), 400, "status")
    is_error(curl("PATCH", api(server, "/api/v1/tasks/1"), {}), 400)
    is_error(curl("PATCH", api(server, "/api/v1/tasks/1"), {"nothing_valid": 1}), 400)
    is_error(curl("PATCH", api(server, "/api/v1/tasks/1"), {"name": ""}), 400, "name")
    is_error(curl("PATCH", api(server, "/api/v1/tasks/9"), {"name": "y"}), 404)
    assert curl("DELETE", api(server, "/api/v1/tasks/1")).status == 200
    is_error(curl("PATCH", api(server, "/api/v1/tasks/1"), {"name": "y"}), 409, "cancelled")
    assert curl("GET", api(server, "/api/v1/tasks/1")).json["name"] == "x"


def test_delete_is_a_soft_cancel(server: ServerProcess) -> None:
    curl("POST", api(server, "/api/v1/tasks"), {"name": "x"})
    r = curl("DELETE", api(server, "/api/v1/tasks/1"))
    assert r.status == 200 and r.json["id"] == 1 and r.json["task_id"] == "T1" and r.json["status"] == "cancelled"
    assert curl("GET", api(server, "/api/v1/tasks/1")).json["status"] == "cancelled"
    is_error(curl("DELETE", api(server, "/api/v1/tasks/1")), 409)
    curl("POST", api(server, "/api/v1/tasks"), {"name": "done", "status": "completed"})
    is_error(curl("DELETE", api(server, "/api/v1/tasks/2")), 409)
    is_error(curl("DELETE", api(server, "/api/v1/tasks/3")), 404)


def test_events_post_and_list(server: ServerProcess) -> None:
    curl("POST", api(server, "/api/v1/tasks"), {"name": "x", "actor": "boss"})
    r = curl("POST", api(server, "/api/v1/tasks/T1/events"), {"event_type": "progress", "detail": "50%", "actor": "l1"})
    assert r.status == 201 and r.json["status"] == "logged" and r.json["task_id"] == "T1"
    events = curl("GET", api(server, "/api/v1/tasks/1/events")).json
    assert [e["event_type"] for e in events] == ["progress", "created"]
    e = events[0]
    assert set(e) >= {"id", "task_id", "event_type", "detail", "actor", "created_at"}
    assert e["task_id"] == 1 and e["detail"] == "50%" and e["actor"] == "l1" and isinstance(e["id"], int)
    assert events[1]["actor"] == "boss"
    is_error(curl("POST", api(server, "/api/v1/tasks/1/events"), {"detail": "no type"}), 400, "event_type")
    is_error(curl("POST", api(server, "/api/v1/tasks/7/events"), {"event_type": "x"}), 404)
    is_error(curl("GET", api(server, "/api/v1/tasks/7/events")), 404)


def test_register_sets_broker_fields(server: ServerProcess) -> None:
    curl("POST", api(server, "/api/v1/tasks"), {"name": "x"})
    r = curl("POST", api(server, "/api/v1/tasks/1/register"), {"repos": ["o/a"], "lobster_type": "swe"})
    assert r.status == 200 and r.json["status"] == "registered" and r.json["task_id"] == "T1"
    t = curl("GET", api(server, "/api/v1/tasks/1")).json
    assert t["broker_repos"] == ["o/a"] and t["broker_status"] == "active" and t["broker_registered_at"]
    assert curl("GET", api(server, "/api/v1/tasks/1/events")).json[0]["event_type"] == "broker_registered"
    is_error(curl("POST", api(server, "/api/v1/tasks/1/register"), {"repos": []}), 400, "repos")
    is_error(curl("POST", api(server, "/api/v1/tasks/1/register"), {"lobster_type": "swe"}), 400, "repos")
    is_error(curl("POST", api(server, "/api/v1/tasks/5/register"), {"repos": ["o/a"]}), 404)


def _fields(reply: object) -> list[str]:
    body = reply.json  # type: ignore[attr-defined]
    return [v["field"] for d in body.get("details", []) for v in d["field_violations"]]


def test_register_validates_repos_and_refuses_finished_tasks(server: ServerProcess) -> None:
    curl("POST", api(server, "/api/v1/tasks"), {"name": "a"})
    before = curl("GET", api(server, "/api/v1/tasks/1")).json
    # The repos rule of create and update: a NUL is not a repository.
    for path in ("/api/v1/tasks/1/register", "/api/v1/tasks"):
        r = curl("POST", api(server, path), {"name": "b", "repos": ["o/a", "\u0000"]})
        is_error(r, 400, "repos[1]")
        assert _fields(r) == ["repos[1]"]
    assert curl("DELETE", api(server, "/api/v1/tasks/1")).status == 200
    cancelled = curl("GET", api(server, "/api/v1/tasks/1")).json
    events = curl("GET", api(server, "/api/v1/tasks/1/events")).json
    r = curl("POST", api(server, "/api/v1/tasks/1/register"), {"repos": ["\u0000"]})
    is_error(r, 400, "repos[0]")
    r = curl("POST", api(server, "/api/v1/tasks/T1/register"), {"repos": ["o/a"], "lobster_type": "swe"})
    is_error(r, 409, "Task T1 is cancelled: only an unfinished task can register repositories")
    assert r.json["code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    after = curl("GET", api(server, "/api/v1/tasks/1")).json
    assert after == cancelled and after["broker_repos"] == [] and after["broker_status"] is None
    assert before["broker_status"] is None
    assert curl("GET", api(server, "/api/v1/tasks/1/events")).json == events
    assert curl("GET", api(server, "/api/v1/tasks")).json[0]["id"] == 1  # the refused create stored nothing


def test_patch_takes_the_old_daemons_broker_fields(server: ServerProcess) -> None:
    # The old Python client's register_broker(): once 400 "no valid field to update" (and lobboss then
    # started no worker). The broker is not configured here: the registration is kept all the same.
    curl("POST", api(server, "/api/v1/tasks"), {"name": "a"})
    body = {
        "broker_repos": ["o/a"],
        "broker_status": "active",
        "broker_registered_at": "2026-02-16T12:00:00Z",
        "token_count": 0,
    }
    r = curl("PATCH", api(server, "/api/v1/tasks/1"), body)
    assert r.status == 200 and r.json["updated"] == ["broker_repos", "broker_status", "broker_registered_at"], r.body
    t = curl("GET", api(server, "/api/v1/tasks/1")).json
    assert (t["broker_repos"], t["broker_status"], t["broker_registered_at"]) == (
        ["o/a"],
        "active",
        "2026-02-16T12:00:00Z",
    )
    assert curl("GET", api(server, "/api/tasks")).json["T1"]["repos"] == ["o/a"]
    r = curl("PATCH", api(server, "/api/v1/tasks/1"), {"status": "active", "broker_status": "inactive"})
    assert r.status == 200 and r.json["updated"] == ["status", "broker_status"], r.body
    assert curl("GET", api(server, "/api/tasks")).json == {}
    is_error(curl("PATCH", api(server, "/api/v1/tasks/1"), {"broker_status": "gone"}), 400, "broker_status")
    assert curl("PATCH", api(server, "/api/v1/tasks/1"), {"token_count": 7}).json["updated"] == []


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", "/api/v1/tasks?created_after=9999-12-31T23:59:59-00:01", None, "created_after"),
        ("GET", "/api/v1/tasks?created_before=0000-12-31T23:59:59Z", None, "created_before"),
        ("PATCH", "/api/v1/tasks/1", {"completed_at": "9999-12-31T23:59:59-01:00"}, "completed_at"),
        ("PATCH", "/api/v1/tasks/1", {"assigned_at": "0001-01-01T00:00:00+00:01"}, "assigned_at"),
    ],
)
def test_timestamps_out_of_range_are_400_naming_the_field(
    server: ServerProcess, method: str, path: str, body: object, field: str
) -> None:
    curl("POST", api(server, "/api/v1/tasks"), {"name": "a"})
    before = curl("GET", api(server, "/api/v1/tasks/1")).json
    r = curl(method, api(server, path), body)  # type: ignore[arg-type]
    assert r.status == 400, r.body
    assert _fields(r) == [field] and "out of range" in r.json["error"]
    assert curl("GET", api(server, "/api/v1/tasks/1")).json == before


def test_health_document(server: ServerProcess) -> None:
    curl("POST", api(server, "/api/v1/tasks"), {"name": "x"})
    r = curl("GET", api(server, "/health"))
    assert r.status == 200
    h = r.json
    assert h["status"] == "ok" and isinstance(h["uptime"], int | float) and h["jobs_running"] == 0
    assert set(h["broker"]) >= {"enabled", "app_id", "active_tasks", "total_tokens_issued", "audit_entries"}
    assert h["db"]["ok"] is True and h["db"]["task_count"] == 1 and h["db"]["size_bytes"] > 0


def test_dashboard_metrics_and_unknown_routes(server: ServerProcess) -> None:
    r = curl("GET", api(server, "/"))
    assert r.status == 200 and b"lobwife" in r.body
    m = curl("GET", api(server, "/metrics"))
    assert m.status == 200 and b"lobwife_rpc_calls" in m.body
    is_error(curl("GET", api(server, "/api/v1/nope")), 404)
    # Every service of the contract is built now (app.NOT_BUILT is empty): the last to land answers.
    r = curl("GET", api(server, "/api/v1/costs"))
    assert r.status == 200 and r.json == {"costs": [], "next_page_token": ""}
    assert curl("GET", api(server, "/api/tasks")).json == {}  # the broker's registrations: none yet


def test_watch_over_http_ndjson_and_sse(server: ServerProcess) -> None:
    curl("POST", api(server, "/api/v1/tasks"), {"name": "a"})
    curl("POST", api(server, "/api/v1/tasks"), {"name": "b"})
    # NDJSON from cursor 1 replays the second create (no cursor would replay both).
    out = subprocess.run(
        ["curl", "-sN", "--max-time", "2", api(server, "/api/v1/tasks:watch?after_cursor=1")],
        capture_output=True,
        text=True,
        timeout=10,
    )
    import json

    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert [(m["cursor"], m["event"]["event_type"], m["task"]["name"]) for m in lines] == [(2, "created", "b")]
    sse = subprocess.run(
        [
            "curl",
            "-sN",
            "--max-time",
            "2",
            "-H",
            "Accept: text/event-stream",
            "-H",
            "Last-Event-ID: 1",
            api(server, "/api/v1/tasks:watch"),
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert "id: 2" in sse.stdout and "data: " in sse.stdout
