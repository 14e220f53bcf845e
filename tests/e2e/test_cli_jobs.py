"""``lobwife jobs ...``: parsing, formatting, following a run, and real runs.

Formatting and ``logs --follow`` are tested in-process (the follow logic against a
scripted client, so every path is deterministic); the commands run end to end as
``python -m lobwife`` subprocesses against the real server with a jobs file.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from lobwife import cli
from lobwife.cli import build_parser, follow_run, format_job, format_seconds, job_row, main, next_rows, run_row
from lobwife.client import Client, LobwifeError
from lobwife.v1 import jobs_pb2
from tests.conftest import ROOT, ServerProcess, start_server, subprocess_env

J = jobs_pb2


def ts(text: str) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromJsonString(text)
    return out


def secs(n: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(n * 1e9))
    return out


def detail_of(text: str) -> dict[str, str]:
    """``key: value`` lines as a dict (indented lines, the output tail, left out)."""
    return {
        k.strip(): v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if not line.startswith(" "))
    }


# --- parsing ----------------------------------------------------------------------------


def test_jobs_arguments() -> None:
    parser = build_parser()
    ns = parser.parse_args(["jobs", "runs", "tick", "--limit", "5", "--json"])
    assert (ns.command, ns.action, ns.name, ns.limit, ns.all, ns.json) == ("jobs", "runs", "tick", 5, False, True)
    assert parser.parse_args(["jobs", "runs", "tick"]).limit == cli.RUNS_DEFAULT_LIMIT
    assert parser.parse_args(["jobs", "runs", "tick", "--all"]).all is True
    ns = parser.parse_args(["jobs", "logs", "tick", "7", "-f"])
    assert (ns.run_id, ns.follow) == (7, True)
    ns = parser.parse_args(["jobs", "logs", "tick"])
    assert (ns.run_id, ns.follow) == (None, False)
    assert parser.parse_args(["jobs", "next", "tick"]).count == cli.NEXT_DEFAULT_COUNT
    assert parser.parse_args(["--addr", "a:1", "jobs", "next", "tick", "--count", "100"]).count == 100


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["jobs", "runs", "x", "--limit", "5", "--all"], "not allowed with argument"),
        (["jobs", "runs", "x", "--limit", "0"], "must be positive"),
        (["jobs", "next", "x", "--count", "101"], "at most 100, not 101"),
        (["jobs", "next", "x", "--count", "0"], "must be positive"),
        (["jobs", "logs", "x", "last"], "not a whole number"),
        (["jobs", "trigger"], "required: NAME"),
        (["jobs"], "required: ACTION"),
        (["jobs", "frobnicate", "x"], "invalid choice"),
    ],
)
def test_jobs_usage_errors_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and message in err


# --- formatting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.523, "0.52s"),
        (9.999, "10.0s"),
        (12.34, "12.3s"),
        (45.0, "45s"),
        (59.96, "1m"),
        (90.0, "1m30s"),
        (3600.0, "1h"),
        (5400.0, "1h30m"),
        (86400.0 + 6 * 3600, "1d6h"),
    ],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def a_job(**kw: Any) -> jobs_pb2.Job:
    fields: dict[str, Any] = {
        "name": "flush-logs",
        "description": "Ship pod logs",
        "command": ["bash", "/srv/flush logs.sh"],
        "script": "/srv/flush logs.sh",
        "env": {"TOKEN": "s3cret", "LEVEL": "info"},
        "schedule": "*/30 * * * *",
        "cron": "*/30 * * * *",
        "time_zone": "Europe/Berlin",
        "enabled": True,
        "concurrency": J.CONCURRENCY_POLICY_FORBID,
        "timeout": secs(600),
        "retry": J.RetryPolicy(max_retries=2, initial_backoff=secs(5), max_backoff=secs(30), multiplier=2, jitter=0.2),
        "start_jitter": secs(0),
        "catch_up": J.CATCH_UP_POLICY_ONCE,
        "catch_up_window": secs(3600),
        "source": J.JOB_SOURCE_FILE,
        "last_run": ts("2026-01-02T03:04:05.500Z"),
        "last_status": J.RUN_STATUS_FAILED,
        "last_duration": 1.5,
        "run_count": 12,
        "fail_count": 3,
        "next_run": ts("2026-01-02T03:30:00Z"),
    }
    return J.Job(**(fields | kw))


def test_job_row() -> None:
    row = job_row(a_job())
    assert row == [
        "flush-logs",
        "yes",
        "*/30 * * * * (Europe/Berlin)",
        "failed",
        "2026-01-02T03:04:05Z",
        "2026-01-02T03:30:00Z",
        "12/3",
        "file",
    ]
    assert job_row(a_job(running=True))[3] == "running"
    idle = job_row(J.Job(name="n", schedule="every 30s", interval=secs(30), time_zone="Europe/Berlin"))
    # An interval has no zone; nothing ran yet; disabled has no next run.
    assert idle[1:] == ["no", "every 30s", "-", "-", "-", "0/0", "-"]


def test_format_job_shows_the_definition_and_the_output_tail() -> None:
    output = "".join(f"line {i}\n" for i in range(1, 26))
    text = format_job(a_job(last_output=output))
    detail = detail_of(text)
    assert detail["command"] == "bash '/srv/flush logs.sh'"  # shell-quoted: can be pasted
    assert "script" not in detail  # the command already says it
    assert detail["time_zone"] == "Europe/Berlin" and detail["concurrency"] == "forbid"
    assert detail["timeout"] == "10m" and detail["catch_up"] == "once (window 1h)"
    assert detail["retry"] == "2 retries, backoff 5s x2 per retry up to 30s, jitter 20%"
    assert detail["env"] == "LEVEL, TOKEN (values: --json)" and "s3cret" not in text
    assert detail["last_status"] == "failed" and detail["last_duration"] == "1.50s"
    assert detail["runs"] == "12 (3 failed)" and detail["last_output"] == "(last 20 of 25 lines)"
    tail = [line for line in text.splitlines() if line.startswith("  ")]
    assert tail == [f"  line {i}" for i in range(6, 26)]
    # Values start in one column.
    keyed = [line for line in text.splitlines() if not line.startswith(" ")]
    assert len({len(line) - len(line.split(":", 1)[1].lstrip()) for line in keyed if line.split(":", 1)[1]}) == 1

    bare = detail_of(format_job(J.Job(name="b", command=["python3", "x.py"], script="/srv/x.py")))
    assert bare["script"] == "/srv/x.py" and bare["retry"] == "none" and bare["last_output"] == "-"
    assert bare["env"] == "-" and bare["last_run"] == "-" and bare["time_zone"] == "UTC"
    assert detail_of(format_job(a_job(last_output="")))["last_output"] == "(empty)"


def test_run_row() -> None:
    run = J.JobRun(
        run_id=42,
        job_name="x",
        trigger=J.RUN_TRIGGER_RETRY,
        status=J.RUN_STATUS_TIMEOUT,
        scheduled_at=ts("2026-01-02T03:00:00Z"),
        started_at=ts("2026-01-02T03:00:00.250Z"),
        duration=30.02,
        attempt=2,
        reason="timed out after 30s;\nkilled the process group",
    )
    assert run_row(run) == [
        "42",
        "retry",
        "timeout",
        "2026-01-02T03:00:00Z",
        "2026-01-02T03:00:00Z",
        "30.0s",
        "-",
        "2",
        "timed out after 30s; killed the process group",
    ]
    pending = run_row(J.JobRun(run_id=1, trigger=J.RUN_TRIGGER_MANUAL, status=J.RUN_STATUS_PENDING, attempt=1))
    assert pending == ["1", "manual", "pending", "-", "-", "-", "-", "1", ""]
    assert run_row(J.JobRun(run_id=2, exit_code=0, duration=0.5))[5:7] == ["0.50s", "0"]


def test_next_rows_across_a_dst_change() -> None:
    # Europe/Berlin springs forward at 01:00 UTC on 2026-03-29.
    job = J.Job(name="x", next_runs=[ts("2026-03-28T08:00:00Z"), ts("2026-03-29T07:00:00Z")])
    assert next_rows(job, ZoneInfo("Europe/Berlin")) == [
        ["2026-03-28T09:00:00+01:00 CET", "2026-03-28T08:00:00Z"],
        ["2026-03-29T09:00:00+02:00 CEST", "2026-03-29T07:00:00Z"],
    ]
    assert next_rows(job, UTC)[0] == ["2026-03-28T08:00:00+00:00 UTC", "2026-03-28T08:00:00Z"]


# --- logs --follow against a scripted client ---------------------------------------------


def running(run_id: int, chunk: str = "", name: str = "x") -> jobs_pb2.WatchRunsResponse:
    return J.WatchRunsResponse(
        run=J.JobRun(run_id=run_id, job_name=name, status=J.RUN_STATUS_RUNNING), output_chunk=chunk
    )


def final(
    run_id: int, status: J.RunStatus.ValueType = J.RUN_STATUS_SUCCESS, name: str = "x"
) -> jobs_pb2.WatchRunsResponse:
    run = J.JobRun(run_id=run_id, job_name=name, status=status, trigger=J.RUN_TRIGGER_SCHEDULE, attempt=1)
    if status == J.RUN_STATUS_SUCCESS:
        run.exit_code, run.duration = 0, 0.5
    return J.WatchRunsResponse(run=run)


class ScriptedClient:
    """``watch_runs`` plays one script per call (an exception in a script is raised
    there; a script that runs out blocks, as a quiet stream does); ``get_run``
    answers from ``runs``, a list of answers per run id (the last one repeats)."""

    def __init__(self, scripts: list[list[Any]], runs: dict[int, list[jobs_pb2.JobRun]] | None = None) -> None:
        self.scripts = scripts
        self.runs = runs or {}
        self.watches: list[dict[str, Any]] = []
        self.gets: list[int] = []
        self.quiet = threading.Event()  # set at the end of a test to release blocked streams

    def watch_runs(self, **kw: Any) -> Iterator[jobs_pb2.WatchRunsResponse]:
        self.watches.append(kw)
        script = self.scripts[len(self.watches) - 1]
        for item in script:
            if isinstance(item, BaseException):
                raise item
            yield item
        self.quiet.wait(10)

    def get_run(self, name: str, run_id: int) -> jobs_pb2.JobRun:
        self.gets.append(run_id)
        answers = self.runs[run_id]
        return answers.pop(0) if len(answers) > 1 else answers[0]


@pytest.fixture
def follow(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    clients: list[ScriptedClient] = []

    def _follow(client: ScriptedClient, *args: str) -> tuple[int, str, str, list[float]]:
        clients.append(client)
        ns = build_parser().parse_args(["jobs", "logs", "x", *args, "--follow"])
        sleeps: list[float] = []
        code = follow_run(ns, client, sleep=sleeps.append, idle_check=0.05)  # type: ignore[arg-type]
        out, err = capsys.readouterr()
        return code, out, err, sleeps

    yield _follow
    for c in clients:
        c.quiet.set()


def stored(run_id: int, output: str, status: J.RunStatus.ValueType = J.RUN_STATUS_SUCCESS) -> jobs_pb2.JobRun:
    return J.JobRun(run_id=run_id, job_name="x", status=status, output=output, trigger=J.RUN_TRIGGER_MANUAL)


def test_follow_streams_the_next_run_only(follow: Any) -> None:
    client = ScriptedClient(
        [
            [
                final(3, J.RUN_STATUS_SKIPPED),  # never started: not followed
                running(4),
                running(4, "a\n"),
                running(5, "another run\n"),  # concurrency allow: not this one
                running(4, "b"),
                running(4, "\n"),
                final(4),
                running(6, "after\n"),
            ]
        ],
        {4: [stored(4, "a\nb\n")]},
    )
    code, out, err, _ = follow(client)
    assert (code, out) == (0, "a\nb\n")
    assert err.splitlines() == [
        "waiting for a run of x",
        "following run 4",
        "run 4 of x: success, exit 0, 0.50s (schedule)",
    ]
    # reconnect=False: follow_run resumes by itself, looking the run up after a break.
    assert client.watches == [{"name": "x", "include_output": True, "reconnect": False}]
    assert client.gets == []  # the live output was complete


def test_follow_joins_a_run_in_progress(follow: Any) -> None:
    client = ScriptedClient([[running(7, "late\n"), final(7, J.RUN_STATUS_FAILED)]], {7: [stored(7, "early\nlate\n")]})
    code, out, err, _ = follow(client)
    assert (code, out) == (0, "late\n")
    assert "(joined run 7 while running: its earlier output is not shown)" in err
    assert err.splitlines()[-1] == "run 7 of x: failed (schedule)"


def test_follow_prints_the_stored_output_when_the_live_output_was_missed(follow: Any) -> None:
    client = ScriptedClient([[final(8)]], {8: [stored(8, "all of it\n")]})
    code, out, _, _ = follow(client)
    assert (code, out) == (0, "all of it\n") and client.gets == [8]


def test_follow_a_finished_run_id_prints_it_without_watching(follow: Any) -> None:
    client = ScriptedClient([], {5: [stored(5, "done\n", J.RUN_STATUS_FAILED)]})
    code, out, err, _ = follow(client, "5")
    assert (code, out, client.watches) == (0, "done\n", [])
    assert err == "run 5 of x: failed (manual)\n"


def test_follow_a_run_id_that_ends_before_the_watch_starts(follow: Any) -> None:
    """No message about it will come: the idle check finds it over and prints its output."""
    pending = J.JobRun(run_id=9, job_name="x", status=J.RUN_STATUS_RUNNING)
    client = ScriptedClient([[]], {9: [pending, pending, stored(9, "quick\n")]})
    code, out, _, _ = follow(client, "9")
    assert (code, out) == (0, "quick\n")
    assert client.gets == [9, 9, 9]


def test_follow_rides_out_a_server_restart(follow: Any) -> None:
    gone = LobwifeError(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    still = J.JobRun(run_id=4, job_name="x", status=J.RUN_STATUS_RUNNING)
    client = ScriptedClient(
        [[running(4), running(4, "a\n"), gone], [running(4, "b\n"), final(4)]],
        {4: [still]},
    )
    code, out, err, sleeps = follow(client)
    assert (code, out, sleeps) == (0, "a\nb\n", [cli.WATCH_RECONNECT_MIN_S])
    assert "watch interrupted (Socket closed); watching again" in err
    assert len(client.watches) == 2


def test_follow_stops_when_the_run_ended_during_the_interruption(follow: Any) -> None:
    gone = LobwifeError(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    client = ScriptedClient([[running(4, "a\n"), gone]], {4: [stored(4, "a\nb\n", J.RUN_STATUS_ABANDONED)]})
    code, out, err, sleeps = follow(client)
    assert (code, out, sleeps) == (0, "a\n", [])
    assert "the whole output: lobwife jobs logs x 4" in err


def test_follow_other_errors_end_it(follow: Any) -> None:
    client = ScriptedClient([[LobwifeError(grpc.StatusCode.NOT_FOUND, "Unknown job: x")]])
    with pytest.raises(LobwifeError):
        follow(client)


def test_follow_json_prints_each_message(follow: Any) -> None:
    client = ScriptedClient([[running(4), running(4, "a\n"), final(4)]])
    code, out, err, _ = follow(client, "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(m["run"]["status"], m["output_chunk"]) for m in lines] == [
        ("running", ""),
        ("running", "a\n"),
        ("success", ""),
    ]
    assert (code, err) == (0, "")


# --- end to end: the real server -----------------------------------------------------------

JOBS_TOML = """
[jobs.hello]
description = "says two things"
command = ["sh", "-c", "echo one; sleep 0.5; echo two"]
schedule = "0 9 * * 1-5"
time_zone = "Europe/Berlin"
timeout = "90s"
retries = 2
catch_up = "all"
env = {{ GREETING = "hi" }}

