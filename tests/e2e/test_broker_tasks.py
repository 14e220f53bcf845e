"""The tasks domain and the token broker together, end to end: the real server pointed at the GitHub
stand-in, called the way lobmob's old clients call it.

- ``register_broker()`` of the old Python client: ``PATCH /api/v1/tasks/42`` with the broker fields,
  then the worker pod's ``POST /api/token {"task_id": "T42"}``;
- a registration ends when its task is deregistered, completed or cancelled: later token calls are
  403, the fake GitHub sees the revocation (``DELETE /installation/token``), the audit says why;
- with ``--auth enforce`` a task credential dies with its task's registration (401).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from lobwife.v1 import tasks_pb2, tasks_pb2_grpc
from lobwife_server.auth import mint_from_state_dir
from tests.conftest import ServerProcess, start_server
from tests.fakes.github import FakeGitHub
from tests.http_util import Reply, curl

REGISTERED_AT = "2026-02-16T12:00:00Z"


def serve(state: Path, gh: FakeGitHub, *args: str) -> ServerProcess:
    return start_server(state, *args, env={**gh.env(), "LOBWIFE_BROKER_GITHUB_TIMEOUT": "3"})


@pytest.fixture
def srv(tmp_path: Path, gh: FakeGitHub) -> Iterator[ServerProcess]:
    server = serve(tmp_path / "state", gh)
    yield server
    if server.proc.poll() is None:
        server.terminate()


def call(srv: ServerProcess, method: str, path: str, body: Any = None, token: str | None = None) -> Reply:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return curl(method, srv.http_url + path, body, headers=headers)


def fields_of(r: Reply) -> list[str]:
    return [v["field"] for d in r.json.get("details", []) for v in d.get("field_violations", [])]


def token_of(srv: ServerProcess, ref: str) -> Reply:
    return call(srv, "POST", "/api/token", {"task_id": ref})


def audit(srv: ServerProcess, ref: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = call(srv, "GET", f"/api/token/audit?task_id={ref}&limit=1000").json
    return entries


def event_types(srv: ServerProcess, number: int) -> list[str]:
    return [e["event_type"] for e in call(srv, "GET", f"/api/v1/tasks/{number}/events").json]


def within(seconds: float, done: Callable[[], bool]) -> bool:
    """Polls ``done`` until it holds or ``seconds`` pass (bounded: no test waits longer)."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def register_broker(srv: ServerProcess, number: int, repos: list[str], **more: Any) -> Reply:
    """What the old Python client's register_broker() sends."""
    body = {"broker_repos": repos, "broker_status": "active", "broker_registered_at": REGISTERED_AT, **more}
    return call(srv, "PATCH", f"/api/v1/tasks/{number}", body)


def new_task(srv: ServerProcess, name: str, **fields: Any) -> int:
    r = call(srv, "POST", "/api/v1/tasks", {"name": name, **fields})
    assert r.status == 201, r.body
    return int(r.json["id"])


