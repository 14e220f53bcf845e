"""Job definitions and the TOML jobs file: bounds, defaults, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from lobwife.v1 import jobs_pb2
from lobwife_server.core.errors import ApiError
from lobwife_server.jobs import definitions as job_defs
from lobwife_server.jobs import jobs_file


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "jobs.toml"
    p.write_text(text)
    return p


def test_loads_jobs_with_defaults_and_relative_paths(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """
[jobs.flush-logs]
description = "Ship logs"
script = "scripts/flush.sh"
interpreter = "bash"
schedule = "*/30 * * * *"
timeout = "10m"
retries = 2

[jobs.ping]
command = ["curl", "-sf", "http://127.0.0.1:8081/health"]
every = "30s"
concurrency = "allow"
catch_up = "skip"
time_zone = "Europe/London"
env = { A = "1" }
working_dir = "work"
[jobs.ping.retry]
max_retries = 3
initial_backoff = "2s"
max_backoff = "1m"
multiplier = 3
jitter = 0.5
""",
    )
    (_, flush), (_, ping) = jobs_file.load(p)
    assert flush.name == "flush-logs" and flush.source == "file"
    assert flush.argv == ("bash", str(tmp_path / "scripts/flush.sh")) and flush.script == str(
        tmp_path / "scripts/flush.sh"
    )
    assert flush.cron == "*/30 * * * *" and flush.timeout == 600 and flush.retry.max_retries == 2
    assert (flush.concurrency, flush.catch_up, flush.time_zone, flush.enabled) == ("forbid", "once", "UTC", True)
    assert ping.interval == 30 and ping.concurrency == "allow" and ping.catch_up == "skip"
    assert ping.env == {"A": "1"} and ping.working_dir == str(tmp_path / "work") and ping.time_zone == "Europe/London"
    assert ping.retry == job_defs.RetryDef(3, 2.0, 60.0, 3.0, 0.5)
    assert [ping.retry.backoff(n) for n in (1, 2, 3, 4, 5)] == [2.0, 6.0, 18.0, 54.0, 60.0]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('[jobs.x]\ncommand = ["true"]\nschedule = "* * * * *"\nbogus = 1', "unknown key 'bogus'"),
        ('[jobs.x]\ncommand = ["true"]', "exactly one of schedule"),
        ('[jobs.x]\ncommand = ["true"]\nschedule = "* * * * *"\nevery = "1m"', "exactly one of schedule"),
        ('[jobs.x]\ncommand = ["true"]\nevery = "soon"', "jobs.x.every: expected a duration"),
        ('[jobs.x]\ncommand = ["true"]\nevery = "0s"', "jobs.x.every: must be between"),
        ('[jobs.x]\ncommand = ["true"]\nevery = -5', "jobs.x.every: must be between"),
        ('[jobs.x]\ncommand = ["true"]\nschedule = "* * * * *"\ntimeout = "2d"', "jobs.x.timeout"),
        ('[jobs.x]\ncommand = ["true"]\nschedule = "* * * * *"\nretries = 99', "jobs.x.retries: must be between"),
        ('[jobs.x]\ncommand = ["true"]\nschedule = "* * * * *"\nconcurrency = "sometimes"', "jobs.x.concurrency"),
        ('[jobs.x]\ncommand = ["true"]\nschedule = "* * * * *"\ntime_zone = "Mars/Olympus"', "jobs.x.time_zone"),
        ('[jobs.x]\nschedule = "* * * * *"', "jobs.x.command: is required"),
        ('[jobs."a/b"]\ncommand = ["true"]\nschedule = "* * * * *"', "is not a job name"),
        ('[jobs."a..b"]\ncommand = ["true"]\nschedule = "* * * * *"', "is not a job name"),
        ('[jobs."a b"]\ncommand = ["true"]\nschedule = "* * * * *"', "is not a job name"),
        (f'[jobs.{"a" * 10_000}]\ncommand = ["true"]\nschedule = "* * * * *"', "is not a job name"),
        ('[jobs.x]\ncommand = ["true"]\nschedule = "* * * * *"\nstart_jitter = "2h"', "jobs.x.start_jitter"),
        ('[job.x]\ncommand = ["true"]', "unknown top-level key 'job'"),
        ('[jobs.lobwife-backup]\ncommand = ["true"]\nschedule = "* * * * *"', "reserved"),
    ],
)
def test_mistakes_name_the_job_and_field(tmp_path: Path, body: str, needle: str) -> None:
    with pytest.raises(jobs_file.JobsFileError) as info:
        jobs_file.load(write(tmp_path, body))
    assert needle in str(info.value) and str(tmp_path / "jobs.toml") in str(info.value)


def test_syntax_error_says_where(tmp_path: Path) -> None:
    p = write(tmp_path, '[jobs.x]\ncommand = ["true"\nschedule = "* * * * *"\n')
    with pytest.raises(jobs_file.JobsFileError) as info:
        jobs_file.load(p)
    assert "TOML syntax error" in str(info.value) and "line" in str(info.value)


def test_unreadable_and_huge_files(tmp_path: Path) -> None:
    with pytest.raises(jobs_file.JobsFileError, match="cannot read"):
        jobs_file.load(tmp_path / "missing.toml")
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (jobs_file.MAX_FILE_BYTES + 1))
    with pytest.raises(jobs_file.JobsFileError, match="larger than"):
        jobs_file.load(big)


@pytest.mark.parametrize(
    ("seconds", "text"), [(90.0, "90s"), (5400.0, "1h30m"), (172800.0, "2d"), (0.25, "250ms"), (30.0, 30)]
)
def test_durations(seconds: float, text: object) -> None:
    assert jobs_file.parse_duration(text, "x") == seconds


def test_api_validation_names_the_request_field() -> None:
    ok = jobs_pb2.Job(name="nightly", command=["true"], cron="0 3 * * *")
    assert job_defs.validate(ok).cron == "0 3 * * *"
    bad = [
        (jobs_pb2.Job(name="Bad Name", command=["true"], cron="* * * * *"), "job.name"),
        (jobs_pb2.Job(name="x", cron="* * * * *"), "job.command"),
        (jobs_pb2.Job(name="x", command=["true"]), "job.cron"),
        (jobs_pb2.Job(name="x", command=["true"], cron="* * * * *", working_dir="rel"), "job.working_dir"),
        (jobs_pb2.Job(name="x", command=["true"], cron="* * * * *", env={"1BAD": "v"}), "job.env.1BAD"),
        (jobs_pb2.Job(name="x", command=["a\0b"], cron="* * * * *"), "job.command[0]"),
    ]
    for job, field in bad:
        with pytest.raises(ApiError) as info:
            job_defs.validate(job)
        assert [v[0] for v in info.value.violations] == [field]
