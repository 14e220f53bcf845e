"""The real server started on the old daemon's state folder: nothing of it is lost (issue 10, item 3)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ServerProcess, start_server
from tests.http_util import curl
from tests.legacy_state import old_daemon_db, old_task

# Both jobs fire every second; the old daemon had paused `beat`.
JOBS = """
[jobs.beat]
command = ["true"]
schedule = "* * * * * *"

[jobs.tick]
command = ["true"]
schedule = "* * * * * *"
"""


def scheduled_runs(state: Path, job: str) -> int:
    conn = sqlite3.connect(state / "lobwife.db", timeout=10)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM job_runs WHERE job_name = ?", (job,)).fetchone()[0])
    finally:
        conn.close()


def wait_until(what: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s")


def check(srv: ServerProcess) -> None:
    u = srv.http_url
    health = curl("GET", u + "/health").json
    assert health["broker"] == {
        "enabled": False,
        "app_id": None,
        "active_tasks": 3,
        "total_tokens_issued": 14,
        "audit_entries": 10,
    }, health
    assert curl("GET", u + "/api/status").json["broker"] == health["broker"]
    # The old daemon's registrations are linked to the tasks they name (T7 is task 7; no task is
    # lobster-2, and an expired one is left alone), so the task's end and its task token reach them.
    regs = curl("GET", u + "/api/tasks").json
    assert {ref: r.get("task", "") for ref, r in regs.items()} == {"T7": "T7", "lobster-2": "", "T3": "", "T9": ""}
    task = curl("GET", u + "/api/v1/tasks/7")
    assert task.status == 200 and task.json["estimate_minutes"] == 12.5
    assert b'"estimate_minutes":12.5' in task.body
    beat = curl("GET", u + "/api/jobs/beat").json
    assert beat["enabled"] is False and beat["next_run"] is None
    assert curl("GET", u + "/api/jobs/tick").json["enabled"] is True
    # The paused job does not run at its slots: a bounded wait in which the other job runs twice.
    before = scheduled_runs(srv.state_dir, "tick")
    wait_until(lambda: scheduled_runs(srv.state_dir, "tick") >= before + 2)
    assert scheduled_runs(srv.state_dir, "beat") == 0


def test_the_server_upgrades_the_old_state_folder_losing_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    reg = "INSERT INTO broker_tasks VALUES (?, '[\"o/r\"]', 'swe', '2026-02-16T17:00:00+00:00', ?, ?)"
    entry = "INSERT INTO token_audit (task_id, repos, action, created_at) VALUES ('T7', '[\"o/r\"]', ?, ?)"
    old_daemon_db(
        state,
        old_task(7, estimate_minutes=12.5, assigned_at="Mon, 16 Feb 2026 17:00:00 GMT", completed_at="1771264800"),
        ("INSERT INTO job_state (name, last_status, run_count, enabled) VALUES ('beat', 'success', 40, 0)", ()),
        (reg, ("T7", "active", 6)),
        (reg, ("lobster-2", "active", 5)),
        (reg, ("T3", "expired", 1)),
        *[(entry, ("token_issued", "2026-02-16 17:01:00"))] * 9,
    )
    (state / "tasks.json").write_text(json.dumps({"T9": {"repos": ["o/x"], "status": "active", "token_count": 2}}))
    (state / "token-audit.json").write_text(
        json.dumps([{"task_id": "T9", "repos": ["o/x"], "action": "token_issued", "timestamp": "2026-01-01T00:00Z"}])
    )
    # Left by the old daemon's own import: never overwritten.
    (state / "token-audit.json.migrated").write_text('[{"task_id": "T0", "action": "token_issued"}]')
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(JOBS)

    srv = start_server(state, "--jobs", str(jobs))
    try:
        assert not (state / "token-audit.json").exists()
        assert (state / "token-audit.json.migrated").read_text() == '[{"task_id": "T0", "action": "token_issued"}]'
        assert (state / "token-audit.json.migrated.1").exists()
        t = curl("GET", srv.http_url + "/api/v1/tasks/7").json
        assert (t["assigned_at"], t["completed_at"]) == ("2026-02-16T17:00:00Z", "2026-02-16T18:00:00Z")
        assert curl("GET", srv.http_url + "/api/jobs/beat").json["run_count"] == 40
        check(srv)
    finally:
        assert srv.terminate() == 0
    # A restart changes none of it: the pause is lobwife's own record now.
    srv = start_server(state, "--jobs", str(jobs))
    try:
        check(srv)
    finally:
        assert srv.terminate() == 0