[jobs.gate]
description = "runs until the test opens the gate"
command = ["sh", "-c", "echo waiting; while [ ! -e gate.open ]; do sleep 0.05; done; echo released"]
working_dir = "{root}"
schedule = "0 0 1 1 *"
timeout = "20s"

[jobs.oops]
command = ["sh", "-c", "echo bad >&2; exit 3"]
every = "1h"

[jobs.quiet]
command = ["true"]
at = "2099-01-01T00:00:00Z"

[jobs.tick]
command = ["sh", "-c", "echo tick; sleep 0.3; echo tock"]
schedule = "* * * * * *"
"""


@pytest.fixture(scope="module")
def jobs_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("cli-jobs")
    (root / "jobs.toml").write_text(JOBS_TOML.format(root=root))
    srv = start_server(root / "state", "--jobs", str(root / "jobs.toml"))
    yield srv
    (root / "gate.open").touch()  # never leave a run waiting for the shutdown grace
    if srv.proc.poll() is None:
        srv.terminate()


@pytest.fixture
def env(jobs_srv: ServerProcess) -> dict[str, str]:
    return {"LOBWIFE_ADDR": jobs_srv.grpc_addr}


@pytest.fixture
def lw(jobs_srv: ServerProcess) -> Iterator[Client]:
    with Client(jobs_srv.grpc_addr, timeout=10) as c:
        yield c


def lobwife(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lobwife", *args],
        env=subprocess_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def table(text: str) -> list[list[str]]:
    """A table's rows as cells, split at the header's column starts (cells may hold spaces)."""
    header, *rows = text.splitlines()
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", header)]
    bounds = [*starts[1:], None]
    return [[line[a:b].strip() for a, b in zip(starts, bounds, strict=True)] for line in [header, *rows]]


def wait_finished(lw: Client, name: str, run_id: int, timeout: float = 10) -> jobs_pb2.JobRun:
    deadline = time.monotonic() + timeout
    while True:
        run = lw.get_run(name, run_id)
        if run.status in cli.FINAL_STATUSES or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def test_e2e_jobs_list_and_get(env: dict[str, str]) -> None:
    proc = lobwife("jobs", "list", env=env)
    assert proc.returncode == 0, proc.stderr
    header, *rows = table(proc.stdout)
    assert header == ["NAME", "ENABLED", "SCHEDULE", "LAST STATUS", "LAST RUN", "NEXT RUN", "RUNS/FAILS", "SOURCE"]
    by_name = {r[0]: r for r in rows}
    assert [r[0] for r in rows] == sorted(by_name)
    assert {"hello", "gate", "oops", "quiet", "tick", "lobwife-backup"} <= by_name.keys()
    assert by_name["hello"][1:3] == ["yes", "0 9 * * 1-5 (Europe/Berlin)"]
    assert by_name["hello"][5].endswith(":00:00Z") and by_name["hello"][7] == "file"
    assert by_name["oops"][2] == "every 3600s" and by_name["quiet"][2] == "at 2099-01-01T00:00:00Z"
    assert by_name["lobwife-backup"][7] == "builtin"

    proc = lobwife("jobs", "list", "--json", env=env)
    jobs = {j["name"]: j for j in json.loads(proc.stdout)["jobs"]}
    assert jobs["hello"]["concurrency"] == "forbid" and jobs["hello"]["source"] == "file"
    assert jobs["hello"]["env"] == {"GREETING": "hi"} and isinstance(jobs["tick"]["run_count"], int)

    proc = lobwife("jobs", "get", "hello", env=env)
    assert proc.returncode == 0, proc.stderr
    detail = detail_of(proc.stdout)
    assert detail["command"] == "sh -c 'echo one; sleep 0.5; echo two'"
    assert (detail["time_zone"], detail["concurrency"], detail["timeout"]) == ("Europe/Berlin", "forbid", "1m30s")
    assert detail["retry"].startswith("2 retries, backoff 10s x2 per retry up to 10m")
    assert detail["catch_up"] == "all (window 1h)" and detail["env"] == "GREETING (values: --json)"
    assert detail["enabled"] == "yes" and detail["source"] == "file"

    proc = lobwife("jobs", "get", "hello", "--json", env=env)
    data = json.loads(proc.stdout)
    assert data["timeout"] == "90s" and data["catch_up"] == "all" and len(data["next_runs"]) == 5

    proc = lobwife("jobs", "get", "nope", env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", "error: NOT_FOUND: Unknown job: nope\n")


def test_e2e_trigger_refused_while_running_then_logs(env: dict[str, str], lw: Client, jobs_srv: ServerProcess) -> None:
    proc = lobwife("jobs", "trigger", "gate", env=env)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"\d+\n", proc.stdout), proc.stdout
    run_id = int(proc.stdout)

    proc = lobwife("jobs", "trigger", "gate", env=env)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == "error: FAILED_PRECONDITION: Job gate is already running\n"
    row = table(lobwife("jobs", "list", env=env).stdout)
    assert [r[3] for r in row if r[0] == "gate"] == ["running"]

    # A running run has no stored output yet; --follow streams it until it ends.
    proc = lobwife("jobs", "logs", "gate", str(run_id), env=env)
    assert proc.returncode == 1 and "is running: its output is stored when it finishes" in proc.stderr
    follower = subprocess.Popen(
        [sys.executable, "-m", "lobwife", "jobs", "logs", "gate", str(run_id), "--follow"],
        env=subprocess_env(**env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.3)  # not needed for correctness: lets the follower usually attach while it runs
        (Path(jobs_srv.state_dir).parent / "gate.open").touch()
        out, err = follower.communicate(timeout=20)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    assert out.endswith("released\n")
    assert err.splitlines()[-1].startswith(f"run {run_id} of gate: success, exit 0, ")

    assert wait_finished(lw, "gate", run_id).status == J.RUN_STATUS_SUCCESS
    proc = lobwife("jobs", "logs", "gate", env=env)  # the newest finished run
    assert (proc.returncode, proc.stdout) == (0, "waiting\nreleased\n")
    assert proc.stderr.startswith(f"run {run_id} of gate: success, exit 0, ") and "(manual)" in proc.stderr


def test_e2e_runs_and_logs_of_a_failed_run(env: dict[str, str], lw: Client) -> None:
    run_id = int(lobwife("jobs", "trigger", "oops", env=env).stdout)
    assert wait_finished(lw, "oops", run_id).status == J.RUN_STATUS_FAILED

    proc = lobwife("jobs", "runs", "oops", env=env)
    assert proc.returncode == 0, proc.stderr
    header, first, *_ = table(proc.stdout)
    assert header == ["RUN", "TRIGGER", "STATUS", "SLOT", "STARTED", "DURATION", "EXIT", "ATTEMPT", "REASON"]
    assert first[:4] == [str(run_id), "manual", "failed", "-"]
    assert first[4].endswith("Z") and first[5].endswith("s")
    assert first[6:] == ["3", "1", "exited with code 3"]

    proc = lobwife("jobs", "runs", "oops", "--json", env=env)
    [run] = [r for r in json.loads(proc.stdout)["runs"] if r["run_id"] == run_id]
    assert (run["status"], run["exit_code"], run["trigger"], run["output"]) == ("failed", 3, "manual", "bad\n")

    proc = lobwife("jobs", "logs", "oops", env=env)
    assert (proc.returncode, proc.stdout) == (0, "bad\n")
    assert proc.stderr == f"run {run_id} of oops: failed, exit 3, {cli.format_seconds(run['duration'])} (manual)"\
        " — exited with code 3\n"  # fmt: skip
    proc = lobwife("jobs", "logs", "oops", str(run_id), "--json", env=env)
    assert json.loads(proc.stdout)["output"] == "bad\n" and proc.stderr == ""

    proc = lobwife("jobs", "get", "oops", env=env)
    detail = detail_of(proc.stdout)
    assert detail["last_status"] == "failed" and detail["runs"].endswith("failed)")
    assert proc.stdout.endswith("last_output:\n  bad\n")

    proc = lobwife("jobs", "logs", "quiet", env=env)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == f"error: no finished run of quiet (among its newest {cli.LOGS_SCAN_MAX})\n"
    proc = lobwife("jobs", "logs", "oops", "999999", env=env)
    assert (proc.returncode, proc.stderr) == (1, "error: NOT_FOUND: Run 999999 of job oops not found\n")


def test_e2e_runs_limit_and_all(env: dict[str, str], lw: Client) -> None:
    deadline = time.monotonic() + 10
    while len(lw.list_runs("tick", page_size=3).runs) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc = lobwife("jobs", "runs", "tick", "--limit", "2", env=env)
    assert proc.returncode == 0, proc.stderr
    _, *rows = table(proc.stdout)
    assert len(rows) == 2 and int(rows[0][0]) > int(rows[1][0])
    assert {r[1] for r in rows} == {"schedule"} and all(r[3].endswith("Z") for r in rows)
    assert proc.stderr == "more runs: --limit 4 or --all\n"

    proc = lobwife("jobs", "runs", "tick", "--all", "--json", env=env)
    runs = json.loads(proc.stdout)["runs"]
    assert len(runs) >= 3 and proc.stderr == ""
    assert [r["run_id"] for r in runs] == sorted((r["run_id"] for r in runs), reverse=True)


def test_e2e_logs_follow_streams_the_next_run(env: dict[str, str]) -> None:
    started = time.monotonic()
    proc = lobwife("jobs", "logs", "tick", "--follow", env=env, timeout=15)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 10
    err = proc.stderr.splitlines()
    assert err[0] == "waiting for a run of tick"
    run_id = int(err[1].removeprefix("following run "))
    assert err[-1].startswith(f"run {run_id} of tick: success, exit 0, ")
    # Joined at the start (the usual case): all of it; joined mid-run: the rest of it.
    assert proc.stdout in ("tick\ntock\n", "tock\n")


def test_e2e_next_enable_disable(env: dict[str, str]) -> None:
    proc = lobwife("jobs", "next", "hello", "--count", "3", env=env)
    assert proc.returncode == 0, proc.stderr
    header, *rows = table(proc.stdout)
    assert header == ["TIME (Europe/Berlin)", "UTC"] and len(rows) == 3
    berlin = ZoneInfo("Europe/Berlin")
    for local, utc in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT09:00:00\+0[12]:00 CES?T", local), local
        as_utc = datetime.fromisoformat(utc.replace("Z", "+00:00"))
        assert as_utc.astimezone(berlin).isoformat() == local.split()[0]
        assert as_utc.astimezone(berlin).isoweekday() <= 5  # 1-5: weekdays only

    proc = lobwife("jobs", "next", "tick", "--count", "2", "--json", env=env)
    data = json.loads(proc.stdout)
    assert data["name"] == "tick" and data["time_zone"] == "UTC"
    first, second = (datetime.fromisoformat(r["time"]) for r in data["next_runs"])
    assert (second - first).total_seconds() == 1
    assert data["next_runs"][0]["utc"].endswith("Z")

    assert lobwife("jobs", "disable", "hello", env=env).stdout == "disabled hello\n"
    rows = table(lobwife("jobs", "list", env=env).stdout)
    [hello] = [r for r in rows if r[0] == "hello"]
    assert (hello[1], hello[5]) == ("no", "-")
    proc = lobwife("jobs", "next", "hello", env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "no next runs of hello: it is disabled\n")

    proc = lobwife("jobs", "enable", "hello", env=env)
    assert re.fullmatch(r"enabled hello \(next run \d{4}-\d\d-\d\dT0[78]:00:00Z\)\n", proc.stdout), proc.stdout
    proc = lobwife("jobs", "disable", "hello", "--json", env=env)
    assert json.loads(proc.stdout)["enabled"] is False
    assert json.loads(lobwife("jobs", "enable", "hello", "--json", env=env).stdout)["enabled"] is True

    for action in ("enable", "disable", "trigger", "next", "runs", "logs"):
        proc = lobwife("jobs", action, "nope", env=env)
        assert (proc.returncode, proc.stderr) == (1, "error: NOT_FOUND: Unknown job: nope\n"), action