def test_lobmobs_register_broker_patch_then_the_pods_token(srv: ServerProcess, gh: FakeGitHub) -> None:
    n = new_task(srv, "fix the flaky test", type="swe")
    r = register_broker(srv, n, ["lobmob/repo1", "lobmob/repo2"], token_count=0)
    assert r.status == 200, r.body
    assert r.json["updated"] == ["broker_repos", "broker_status", "broker_registered_at"]
    task = call(srv, "GET", f"/api/v1/tasks/{n}").json
    assert (task["broker_repos"], task["broker_status"]) == (["lobmob/repo1", "lobmob/repo2"], "active")
    assert (task["broker_registered_at"], task["token_count"]) == (REGISTERED_AT, 0)
    assert event_types(srv, n)[:2] == ["broker_registered", "updated"]
    regs = call(srv, "GET", "/api/tasks").json
    assert set(regs) == {f"T{n}"} and regs[f"T{n}"]["repos"] == ["lobmob/repo1", "lobmob/repo2"]
    assert [e["action"] for e in audit(srv, f"T{n}")] == ["task_registered"]

    # The pod: a token the GitHub stand-in takes, scoped to the registered repositories.
    first = token_of(srv, f"T{n}")
    assert first.status == 200, first.body
    assert sorted(gh.issued[first.json["token"]].repositories or ()) == ["repo1", "repo2"]
    assert first.json["token"] in gh.live_tokens()
    assert token_of(srv, f"T{n}").status == 200
    task = call(srv, "GET", f"/api/v1/tasks/{n}").json
    assert task["token_count"] == 2  # the task row counts its tokens, as the old daemon's did
    events = event_types(srv, n)

    # A retried register_broker() changes nothing: no event, no audit row; token_count is not the client's.
    r = register_broker(srv, n, ["lobmob/repo1", "lobmob/repo2"], token_count=0)
    assert (r.status, r.json["updated"]) == (200, [])
    r = call(srv, "PATCH", f"/api/v1/tasks/{n}", {"token_count": 99})
    assert (r.status, r.json["updated"]) == (200, [])
    assert call(srv, "GET", f"/api/v1/tasks/{n}").json["token_count"] == 2
    assert event_types(srv, n) == events
    assert [e["action"] for e in audit(srv, f"T{n}")].count("task_registered") == 1


def test_a_patch_mixing_status_and_broker_fields_applies_both(srv: ServerProcess) -> None:
    n = new_task(srv, "mixed")
    body = {"status": "active", "assigned_to": "lobster-7", "broker_repos": ["lobmob/repo3"], "actor": "lobboss"}
    r = call(srv, "PATCH", f"/api/v1/tasks/T{n}", body)
    assert r.status == 200, r.body
    assert r.json["updated"] == ["status", "assigned_to", "broker_repos", "broker_status", "broker_registered_at"]
    task = call(srv, "GET", f"/api/v1/tasks/{n}").json
    assert (task["status"], task["assigned_to"], task["assigned_at"] is not None) == ("active", "lobster-7", True)
    assert (task["broker_repos"], task["broker_status"]) == (["lobmob/repo3"], "active")
    assert task["broker_registered_at"]  # stamped: this client gave no time
    assert token_of(srv, f"T{n}").status == 200
    # Before: the old Python client's register_broker() PATCH with only the broker fields was 400.
    m = new_task(srv, "only broker fields")
    assert call(srv, "PATCH", f"/api/v1/tasks/{m}", {"broker_repos": ["lobmob/repo4"]}).status == 200
    assert token_of(srv, f"T{m}").status == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"broker_repos": []}, "broker_repos"),
        ({"broker_repos": None}, "broker_repos"),
        ({"broker_repos": ["owner/../x"]}, "broker_repos[0]"),
        ({"broker_repos": ["lobmob/repo1", "someone-else/repo1"]}, "broker_repos[1]"),
        ({"broker_repos": [f"lobmob/r{i}" for i in range(501)]}, "broker_repos"),
        ({"status": "active", "broker_repos": ["lobmob/repo1", "nope"]}, "broker_repos[1]"),
        ({"broker_status": "bogus"}, "broker_status"),
        ({"broker_status": None}, "broker_status"),
        ({"broker_status": "active"}, "broker_status"),  # no repositories to register
        ({"broker_repos": ["lobmob/repo1"], "broker_status": "deregistered"}, "broker_status"),
        ({"broker_registered_at": "not a time", "broker_repos": ["lobmob/repo1"]}, "broker_registered_at"),
    ],
)
def test_bad_broker_fields_are_400_naming_the_field_and_change_nothing(
    srv: ServerProcess, body: dict[str, Any], field: str
) -> None:
    n = new_task(srv, "t")

    def state() -> tuple[Any, ...]:
        return (
            call(srv, "GET", f"/api/v1/tasks/{n}").json,
            call(srv, "GET", f"/api/v1/tasks/{n}/events").json,
            call(srv, "GET", "/api/tasks").json,
            call(srv, "GET", "/api/token/audit").json,
        )

    before = state()
    r = call(srv, "PATCH", f"/api/v1/tasks/{n}", body)
    assert r.status == 400 and fields_of(r) == [field], r.body
    assert state() == before


