"""The token broker end to end: the real server process pointed at the GitHub stand-in, called the way
lobmob's own clients call it (curl from bash, gRPC), and what must never happen (a token in the
database, the WAL or a log; a handed-out token without its audit row after kill -9)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from lobwife.v1 import broker_pb2, broker_pb2_grpc
from lobwife_server.broker.service import token_digest
from tests.conftest import ServerProcess, start_server
from tests.fakes.github import FakeGitHub
from tests.http_util import Reply, curl
from tests.legacy_state import old_daemon_db


def serve(state: Path, gh: FakeGitHub | None, *args: str, **env: str) -> ServerProcess:
    full = {**(gh.env() if gh is not None else {}), "LOBWIFE_BROKER_GITHUB_TIMEOUT": "3", **env}
    return start_server(state, *args, env=full)


@pytest.fixture
def broker(tmp_path: Path, gh: FakeGitHub) -> Iterator[ServerProcess]:
    srv = serve(tmp_path / "state", gh, "--log-level", "debug")
    yield srv
    if srv.proc.poll() is None:
        srv.terminate()


def url(srv: ServerProcess, path: str) -> str:
    return srv.http_url + path


def field_of(r: Reply) -> list[str]:
    return [v["field"] for d in r.json.get("details", []) for v in d.get("field_violations", [])]


def fake_repos(gh: FakeGitHub, token: str) -> list[str]:
    req = urllib.request.Request(gh.url + "/installation/repositories", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return [x["full_name"] for x in json.load(r)["repositories"]]


def state_of(srv: ServerProcess) -> tuple[Any, Any]:
    return curl("GET", url(srv, "/api/tasks")).json, curl("GET", url(srv, "/api/token/audit?limit=1000")).json


def test_lobmobs_clients_work_unchanged(broker: ServerProcess, gh: FakeGitHub) -> None:
    r = curl("POST", url(broker, "/api/tasks/T42/register"), {"repos": ["lobmob/repo1"], "lobster_type": "swe"})
    # The legacy answer, and no task token unless one was asked for (mint_task_token).
    assert (r.status, r.json["status"], r.json["task_id"]) == (200, "registered", "T42"), r.body
    assert not r.json.get("task_token") and r.json.get("task_token_expires_at") is None
    # Exactly as a worker pod asks (curl -d sends a form content type; the body is JSON all the same).
    out = subprocess.run(
        [
            "bash",
            "-c",
            """curl -sf -X POST "$URL/api/token" -d '{"task_id": "T42"}' """
            """| python3 -c "import sys, json; print(json.load(sys.stdin)['token'])" """,
        ],
        env={"URL": broker.http_url, "PATH": "/usr/bin:/bin:/usr/local/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    token = out.stdout.strip()
    assert token.startswith("ghs_") and fake_repos(gh, token) == ["lobmob/repo1"]
    r = curl("POST", url(broker, "/api/token"), {"task_id": "T42"})
    assert r.status == 200 and set(r.json) >= {"token", "expires_at"} and r.json["token"] == token
    svc = curl("POST", url(broker, "/api/v1/service-token"), {"service": "lobboss"})
    assert svc.status == 200 and set(svc.json) >= {"token", "expires_at"}
    assert len(fake_repos(gh, svc.json["token"])) == 21
    # gRPC: the same registration, the token from the cache.
    with grpc.insecure_channel(broker.grpc_addr) as ch:
        stub = broker_pb2_grpc.BrokerServiceStub(ch)
        assert stub.IssueTaskToken(broker_pb2.IssueTaskTokenRequest(task_id="T42"), timeout=10).token == token
    regs = curl("GET", url(broker, "/api/tasks")).json
    assert set(regs) == {"T42"}
    assert set(regs["T42"]) >= {"repos", "lobster_type", "registered_at", "status", "token_count"}
    assert (regs["T42"]["repos"], regs["T42"]["status"], regs["T42"]["token_count"]) == (["lobmob/repo1"], "active", 3)
    entries = curl("GET", url(broker, "/api/token/audit")).json
    assert isinstance(entries, list) and all(set(e) >= {"timestamp", "task_id", "repos", "action"} for e in entries)
    assert [e["action"] for e in entries] == [
        "token_issued",
        "service_token_issued",
        "token_issued",
        "token_issued",
        "task_registered",
    ]
    assert [e["reused"] for e in entries if e["action"] == "token_issued"] == [True, True, False]
    assert entries[0]["token_sha256_prefix"] == token_digest(token)
    assert [e["action"] for e in curl("GET", url(broker, "/api/token/audit?task_id=T42&limit=2")).json] == [
        "token_issued",
        "token_issued",
    ]
    for path in ("/health", "/api/status"):
        b = curl("GET", url(broker, path)).json["broker"]
        assert (b["enabled"], b["app_id"], b["active_tasks"], b["total_tokens_issued"]) == (True, "4242", 1, 3), path
        assert b["audit_entries"] == 5
    r = curl("DELETE", url(broker, "/api/tasks/T42"))
    assert (r.status, r.json) == (200, {"status": "removed", "task_id": "T42"})
    r = curl("POST", url(broker, "/api/token"), {"task_id": "T42"})
    assert r.status == 403 and "not registered" in r.json["error"]
    deadline = time.monotonic() + 5
    while token in gh.live_tokens() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert token not in gh.live_tokens()  # revoked at GitHub once its only holder was gone
    jobs = curl("GET", url(broker, "/api/v1/jobs")).json["jobs"]
    assert "lobwife-broker-expire" in [j["name"] for j in jobs]


def test_not_configured_is_503(tmp_path: Path) -> None:
    srv = serve(tmp_path / "state", None)
    try:
        assert curl("POST", url(srv, "/api/tasks/T1/register"), {"repos": ["o/r"]}).status == 200
        for path, body in (("/api/token", {"task_id": "T1"}), ("/api/v1/service-token", {"service": "s"})):
            r = curl("POST", url(srv, path), body)
            assert r.status == 503 and "not configured" in r.json["error"], r.body
        b = curl("GET", url(srv, "/health")).json["broker"]
        assert b["enabled"] is False and b["app_id"] is None and b["active_tasks"] == 1
    finally:
        srv.terminate()


def test_a_bad_github_app_configuration_stops_the_start_with_one_line(tmp_path: Path, gh: FakeGitHub) -> None:
    srv = start_server(tmp_path / "state", env={**gh.env(), "GH_APP_PEM": "%%% not base64"}, wait=False)
    assert srv.proc.wait(timeout=30) == 2
    assert "GH_APP_PEM: not base64" in srv.log() and gh.key.pem_base64[30:70] not in srv.log()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/tasks/T9/register", {"repos": []}, "repos"),
        ("/api/tasks/T9/register", {}, "repos"),
        ("/api/tasks/T9/register", {"repos": [f"lobmob/r{i}" for i in range(501)]}, "repos"),
        ("/api/tasks/T9/register", {"repos": ["owner/../x"]}, "repos[0]"),
        ("/api/tasks/T9/register", {"repos": ["lobmob/repo1", "someone-else/repo1"]}, "repos[1]"),
        ("/api/tasks/T9/register", {"repos": ["lobmob/" + "x" * 10_000]}, "repos[0]"),
        # (10,000 characters do not fit in a request line: aiohttp refuses those before routing.)
        ("/api/tasks/" + "x" * 5_000 + "/register", {"repos": ["lobmob/repo1"]}, "task_id"),
        ("/api/token", {}, "task_id"),
        ("/api/token", {"task_id": "x" * 10_000}, "task_id"),
        ("/api/v1/service-token", {}, "service"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_changes_nothing(
    broker: ServerProcess, path: str, body: dict[str, Any], field: str
) -> None:
    assert curl("POST", url(broker, "/api/tasks/T1/register"), {"repos": ["lobmob/repo1"]}).status == 200
    before = state_of(broker)
    r = curl("POST", url(broker, path), body)
    assert r.status == 400 and field_of(r) == [field], r.body
    assert len(r.body) < 2000 and b"x" * 300 not in r.body
    assert state_of(broker) == before


def test_tokens_end_with_the_task(broker: ServerProcess, gh: FakeGitHub) -> None:
    assert curl("POST", url(broker, "/api/token"), {"task_id": "T7"}).status == 403  # never registered
    for name in ("a", "b"):
        assert curl("POST", url(broker, "/api/v1/tasks"), {"name": name, "slug": f"slug-{name}"}).status == 201
    assert curl("POST", url(broker, "/api/tasks/T1/register"), {"repos": ["lobmob/repo1"]}).status == 200
    assert curl("POST", url(broker, "/api/tasks/slug-b/register"), {"repos": ["lobmob/repo2"]}).status == 200
    task = curl("GET", url(broker, "/api/v1/tasks/2")).json
    assert task["broker_repos"] == ["lobmob/repo2"] and task["broker_status"] == "active"
    events = curl("GET", url(broker, "/api/v1/tasks/2/events")).json
    assert "broker_registered" in [e["event_type"] for e in events]
    t1 = curl("POST", url(broker, "/api/token"), {"task_id": "T1"}).json["token"]
    assert curl("POST", url(broker, "/api/token"), {"task_id": "slug-b"}).status == 200
    assert curl("PATCH", url(broker, "/api/v1/tasks/1"), {"status": "completed"}).status == 200
    assert curl("DELETE", url(broker, "/api/v1/tasks/2")).status == 200  # cancelled
    for ref in ("T1", "slug-b", "T1"):
        r = curl("POST", url(broker, "/api/token"), {"task_id": ref})
        assert r.status == 403, (ref, r.body)
    deadline = time.monotonic() + 5
    while t1 in gh.live_tokens() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert t1 not in gh.live_tokens()
    r = curl("POST", url(broker, "/api/tasks/T1/register"), {"repos": ["lobmob/repo1"]})
    assert r.status == 409 and "completed" in r.json["error"]


def test_github_refusing_or_hanging(broker: ServerProcess, gh: FakeGitHub) -> None:
    assert curl("POST", url(broker, "/api/tasks/T1/register"), {"repos": ["lobmob/no-such-repo"]}).status == 200
    assert curl("POST", url(broker, "/api/tasks/T2/register"), {"repos": ["lobmob/repo2"]}).status == 200
    r = curl("POST", url(broker, "/api/token"), {"task_id": "T1"})
    assert r.status == 409 and "lobmob/no-such-repo" in r.json["error"]
    gh.garbage_next(10, endpoint="access_tokens")
    r = curl("POST", url(broker, "/api/token"), {"task_id": "T2"})
    assert r.status == 503 and "not a JSON object" in r.json["error"]
    gh.clear_faults()
    gh.delay = 30.0
    t0 = time.monotonic()
    r = curl("POST", url(broker, "/api/token"), {"task_id": "T2"})
    assert r.status in (503, 504) and time.monotonic() - t0 < 6  # LOBWIFE_BROKER_GITHUB_TIMEOUT=3
    gh.delay = 0.0
    assert "token_issued" not in [e["action"] for e in curl("GET", url(broker, "/api/token/audit")).json]


def test_no_token_reaches_the_database_the_wal_or_a_log(broker: ServerProcess, gh: FakeGitHub) -> None:
    for i in range(6):
        repos = [f"lobmob/repo{i}", f"lobmob/repo{i + 6}"]
        assert curl("POST", url(broker, f"/api/tasks/T{i}/register"), {"repos": repos}).status == 200
        for _ in range(3):
            assert curl("POST", url(broker, "/api/token"), {"task_id": f"T{i}"}).status == 200
    assert curl("POST", url(broker, "/api/v1/service-token"), {"service": "lobboss"}).status == 200
    for i in range(3):  # revoked ones too: the revocation is audited and logged
        assert curl("DELETE", url(broker, f"/api/tasks/T{i}")).status == 200
    assert curl("POST", url(broker, "/api/v1/broker:expire"), {}).status == 200
    time.sleep(0.5)
    issued = list(gh.issued)
    assert len(issued) == 7
    state = broker.state_dir
    files = {p.name: p.read_bytes() for p in state.iterdir() if p.name.startswith("lobwife.db")}
    assert "lobwife.db-wal" in files  # the WAL, before a checkpoint folds it in
    broker.terminate()
    files["after-stop"] = (state / "lobwife.db").read_bytes()
    files["log"] = broker.log().encode()
    assert b"broker registration" in files["log"]  # the log was captured at debug level
    for token in issued:
        for name, data in files.items():
            assert token.encode() not in data, f"a token is in {name}"
            assert token[4:20].encode() not in data, f"part of a token is in {name}"


def test_kill_9_right_after_a_token_loses_no_audit_row(tmp_path: Path, gh: FakeGitHub) -> None:
    state = tmp_path / "state"
    srv = serve(state, gh)
    assert curl("POST", url(srv, "/api/tasks/T1/register"), {"repos": ["lobmob/repo1"]}).status == 200
    tokens = [curl("POST", url(srv, "/api/token"), {"task_id": "T1"}).json["token"] for _ in range(2)]
    last = curl("POST", url(srv, "/api/v1/service-token"), {"service": "lobboss"}).json["token"]
    srv.kill9()
    srv = serve(state, gh)
    try:
        entries = curl("GET", url(srv, "/api/token/audit")).json
        prefixes = [e["token_sha256_prefix"] for e in entries]
        assert prefixes[:3] == [token_digest(last), token_digest(tokens[1]), token_digest(tokens[0])]
        assert curl("GET", url(srv, "/health")).json["broker"]["total_tokens_issued"] == 2
        # The registration survived too, and the next token is a fresh one (the cache was memory).
        assert curl("POST", url(srv, "/api/token"), {"task_id": "T1"}).status == 200
    finally:
        srv.terminate()


def test_the_old_daemons_broker_state_is_carried_over(tmp_path: Path, gh: FakeGitHub) -> None:
    state = tmp_path / "state"
    old_daemon_db(
        state,
        (
            "INSERT INTO broker_tasks (task_id, repos, lobster_type, registered_at, status, token_count)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            ("T5", '["lobmob/repo1"]', "swe", "2026-02-16 17:00:00", "active", 4),
        ),
        (
            "INSERT INTO broker_tasks (task_id, repos, lobster_type, registered_at, status, token_count)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            ("old-worker", '["lobmob/repo2"]', "qa", "not a time", "expired", 2),
        ),
        (
            "INSERT INTO token_audit (task_id, repos, action, created_at) VALUES (?, ?, ?, ?)",
            ("T5", '["lobmob/repo1"]', "token_issued", "2026-02-16 17:05:00"),
        ),
    )
    (state / "tasks.json").write_text(
        json.dumps(
            {"from-json": {"repos": ["lobmob/repo3"], "lobster_type": "swe", "registered_at": "2026-01-01T00:00:00"}}
        )
    )
    (state / "token-audit.json").write_text(
        json.dumps(
            [
                {
                    "timestamp": "2026-01-01T00:00:00",
                    "task_id": "from-json",
                    "repos": ["lobmob/repo3"],
                    "action": "task_registered",
                }
            ]
        )
    )
    srv = serve(state, gh)
    try:
        b = curl("GET", url(srv, "/health")).json["broker"]
        assert (b["active_tasks"], b["total_tokens_issued"], b["audit_entries"]) == (2, 6, 2)
        regs = curl("GET", url(srv, "/api/tasks")).json
        assert set(regs) == {"T5", "old-worker", "from-json"}
        assert regs["T5"]["registered_at"] == "2026-02-16T17:00:00Z" and regs["T5"]["token_count"] == 4
        assert regs["old-worker"]["status"] == "expired" and regs["old-worker"]["registered_at"] is None
        audit = curl("GET", url(srv, "/api/token/audit")).json
        assert [(e["task_id"], e["action"]) for e in audit] == [
            ("from-json", "task_registered"),
            ("T5", "token_issued"),
        ]
        # The migrated registrations work as they did.
        for ref, repo in (("T5", "lobmob/repo1"), ("from-json", "lobmob/repo3")):
            r = curl("POST", url(srv, "/api/token"), {"task_id": ref})
            assert r.status == 200 and fake_repos(gh, r.json["token"]) == [repo]
        assert curl("POST", url(srv, "/api/token"), {"task_id": "old-worker"}).status == 403
        assert curl("GET", url(srv, "/api/status")).json["broker"]["total_tokens_issued"] == 8
    finally:
        srv.terminate()
