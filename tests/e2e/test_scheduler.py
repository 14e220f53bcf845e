"""The cron scheduler inside the real server: firing, overlap, timeouts, retries, catch-up, crashes, reconcile.

Short real intervals (6-field cron every second, 1 s intervals) and bounded waits; the
database is read directly (read-only) to see exactly what was recorded.
"""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lobwife_server.jobs import runner
from tests.conftest import ServerProcess, start_server
from tests.http_util import curl


def jobs_server(tmp_path: Path, toml: str, state: str = "state") -> ServerProcess:
    path = tmp_path / "jobs.toml"
    path.write_text(toml)
    return start_server(tmp_path / state, "--jobs", str(path))


def runs(srv: ServerProcess, job: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(srv.state_dir / "lobwife.db", timeout=10)
    conn.execute("PRAGMA query_only = 1")
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM job_runs WHERE job_name = ? ORDER BY id", (job,)).fetchall()
        return [dict(r) for r in rows]
    finally:
        conn.close()


def wait_for(what: Callable[[], Any], timeout: float = 15.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def stop_after() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for srv in started:
        if srv.proc.poll() is None:
            srv.terminate()


def test_cron_fires_with_env_and_captured_output(tmp_path: Path, stop_after: list[ServerProcess]) -> None:
    srv = jobs_server(
        tmp_path,
        """
[jobs.tick]
command = ["sh", "-c", '''
  echo job=$LOBWIFE_JOB run=$LOBWIFE_RUN_ID slot=$LOBWIFE_SCHEDULED_AT
  curl -sf $LOBWIFE_URL/health > /dev/null && echo called-back''']
schedule = "* * * * * *"
""",
    )
    stop_after.append(srv)
    got = wait_for(lambda: [r for r in runs(srv, "tick") if r["status"] == "success"][:2])
    for r in got:
        assert r["trigger"] == "schedule" and r["attempt"] == 1 and r["exit_code"] == 0
        slot = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["scheduled_at"] / 1e6))
        assert f"job=tick run={r['id']} slot={slot}" in r["output"] and "called-back" in r["output"]
        assert r["scheduled_at"] % 1_000_000 == 0, "slots are whole seconds"
    # Each slot recorded once, in order.
    slots = [r["scheduled_at"] for r in runs(srv, "tick") if r["trigger"] == "schedule"]
    assert slots == sorted(set(slots))
    job = curl("GET", srv.http_url + "/api/jobs/tick").json
    assert job["name"] == "tick" and job["last_status"] == "success" and "called-back" in job["last_output"]
    assert len(job["next_runs"]) == 5 and job["concurrency"] == "forbid"


def test_overlap_policies(tmp_path: Path, stop_after: list[ServerProcess]) -> None:
    srv = jobs_server(
        tmp_path,
        """
[jobs.forbid]
command = ["sleep", "2.5"]
schedule = "* * * * * *"
concurrency = "forbid"
[jobs.allow]
command = ["sleep", "2.5"]
schedule = "* * * * * *"
concurrency = "allow"
[jobs.replace]
command = ["sleep", "2.5"]
schedule = "* * * * * *"
concurrency = "replace"
""",
    )
    stop_after.append(srv)
    time.sleep(4.2)
    forbid = runs(srv, "forbid")
    assert any(r["status"] == "skipped" and "still running" in r["reason"] for r in forbid)
    assert sum(r["status"] in ("running", "success") for r in forbid) <= 2
    allow = runs(srv, "allow")
    assert sum(r["status"] == "running" for r in allow) >= 2, "allow overlaps"
    assert not any(r["status"] == "skipped" for r in allow)
    replace = runs(srv, "replace")
    replaced = [r for r in replace if r["status"] == "abandoned"]
    assert replaced and all(r["reason"].startswith("replaced by run") for r in replaced)
    assert sum(r["status"] == "running" for r in replace) <= 1