def test_a_finished_task_cannot_register_by_patch(srv: ServerProcess) -> None:
    n = new_task(srv, "done", status="completed")
    r = register_broker(srv, n, ["lobmob/repo1"])
    assert r.status == 409 and "only an unfinished task can register" in r.json["error"], r.body
    m = new_task(srv, "finishing")
    r = call(srv, "PATCH", f"/api/v1/tasks/{m}", {"status": "failed", "broker_repos": ["lobmob/repo1"]})
    assert r.status == 409 and call(srv, "GET", f"/api/v1/tasks/{m}").json["status"] == "queued"
    assert call(srv, "GET", "/api/tasks").json == {}


def test_patch_broker_status_deregistered_ends_access_and_revokes(srv: ServerProcess, gh: FakeGitHub) -> None:
    n = new_task(srv, "t")
    assert register_broker(srv, n, ["lobmob/repo5"]).status == 200
    token = token_of(srv, f"T{n}").json["token"]
    revocations = gh.calls_of("revoke")
    r = call(srv, "PATCH", f"/api/v1/tasks/{n}", {"broker_status": "deregistered", "actor": "lobboss"})
    assert (r.status, r.json["updated"]) == (200, ["broker_status"]), r.body
    r = token_of(srv, f"T{n}")
    assert r.status == 403 and "not registered" in r.json["error"]
    assert within(5, lambda: token not in gh.live_tokens()) and gh.calls_of("revoke") == revocations + 1
    assert call(srv, "GET", "/api/tasks").json == {}
    task = call(srv, "GET", f"/api/v1/tasks/{n}").json
    assert (task["broker_status"], task["broker_repos"]) == ("deregistered", ["lobmob/repo5"])
    assert event_types(srv, n)[:2] == ["broker_deregistered", "updated"]
    assert within(5, lambda: "token_revoked" in [e["action"] for e in audit(srv, f"T{n}")])
    ended = [e for e in audit(srv, f"T{n}") if e["action"] == "task_deregistered"]
    assert len(ended) == 1 and ended[0]["detail"] == "broker_status set to deregistered"
    # Registering again works, as it did with the old daemon.
    assert register_broker(srv, n, ["lobmob/repo5"]).status == 200
    assert token_of(srv, f"T{n}").status == 200


def test_deregistering_with_the_broker_reaches_the_task(srv: ServerProcess) -> None:
    n = new_task(srv, "t", slug="slug-t")
    assert call(srv, "POST", f"/api/tasks/T{n}/register", {"repos": ["lobmob/repo1"]}).status == 200
    assert call(srv, "POST", "/api/tasks/slug-t/register", {"repos": ["lobmob/repo2"]}).status == 200
    assert call(srv, "DELETE", f"/api/tasks/T{n}").status == 200
    # Another registration of the task is still active: the task still says so.
    assert call(srv, "GET", f"/api/v1/tasks/{n}").json["broker_status"] == "active"
    assert call(srv, "DELETE", "/api/tasks/slug-t").status == 200
    assert call(srv, "GET", f"/api/v1/tasks/{n}").json["broker_status"] == "deregistered"
    assert event_types(srv, n)[0] == "broker_deregistered"


