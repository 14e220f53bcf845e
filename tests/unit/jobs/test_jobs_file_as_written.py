"""The jobs file takes the schedule text the API shows, and its errors name the key the file wrote."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from lobwife_server.jobs import jobs_file, schedules


def load_one(tmp_path: Path, body: str) -> jobs_file.job_defs.JobDef:
    p = tmp_path / "jobs.toml"
    p.write_text("[jobs.slow]\n" + body)
    ((_, job),) = jobs_file.load(p)
    return job


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("every 60s", "interval", 60.0),
        ("every 1.5s", "interval", 1.5),
        ("every 1h30m", "interval", 5400.0),
        ("Every 2d", "interval", 172800.0),
        ("at 2030-06-01T09:30:00Z", "run_at", datetime(2030, 6, 1, 9, 30, tzinfo=UTC)),
        ("at 2030-06-01T11:30:00+02:00", "run_at", datetime(2030, 6, 1, 9, 30, tzinfo=UTC)),
        ("at 2030-06-01T09:30:00.250000Z", "run_at", datetime(2030, 6, 1, 9, 30, 0, 250000, tzinfo=UTC)),
        ("at 2030-06-01T09:30:00", "run_at", datetime(2030, 6, 1, 9, 30, tzinfo=UTC)),  # no zone: UTC
        ("*/5 * * * *", "cron", "*/5 * * * *"),
        ("0 3 * * 1-5", "cron", "0 3 * * 1-5"),
    ],
)
def test_schedule_takes_cron_every_and_at(tmp_path: Path, text: str, kind: str, value: object) -> None:
    job = load_one(tmp_path, f'command = ["true"]\nschedule = "{text}"\n')
    assert getattr(job, kind) == value
    assert [k for k in ("cron", "interval", "run_at") if getattr(job, k) is not None] == [kind]


@pytest.mark.parametrize(
    "given",
    ['every = "45s"', 'every = "2.5s"', "at = 2031-01-02T03:04:05Z", 'schedule = "30 4 1 * *"', "interval = 90"],
)
def test_what_the_api_shows_loads_back_as_the_same_schedule(tmp_path: Path, given: str) -> None:
    first = load_one(tmp_path, f'command = ["true"]\n{given}\n')
    shown = schedules.describe(
        schedules.parse(
            cron=first.cron,
            interval_seconds=first.interval,
            run_at=first.run_at,
            time_zone=first.time_zone,
            anchor=jobs_file.job_defs.INTERVAL_ANCHOR,
        )
    )
    again = load_one(tmp_path, f'command = ["true"]\nschedule = "{shown}"\n')
    assert again == first


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('schedule = "every 60 seconds"', "jobs.slow.schedule: expected a duration"),
        ('schedule = "every 0s"', "jobs.slow.schedule: must be between 1s and 366d, got 0s"),
        ('schedule = "at soon"', "jobs.slow.schedule: expected an RFC 3339 time"),
        ('schedule = "at 1960-01-01T00:00:00Z"', "jobs.slow.schedule: "),
        ('schedule = "61 * * * *"', "jobs.slow.schedule: "),
        ('schedule = "* * *"', "jobs.slow.schedule: "),
        ('schedule = "   "', "jobs.slow.schedule: "),
        ('cron = "* * *"', "jobs.slow.cron: "),
        ('every = "0s"', "jobs.slow.every: must be between"),
        ('interval = "0s"', "jobs.slow.interval: must be between"),
        ('at = "1960-01-01T00:00:00Z"', "jobs.slow.at: "),
        ('run_at = "1960-01-01T00:00:00Z"', "jobs.slow.run_at: "),
        ("at = 2030-06-01", "jobs.slow.at: expected a time"),
        ('schedule = "* * * * *"\ntimezone = "Mars/Olympus"', "jobs.slow.timezone: unknown time zone"),
        ('schedule = "* * * * *"\ntime_zone = "Mars/Olympus"', "jobs.slow.time_zone: unknown time zone"),
        ('schedule = "* * * * *"\ntime_zone = "UTC"\ntimezone = "UTC"', "either time_zone or timezone"),
        ('schedule = "* * * * *"\nretries = 11', "jobs.slow.retries: must be between 0 and 10"),
        ('schedule = "* * * * *"\n[jobs.slow.retry]\nmax_retries = 11', "jobs.slow.retry.max_retries: must be"),
        ('schedule = "* * * * *"\nevery = "1m"', "(got schedule and every)"),
    ],
)
def test_every_error_names_the_key_as_written(tmp_path: Path, body: str, needle: str) -> None:
    with pytest.raises(jobs_file.JobsFileError) as info:
        load_one(tmp_path, 'command = ["true"]\n' + body + "\n")
    assert needle in str(info.value)


def test_script_errors_name_script_and_interpreter(tmp_path: Path) -> None:
    with pytest.raises(jobs_file.JobsFileError, match=r"jobs\.slow\.interpreter: must name a program"):
        load_one(tmp_path, 'script = "x.sh"\ninterpreter = " "\nschedule = "every 1m"\n')
    with pytest.raises(jobs_file.JobsFileError, match=r"jobs\.slow\.script: must be at most"):
        load_one(tmp_path, f'script = "{"x" * 5000}"\nschedule = "every 1m"\n')