def test_timeout_ends_the_tree_and_the_next_slot_still_fires(tmp_path: Path, stop_after: list[ServerProcess]) -> None:
    srv = jobs_server(
        tmp_path,
        """
[jobs.hang]
command = ["sh", "-c", "sh -c 'trap \\"\\" TERM; sleep 60' & echo started; sleep 60"]
every = "1h"
timeout = "1s"
[jobs.missing]
command = ["/no/such/program"]
schedule = "* * * * * *"
""",
    )
    stop_after.append(srv)
    assert curl("POST", srv.http_url + "/api/jobs/hang/trigger").status == 200
    done = wait_for(lambda: [r for r in runs(srv, "hang") if r["status"] == "timeout"], timeout=15)
    assert "timed out after 1" in done[0]["reason"] and done[0]["pgid"]
    assert not runner.group_alive(done[0]["pgid"]), "the child that ignored SIGTERM is gone too"
    errors = wait_for(lambda: [r for r in runs(srv, "missing") if r["status"] == "error"][:2])
    assert "not found" in errors[0]["reason"] and errors[0]["scheduled_at"] != errors[1]["scheduled_at"]


def test_retries_with_exponential_backoff(tmp_path: Path, stop_after: list[ServerProcess]) -> None:
    counter = tmp_path / "count"
    srv = jobs_server(
        tmp_path,
        f"""
[jobs.flaky]
command = ["sh", "-c", "n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; [ $n -ge 3 ]"]
every = "1h"
[jobs.flaky.retry]
max_retries = 3
initial_backoff = "1s"
multiplier = 2
jitter = 0
""",
    )
    stop_after.append(srv)
    curl("POST", srv.http_url + "/api/jobs/flaky/trigger")
    final = wait_for(lambda: [r for r in runs(srv, "flaky") if r["status"] == "success"], timeout=20)
    all_runs = runs(srv, "flaky")
    assert [(r["trigger"], r["attempt"], r["status"]) for r in all_runs] == [
        ("manual", 1, "failed"),
        ("retry", 2, "failed"),
        ("retry", 3, "success"),
    ]
    gaps = [(b["started_at"] - a["finished_at"]) / 1e6 for a, b in itertools.pairwise(all_runs)]
    assert gaps[0] >= 0.95 and gaps[1] >= 1.95, f"backoff 1s then 2s, got {gaps}"
    assert final[0]["attempt"] == 3


@pytest.mark.parametrize("policy", ["skip", "once", "all"])
def test_catch_up_after_downtime(tmp_path: Path, stop_after: list[ServerProcess], policy: str) -> None:
    toml = f"""
[jobs.beat]
command = ["true"]
every = "1s"
catch_up = "{policy}"
catch_up_window = "1m"
concurrency = "allow"
"""
    srv = jobs_server(tmp_path, toml)
    wait_for(lambda: runs(srv, "beat"))
    assert srv.terminate() == 0
    before = {r["id"] for r in runs(srv, "beat")}
    time.sleep(3.5)  # three or four slots pass while lobwife is down
    srv2 = jobs_server(tmp_path, toml)
    stop_after.append(srv2)
    time.sleep(1.0)
    new = [r for r in runs(srv2, "beat") if r["id"] not in before and r["trigger"] == "catch-up"]
    missed = [r for r in new if r["status"] == "skipped"]
    ran = [r for r in new if r["status"] != "skipped"]
    if policy == "skip":
        assert len(missed) >= 3 and not ran
        assert all("catch-up policy: skip" in r["reason"] for r in missed)
    elif policy == "once":
        assert len(ran) == 1 and len(missed) >= 2
        assert all("coalesced into the catch-up run" in r["reason"] for r in missed)
        assert ran[0]["scheduled_at"] > max(r["scheduled_at"] for r in missed)
    else:
        assert len(ran) >= 3 and not missed
    # No slot is recorded twice, across both server lives.
    slots = [r["scheduled_at"] for r in runs(srv2, "beat") if r["trigger"] in ("schedule", "catch-up")]
    assert len(slots) == len(set(slots))


def run_past_the_gate(srv: ServerProcess, job: str, mark: Path) -> dict[str, Any]:
    """Trigger ``job`` (whose command touches ``mark`` first) and return its run once it is recorded
    running and its command really runs: killed before the runner's gate opens, it never would."""
    curl("POST", srv.http_url + f"/api/jobs/{job}/trigger")
    running = wait_for(lambda: [r for r in runs(srv, job) if r["status"] == "running" and r["pgid"]])
    wait_for(mark.exists)
    return dict(running[0])


