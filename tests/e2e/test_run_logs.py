"""Job runs in the server's log: a start and an end line per run, a line per retry scheduled.

The real server runs a real job that fails once and then succeeds; its JSON log (stderr,
one object per line) is read back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import ServerProcess, start_server
from tests.e2e.test_scheduler import wait_for
from tests.http_util import curl


def log_records(srv: ServerProcess) -> list[dict[str, Any]]:
    out = []
    for line in srv.log().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def job_lines(srv: ServerProcess, job: str) -> list[dict[str, Any]]:
    return [r for r in log_records(srv) if r.get("logger") == "lobwife.scheduler" and r.get("job") == job]


def test_a_runs_start_end_and_retry_are_logged_with_their_fields(tmp_path: Path) -> None:
    marker = tmp_path / "ran-once"
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(
        f"""
[jobs.flaky]
command = ["sh", "-c", "if [ -e {marker} ]; then echo ok; else touch {marker}; exit 3; fi"]
every = "1h"
[jobs.flaky.retry]
max_retries = 2
initial_backoff = "1s"
jitter = 0
"""
    )
    srv = start_server(tmp_path / "state", "--jobs", str(jobs))
    try:
        curl("POST", srv.http_url + "/api/jobs/flaky/trigger")
        wait_for(lambda: any(r.get("status") == "success" for r in job_lines(srv, "flaky")), timeout=20)
    finally:
        srv.terminate()
    lines = job_lines(srv, "flaky")
    # The fields under test (ts varies; the messages are checked below).
    keys = ("level", "run_id", "trigger", "attempt", "status", "exit_code", "retry_of")
    got = [{k: r[k] for k in keys if k in r} for r in lines if "run_id" in r]
    assert got == [
        {"level": "info", "run_id": 1, "trigger": "manual", "attempt": 1},
        {"level": "warning", "run_id": 1, "trigger": "manual", "attempt": 1, "status": "failed", "exit_code": 3},
        {"level": "info", "run_id": 2, "attempt": 2, "retry_of": 1},
        {"level": "info", "run_id": 2, "trigger": "retry", "attempt": 2},
        {"level": "info", "run_id": 2, "trigger": "retry", "attempt": 2, "status": "success", "exit_code": 0},
    ], lines
    ends = [r for r in lines if "status" in r]
    assert all(isinstance(r["duration"], float) and 0 <= r["duration"] < 10 for r in ends), ends
    retry = next(r for r in lines if "retry_of" in r)
    assert retry["delay_seconds"] == 1.0
    assert [r["msg"] for r in lines if "run_id" in r][:3] == [
        "run 1 of flaky started (manual)",
        "run 1 of flaky failed: exited with code 3",
        "run 1 of flaky failed: retry 1 of 2 is run 2, in 1.0s",
    ]


def test_text_log_format_keeps_the_fields(tmp_path: Path) -> None:
    """`--log-format text`: "lobwife serving" still says the ports, "database ready" the path."""
    srv = start_server(tmp_path / "state", "--log-format", "text")
    try:
        log = srv.log()
    finally:
        srv.terminate()
    serving = next(line for line in log.splitlines() if "lobwife serving" in line)
    assert f"grpc={srv.grpc_addr}" in serving and f"http=127.0.0.1:{srv.http_port}" in serving, serving
    ready = next(line for line in log.splitlines() if "database ready" in line)
    assert f"path={srv.state_dir / 'lobwife.db'}" in ready, ready