@pytest.mark.parametrize(("how", "status"), [("complete", "completed"), ("fail", "failed"), ("cancel", "cancelled")])
def test_a_task_that_ends_ends_its_registration_at_once(
    srv: ServerProcess, gh: FakeGitHub, how: str, status: str
) -> None:
    n = new_task(srv, "t", slug="worker-1")
    assert register_broker(srv, n, ["lobmob/repo6"]).status == 200
    # A second registration linked to the same task (by slug), with its own scope.
    assert call(srv, "POST", "/api/tasks/worker-1/register", {"repos": ["lobmob/repo7"]}).status == 200
    tokens = [token_of(srv, ref).json["token"] for ref in (f"T{n}", "worker-1")]
    revocations = gh.calls_of("revoke")
    if how == "cancel":
        assert call(srv, "DELETE", f"/api/v1/tasks/{n}").status == 200
    else:
        assert call(srv, "PATCH", f"/api/v1/tasks/{n}", {"status": status}).status == 200
    # No token request in between: the task's end alone revokes them (not the token-time check).
    assert within(5, lambda: not set(tokens) & set(gh.live_tokens())), "not revoked in 5 s"
    assert gh.calls_of("revoke") == revocations + 2
    for ref in (f"T{n}", "worker-1"):
        ended = [e for e in audit(srv, ref) if e["action"] == "task_deregistered"]
        assert [e["detail"] for e in ended] == [f"task T{n} is {status}"], ref
        assert token_of(srv, ref).status == 403
    assert call(srv, "GET", "/api/tasks").json == {}
    assert within(5, lambda: call(srv, "GET", f"/api/v1/tasks/{n}").json["broker_status"] == "deregistered")


# --------------------------------------------------------------------------- --auth enforce