def test_run_orphaned_by_kill_9_is_resolved_on_restart(tmp_path: Path, stop_after: list[ServerProcess]) -> None:
    mark = tmp_path / "ran"
    toml = f"""
[jobs.long]
command = ["sh", "-c", "touch {mark}; exec sleep 60"]
every = "1h"
"""
    srv = jobs_server(tmp_path, toml)
    running = [run_past_the_gate(srv, "long", mark)]
    pgid = running[0]["pgid"]
    srv.kill9()
    assert runner.group_alive(pgid), "the job outlives the killed server"
    srv2 = jobs_server(tmp_path, toml)
    stop_after.append(srv2)
    (run,) = [r for r in runs(srv2, "long") if r["id"] == running[0]["id"]]
    assert run["status"] == "abandoned" and "killed on restart" in run["reason"]
    wait_for(lambda: not runner.group_alive(pgid), timeout=10)


def test_shutdown_ends_and_records_running_jobs(tmp_path: Path) -> None:
    toml = '[jobs.long]\ncommand = ["sleep", "60"]\nevery = "1h"\n'
    srv = jobs_server(tmp_path, toml)
    curl("POST", srv.http_url + "/api/jobs/long/trigger")
    running = wait_for(lambda: [r for r in runs(srv, "long") if r["status"] == "running" and r["pgid"]])
    t0 = time.monotonic()
    assert srv.terminate() == 0
    assert time.monotonic() - t0 < 5 + 6 + 3, "grace (5 s) + kill grace, then exit"
    (run,) = runs(srv, "long")
    assert run["status"] == "abandoned" and "shutdown" in run["reason"]
    assert not runner.group_alive(running[0]["pgid"])


def test_reconcile_a_changed_jobs_file(tmp_path: Path) -> None:
    first = """
[jobs.keep]
command = ["true"]
schedule = "0 * * * *"
[jobs.drop]
command = ["true"]
schedule = "0 * * * *"
"""
    srv = jobs_server(tmp_path, first)
    curl("POST", srv.http_url + "/api/jobs/drop/trigger")
    wait_for(lambda: [r for r in runs(srv, "drop") if r["status"] == "success"])
    assert srv.terminate() == 0
    second = """
[jobs.keep]
command = ["true"]
schedule = "30 * * * *"
description = "changed"
[jobs.add]
command = ["true"]
every = "1h"
"""
    srv = jobs_server(tmp_path, second)
    try:
        jobs = curl("GET", srv.http_url + "/api/jobs").json
        assert {"keep", "add"} <= set(jobs) and "drop" not in jobs
        assert jobs["keep"]["schedule"] == "30 * * * *" and jobs["keep"]["description"] == "changed"
        history = curl("GET", srv.http_url + "/api/v1/jobs/drop/runs").json
        assert [r["status"] for r in history] == ["success"], "a removed job's history stays"
        # A broken file keeps the last good definitions, and says why.
        (tmp_path / "jobs.toml").write_text("[jobs.keep\ncommand = 1\n")
    finally:
        assert srv.terminate() == 0
    srv = start_server(tmp_path / "state", "--jobs", str(tmp_path / "jobs.toml"))
    try:
        jobs = curl("GET", srv.http_url + "/api/jobs").json
        assert {"keep", "add"} <= set(jobs)
        assert "jobs file not used" in srv.log() and "line 1" in srv.log()
    finally:
        srv.terminate()


def test_disable_enable_never_fires_a_surprise_run(tmp_path: Path, stop_after: list[ServerProcess]) -> None:
    srv = jobs_server(tmp_path, '[jobs.beat]\ncommand = ["true"]\nevery = "1s"\ncatch_up = "all"\n')
    stop_after.append(srv)
    wait_for(lambda: runs(srv, "beat"))
    r = curl("POST", srv.http_url + "/api/jobs/beat/disable")
    assert r.status == 200 and r.json["message"] == "Job beat disabled"
    time.sleep(0.3)
    count = len(runs(srv, "beat"))
    time.sleep(2.5)
    assert len(runs(srv, "beat")) == count, "a disabled job does not fire"
    enabled_at = time.time()
    r = curl("POST", srv.http_url + "/api/jobs/beat/enable")
    assert r.status == 200 and r.json["message"] == "Job beat enabled"
    later = wait_for(lambda: runs(srv, "beat")[count:])
    assert all(r["scheduled_at"] / 1e6 > enabled_at for r in later), "no run for slots missed while disabled"


def test_legacy_jobs_routes(tmp_path: Path, stop_after: list[ServerProcess]) -> None:
    srv = jobs_server(tmp_path, '[jobs.slow]\ncommand = ["sleep", "3"]\nschedule = "0 0 1 1 *"\ndescription = "d"\n')
    stop_after.append(srv)
    u = srv.http_url
    listing = curl("GET", u + "/api/jobs").json
    summary = listing["slow"]
    assert set(summary) >= {
        "description",
        "schedule",
        "enabled",
        "running",
        "last_run",
        "last_status",
        "last_duration",
        "run_count",
        "fail_count",
        "next_run",
    }
    assert summary["schedule"] == "0 0 1 1 *" and summary["enabled"] is True and summary["last_status"] is None
    assert "command" not in summary and "env" not in summary
    assert {"lobwife-backup", "lobwife-prune", "lobwife-wal-checkpoint"} <= set(listing)
    one = curl("GET", u + "/api/jobs/slow").json
    assert one["name"] == "slow" and one["script"] == "3" and one["concurrency"] == "forbid"
    assert "last_output" in one
    r = curl("POST", u + "/api/jobs/slow/trigger")
    assert r.status == 200 and r.json["message"] == "Job slow triggered"
    r = curl("POST", u + "/api/jobs/slow/trigger")
    assert r.status == 409 and r.json["message"] == "Job slow is already running"
    for verb in ("trigger", "enable", "disable"):
        r = curl("POST", u + f"/api/jobs/nope/{verb}")
        assert r.status == 404 and r.json["error"] == "Unknown job: nope"
    r = curl("GET", u + "/api/jobs/nope")
    assert r.status == 404 and r.json["error"] == "Unknown job: nope"
    status = curl("GET", u + "/api/status").json
    assert status["status"] == "ok" and status["jobs"]["slow"]["running"] is True and "broker" in status
    assert curl("GET", u + "/health").json["jobs_running"] == 1
    sync = curl("GET", u + "/api/v1/sync")
    assert sync.status == 200 and sync.json["enabled"] is False
    r = curl("POST", u + "/api/v1/sync/trigger")
    assert r.status == 503 and "not enabled" in r.json["error"]


def test_builtin_backup_runs_like_any_job(tmp_path: Path, stop_after: list[ServerProcess]) -> None:
    srv = jobs_server(tmp_path, "")
    stop_after.append(srv)
    assert curl("POST", srv.http_url + "/api/jobs/lobwife-backup/trigger").status == 200
    done = wait_for(lambda: [r for r in runs(srv, "lobwife-backup") if r["status"] == "success"])
    assert "backed up to" in done[0]["output"]
    backups = list((srv.state_dir / "backups").glob("lobwife-*.db"))
    assert len(backups) == 1
    conn = sqlite3.connect(backups[0])
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_bad_names_are_refused_by_the_api(tmp_path: Path, stop_after: list[ServerProcess]) -> None:
    srv = jobs_server(tmp_path, "")
    stop_after.append(srv)
    for bad in ("a%2Fb", "..", "a%20b", "x" * 300):
        r = curl(
            "POST",
            srv.http_url + "/api/v1/jobs",
            {"name": bad.replace("%2F", "/").replace("%20", " "), "command": ["true"], "cron": "* * * * *"},
        )
        assert r.status == 400 and "job.name" in r.json["error"], r.json
    r = curl("POST", srv.http_url + "/api/v1/jobs", {"name": "ok", "command": ["true"], "cron": "61 * * * *"})
    assert r.status == 400 and "cron" in r.json["error"]
    r = curl(
        "POST",
        srv.http_url + "/api/v1/jobs",
        {"name": "ok", "command": ["true"], "cron": "* * * * *", "time_zone": "Nowhere/Land"},
    )
    assert r.status == 400 and "time_zone" in r.json["error"]
    assert "ok" not in curl("GET", srv.http_url + "/api/jobs").json
    _ = (os, signal)