def _code(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except grpc.RpcError as e:
        return str(e.code().name)  # type: ignore[attr-defined]
    return "OK"


def test_with_auth_enforce_a_task_credential_dies_with_its_registration(tmp_path: Path, gh: FakeGitHub) -> None:
    state = tmp_path / "state"
    server = serve(state, gh, "--auth", "enforce")
    try:
        admin = mint_from_state_dir(state, "admin", subject="lobboss")
        numbers = [int(call(server, "POST", "/api/v1/tasks", {"name": f"t{i}"}, admin).json["id"]) for i in range(3)]
        creds = {n: mint_from_state_dir(state, "task", f"T{n}") for n in numbers}
        with grpc.insecure_channel(server.grpc_addr) as ch:
            stub = tasks_pb2_grpc.TaskServiceStub(ch)

            def get(n: int) -> str:
                md = (("authorization", f"Bearer {creds[n]}"),)
                return _code(lambda: stub.GetTask(tasks_pb2.GetTaskRequest(task_id=f"T{n}"), metadata=md, timeout=5))

            deregistered, completed, live = numbers
            for n in numbers:
                r = call(server, "PATCH", f"/api/v1/tasks/{n}", {"broker_repos": ["lobmob/repo1"]}, admin)
                assert r.status == 200, r.body
                assert get(n) == "OK"
            # The worker asks for its own GitHub token with its own credential.
            r = call(server, "POST", "/api/token", {"task_id": f"T{live}"}, creds[live])
            assert r.status == 200, r.body
            # It may update its own task, but never widen its own access.
            before = call(server, "GET", "/api/tasks", token=admin).json
            for body in ({"broker_repos": ["lobmob/repo1", "lobmob/repo2"]}, {"broker_status": "active"}):
                r = call(server, "PATCH", f"/api/v1/tasks/{live}", {"status": "active", **body}, creds[live])
                assert r.status == 403 and "may not register" in r.json["error"], r.body
            assert call(server, "GET", "/api/tasks", token=admin).json == before
            assert call(server, "GET", f"/api/v1/tasks/{live}", token=admin).json["status"] == "queued"
            # Ending its own access it may do (the worker's last call with that credential).
            body = {"broker_status": "deregistered"}
            r = call(server, "PATCH", f"/api/v1/tasks/{deregistered}", body, creds[deregistered])
            assert r.status == 200, r.body
            r = call(server, "PATCH", f"/api/v1/tasks/{completed}", {"status": "completed"}, admin)
            assert r.status == 200
            assert (get(deregistered), get(completed), get(live)) == ("UNAUTHENTICATED", "UNAUTHENTICATED", "OK")
            for n in (deregistered, completed):
                r = call(server, "GET", f"/api/v1/tasks/{n}", token=creds[n])
                assert r.status == 401 and "has ended" in r.json["error"], r.body
                r = call(server, "POST", "/api/token", {"task_id": f"T{n}"}, creds[n])
                assert r.status == 401, r.body
            assert call(server, "GET", f"/api/v1/tasks/{live}", token=creds[live]).status == 200
    finally:
        server.terminate()


def test_the_tasks_register_route_registers_with_the_broker(srv: ServerProcess, gh: FakeGitHub) -> None:
    """``POST /api/v1/tasks/{id}/register`` (the old daemon's other way in) registers the task with the
    broker too: the pod's token request then works, scoped to those repositories."""
    n = new_task(srv, "register by route")
    r = call(srv, "POST", f"/api/v1/tasks/{n}/register", {"repos": ["lobmob/repo1"], "lobster_type": "swe"})
    assert (r.status, r.json["status"], r.json["task_id"]) == (200, "registered", f"T{n}"), r.body
    task = call(srv, "GET", f"/api/v1/tasks/{n}").json
    assert (task["broker_repos"], task["broker_status"]) == (["lobmob/repo1"], "active")
    assert [e["action"] for e in audit(srv, f"T{n}")] == ["task_registered"]
    got = token_of(srv, f"T{n}")
    assert got.status == 200, got.body
    assert sorted(gh.issued[got.json["token"]].repositories or ()) == ["repo1"]
    # The same rules as the broker's own route: another owner's repository is refused by name, and
    # nothing changes.
    bad = call(srv, "POST", f"/api/v1/tasks/{n}/register", {"repos": ["someone-else/x"]})
    assert bad.status == 400 and fields_of(bad) == ["repos[0]"], bad.body
    assert call(srv, "GET", f"/api/v1/tasks/{n}").json["broker_repos"] == ["lobmob/repo1"]


def test_registration_can_mint_the_pods_task_token(tmp_path: Path, gh: FakeGitHub) -> None:
    """RegisterTask with ``mint_task_token``: lobboss gets the worker's credential in the same call. It
    reaches its own task only, gets its own GitHub token, and dies when the task completes."""
    state = tmp_path / "state"
    server = serve(state, gh, "--auth", "enforce")
    try:
        admin = mint_from_state_dir(state, "admin", subject="lobboss")
        own, other = (int(call(server, "POST", "/api/v1/tasks", {"name": f"t{i}"}, admin).json["id"]) for i in (1, 2))
        body = {"repos": ["lobmob/repo1"], "lobster_type": "swe", "mint_task_token": True}
        r = call(server, "POST", f"/api/tasks/T{own}/register", body, admin)
        assert r.status == 200 and r.json["task_token"] and r.json["task_token_expires_at"], r.body
        pod = r.json["task_token"]
        assert call(server, "GET", f"/api/v1/tasks/{own}", token=pod).status == 200
        assert call(server, "GET", f"/api/v1/tasks/{other}", token=pod).status == 403
        got = call(server, "POST", "/api/token", {"task_id": f"T{own}"}, pod)
        assert got.status == 200 and got.json["token"] in gh.live_tokens(), got.body
        # Refused before anything is written: a reference that names no task, and a caller not admin.
        r = call(server, "POST", "/api/tasks/nobody-here/register", body, admin)
        assert r.status in (400, 409) and "names no task" in r.json["error"], r.body
        service = mint_from_state_dir(state, "service", subject="svc")
        r = call(server, "POST", f"/api/tasks/T{other}/register", body, service)
        assert r.status == 403, r.body
        assert set(call(server, "GET", "/api/tasks", token=admin).json) == {f"T{own}"}
        # The task ends: so does its credential.
        assert call(server, "PATCH", f"/api/v1/tasks/{own}", {"status": "completed"}, admin).status == 200
        assert call(server, "GET", f"/api/v1/tasks/{own}", token=pod).status == 401
        assert pod not in server.log()
    finally:
        server.terminate()


def test_with_auth_off_no_task_token_is_minted(srv: ServerProcess) -> None:
    n = new_task(srv, "auth off")
    body = {"repos": ["lobmob/repo1"], "mint_task_token": True}
    r = call(srv, "POST", f"/api/tasks/T{n}/register", body)
    assert r.status == 403 and "needs an admin credential" in r.json["error"], r.body
    assert call(srv, "GET", "/api/tasks").json == {}