def test_run_on_startup_and_the_global_bound(tmp_path: Path) -> None:
    toml = """
[jobs.boot]
command = ["echo", "booted"]
every = "1h"
run_on_startup = true
""" + "".join(
        f"""
[jobs.busy{i}]
command = ["sleep", "1.5"]
every = "1h"
"""
        for i in range(5)
    )
    path = tmp_path / "jobs.toml"
    path.write_text(toml)
    srv = start_server(tmp_path / "state", "--jobs", str(path), "--max-concurrent-runs", "2")
    try:
        boot = wait_for(lambda: [r for r in runs(srv, "boot") if r["status"] == "success"])
        assert boot[0]["trigger"] == "startup" and "booted" in boot[0]["output"]
        for i in range(5):
            assert curl("POST", srv.http_url + f"/api/jobs/busy{i}/trigger").status == 200
        peak = 0
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            states = [r["status"] for i in range(5) for r in runs(srv, f"busy{i}")]
            peak = max(peak, states.count("running"))
            if states.count("success") == 5:
                break
            time.sleep(0.05)
        assert states.count("success") == 5 and peak == 2, (states, peak)
    finally:
        srv.terminate()


def test_watch_runs_over_http_streams_state_and_output(tmp_path: Path, stop_after: list[ServerProcess]) -> None:
    import json
    import subprocess
    import threading

    srv = jobs_server(tmp_path, '[jobs.talk]\ncommand = ["sh", "-c", "echo one; sleep 0.5; echo two"]\nevery = "1h"\n')
    stop_after.append(srv)
    lines: list[str] = []
    proc = subprocess.Popen(
        ["curl", "-sN", "--max-time", "6", srv.http_url + "/api/v1/runs:watch?name=talk&include_output=true"],
        stdout=subprocess.PIPE,
        text=True,
    )
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []))
    reader.start()
    time.sleep(0.5)
    curl("POST", srv.http_url + "/api/jobs/talk/trigger")
    wait_for(lambda: [r for r in runs(srv, "talk") if r["status"] == "success"])
    proc.wait(timeout=10)
    reader.join(5)
    msgs = [json.loads(line) for line in lines if line.strip()]
    states = [m["run"]["status"] for m in msgs if not m["output_chunk"]]
    output = "".join(m["output_chunk"] for m in msgs)
    assert states[0] == "running" and states[-1] == "success"
    assert "one" in output and "two" in output and output.index("one") < output.index("two")


@pytest.mark.parametrize("concurrency", ["forbid", "replace"])
def test_catch_up_all_without_overlap_never_fails_the_start(
    tmp_path: Path, stop_after: list[ServerProcess], concurrency: str
) -> None:
    # Issue 8, case 1: forbid + all with several missed slots made every start exit 1.
    toml = f"""
[jobs.fc]
command = ["sleep", "0.5"]
every = "1s"
catch_up = "all"
catch_up_window = "1m"
concurrency = "{concurrency}"
"""
    srv = jobs_server(tmp_path, toml)
    wait_for(lambda: [r for r in runs(srv, "fc") if r["status"] == "running"])
    srv.kill9()
    before = {r["id"] for r in runs(srv, "fc")}
    last_slot = max(r["scheduled_at"] for r in runs(srv, "fc") if r["scheduled_at"])
    time.sleep(3.2)
    srv2 = jobs_server(tmp_path, toml)  # raises if the start fails
    stop_after.append(srv2)
    new = [r for r in runs(srv2, "fc") if r["id"] not in before and r["trigger"] == "catch-up"]
    ran = [r for r in new if r["status"] != "skipped"]
    skipped = [r for r in new if r["status"] == "skipped"]
    assert len(ran) == 1, new
    assert len(skipped) >= 2 and all("would overlap the catch-up run" in r["reason"] for r in skipped)
    assert ran[0]["scheduled_at"] > max(r["scheduled_at"] for r in skipped), "the newest slot runs"
    # Every slot from the last one recorded before the kill to the catch-up run has a record.
    slots = sorted(r["scheduled_at"] for r in runs(srv2, "fc") if r["trigger"] in ("schedule", "catch-up"))
    span = [s for s in slots if last_slot <= s <= ran[0]["scheduled_at"]]
    assert span == list(range(last_slot, ran[0]["scheduled_at"] + 1, 1_000_000)), "no slot without a record"
    assert len(slots) == len(set(slots))


def test_catch_up_run_and_startup_run_under_forbid_do_not_fail_the_start(
    tmp_path: Path, stop_after: list[ServerProcess]
) -> None:
    toml = """
[jobs.fs]
command = ["sleep", "2"]
every = "1s"
catch_up = "once"
concurrency = "forbid"
run_on_startup = true
"""
    srv = jobs_server(tmp_path, toml)
    wait_for(lambda: runs(srv, "fs"))
    srv.kill9()
    before = {r["id"] for r in runs(srv, "fs")}
    time.sleep(2.2)
    srv2 = jobs_server(tmp_path, toml)
    stop_after.append(srv2)
    startup = wait_for(lambda: [r for r in runs(srv2, "fs") if r["trigger"] == "startup" and r["id"] not in before])
    assert [r for r in runs(srv2, "fs") if r["trigger"] == "catch-up" and r["status"] != "skipped"]
    assert startup[0]["status"] == "skipped" and "still running" in startup[0]["reason"]


def test_health_is_503_starting_until_recovery_is_done(tmp_path: Path, stop_after: list[ServerProcess]) -> None:
    # A run that ignores SIGTERM makes recovery take the kill grace (5 s), during which the server
    # listens but is not ready: GET /health must say so, as gRPC health does.
    mark = tmp_path / "ran"
    toml = f"""
[jobs.stubborn]
command = ["sh", "-c", "trap '' TERM; touch {mark}; sleep 60"]
every = "1h"
"""
    srv = jobs_server(tmp_path, toml)
    running = [run_past_the_gate(srv, "stubborn", mark)]  # SIGTERM ignored from here on
    srv.kill9()
    path = tmp_path / "jobs.toml"
    srv2 = start_server(tmp_path / "state", "--jobs", str(path), wait=False)
    stop_after.append(srv2)

    def health() -> Any:
        try:
            return curl("GET", srv2.http_url + "/health", timeout=2)
        except Exception:
            return None

    during = wait_for(health, timeout=15, every=0.05)
    assert during.status == 503, during.body
    assert during.json["status"] == "starting" and during.json["db"]["ok"] is True
    assert srv2.health() != 1, "gRPC health is not SERVING either"
    srv2.wait_ready(timeout=20)
    after = curl("GET", srv2.http_url + "/health")
    assert after.status == 200 and after.json["status"] == "ok"
    assert not runner.group_alive(running[0]["pgid"])


def test_a_job_that_no_longer_loads_is_recorded_and_the_others_run(
    tmp_path: Path, stop_after: list[ServerProcess]
) -> None:
    from lobwife.v1 import jobs_pb2

    toml = '[jobs.good]\ncommand = ["true"]\nevery = "1s"\n'
    srv = jobs_server(tmp_path, toml)
    assert srv.terminate() == 0
    bad = jobs_pb2.Job(name="bad", interval={"seconds": 1})  # no command: fails validation on load
    conn = sqlite3.connect(srv.state_dir / "lobwife.db")
    with conn:
        conn.execute(
            "INSERT INTO jobs (name, source, definition, paused, next_fire_at, created_at, updated_at)"
            " VALUES ('bad', 'api', ?, 0, 1, 0, 0)",
            (bad.SerializeToString(),),
        )
    conn.close()
    srv2 = jobs_server(tmp_path, toml)
    stop_after.append(srv2)
    (err,) = runs(srv2, "bad")
    assert err["status"] == "error" and "not scheduled: its stored definition is not valid" in err["reason"]
    assert "command" in err["reason"]
    count = len(runs(srv2, "good"))
    wait_for(lambda: len(runs(srv2, "good")) > count + 1)
