"""Job definitions: the one place for a job's rules, whether it comes from the jobs file or the API.

A definition travels as the contract's ``lobwife.v1.Job`` message; ``validate``
checks it and returns a ``JobDef`` with defaults applied and every bound enforced.
Errors name the field (``job.timeout``, ``jobs.flush-logs.timeout``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf import duration_pb2

from lobwife.v1 import jobs_pb2
from lobwife_server.core.errors import ApiError, invalid_argument
from lobwife_server.core.validation import check_timestamp
from lobwife_server.jobs import schedules

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_ARGS = 64
MAX_ARG = 4096
MAX_ENV = 100
MAX_ENV_VALUE = 32 * 1024
MAX_DESCRIPTION = 1000
MAX_CRON = 256

TIMEOUT_DEFAULT, TIMEOUT_MIN, TIMEOUT_MAX = 3600.0, 1.0, 86400.0
RETRIES_MAX = 10
BACKOFF_DEFAULT, BACKOFF_MIN, BACKOFF_MAX = 10.0, 1.0, 3600.0
MAX_BACKOFF_DEFAULT, MAX_BACKOFF_MAX = 600.0, 86400.0
MULTIPLIER_DEFAULT, MULTIPLIER_MIN, MULTIPLIER_MAX = 2.0, 1.0, 10.0
JITTER_DEFAULT = 0.1
START_JITTER_MAX = 3600.0
CATCH_UP_WINDOW_DEFAULT, CATCH_UP_WINDOW_MAX = 3600.0, 7 * 86400.0
INTERVAL_MIN, INTERVAL_MAX = 1.0, 366 * 86400.0

#: Intervals count from a fixed epoch, so restarts and edits never shift their slots.
INTERVAL_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)

CONCURRENCY = {1: "forbid", 2: "allow", 3: "replace"}
CATCH_UP = {1: "skip", 2: "once", 3: "all"}
SOURCES = {1: "file", 2: "api", 3: "builtin"}


@dataclass(frozen=True)
class RetryDef:
    """A job's retry policy with defaults applied: how many retries, and the exponential backoff between them."""

    max_retries: int = 0
    initial_backoff: float = BACKOFF_DEFAULT
    max_backoff: float = MAX_BACKOFF_DEFAULT
    multiplier: float = MULTIPLIER_DEFAULT
    jitter: float = JITTER_DEFAULT

    def backoff(self, retry_number: int) -> float:
        """Delay before retry ``retry_number`` (1-based), before jitter."""
        return float(min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry_number - 1)))


@dataclass(frozen=True)
class JobDef:
    """A job as the scheduler runs it: a validated Job message with every default applied."""

    name: str
    argv: tuple[str, ...]
    description: str = ""
    script: str = ""
    working_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cron: str | None = None
    interval: float | None = None
    run_at: datetime | None = None
    time_zone: str = "UTC"
    enabled: bool = True
    concurrency: str = "forbid"
    timeout: float = TIMEOUT_DEFAULT
    retry: RetryDef = field(default_factory=RetryDef)
    start_jitter: float = 0.0
    catch_up: str = "once"
    catch_up_window: float = CATCH_UP_WINDOW_DEFAULT
    run_on_startup: bool = False
    source: str = "api"


def _duration(d: duration_pb2.Duration) -> float:
    return float(d.seconds) + d.nanos / 1e9


def _duration_text(seconds: float) -> str:
    """Seconds as the jobs file writes them: ``366d``, ``24h``, ``10m``, ``1.5s`` (not ``3.16224e+07s``)."""
    for size, suffix in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{suffix}"
    return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"


def _bounded(field_name: str, value: float, lo: float, hi: float, unit: str = "s") -> float:
    if not lo <= value <= hi:
        shown = _duration_text if unit == "s" else (lambda v: f"{v:g}{unit}")
        raise invalid_argument(field_name, f"must be between {shown(lo)} and {shown(hi)}, got {shown(value)}")
    return value


def check_name(name: str, field_name: str = "name") -> str:
    # fullmatch: `$` alone would also match before a trailing newline ("nightly\n").
    if not NAME_RE.fullmatch(name):
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise invalid_argument(
            field_name,
            f"{shown!r} is not a job name: 1-64 characters, lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit",
        )
    return name


def validate(job: jobs_pb2.Job, prefix: str = "job", *, source: str = "api") -> JobDef:
    """Check a Job message and return its definition with defaults applied."""

    def f(name: str) -> str:
        return f"{prefix}.{name}"

    name = check_name(job.name, f("name"))
    if len(job.description) > MAX_DESCRIPTION:
        raise invalid_argument(f("description"), f"is longer than {MAX_DESCRIPTION} characters")
    if not job.command:
        raise invalid_argument(f("command"), "is required: the program and its arguments")
    if len(job.command) > MAX_ARGS:
        raise invalid_argument(f("command"), f"has more than {MAX_ARGS} arguments")
    for i, arg in enumerate(job.command):
        if len(arg) > MAX_ARG or "\0" in arg:
            raise invalid_argument(f(f"command[{i}]"), f"must be at most {MAX_ARG} characters, without NUL")
    if not job.command[0].strip():
        raise invalid_argument(f("command[0]"), "must name a program")
    if len(job.working_dir) > MAX_ARG:
        raise invalid_argument(f("working_dir"), f"is longer than {MAX_ARG} characters")
    if job.working_dir and not Path(job.working_dir).is_absolute():
        raise invalid_argument(f("working_dir"), "must be an absolute path")
    if len(job.env) > MAX_ENV:
        raise invalid_argument(f("env"), f"has more than {MAX_ENV} variables")
    for key, value in job.env.items():
        if not ENV_KEY_RE.match(key):
            raise invalid_argument(f(f"env.{key[:40]}"), "is not a valid environment variable name")
        if len(value) > MAX_ENV_VALUE:
            raise invalid_argument(f(f"env.{key}"), f"is longer than {MAX_ENV_VALUE} characters")

    which = job.WhichOneof("trigger")
    cron = interval = run_at = None
    if which is None:
        raise invalid_argument(f("cron"), "a schedule is required: cron, interval or run_at")
    if which == "cron":
        cron = job.cron.strip()
        if not cron or len(cron) > MAX_CRON:
            raise invalid_argument(f("cron"), f"must be a cron expression of at most {MAX_CRON} characters")
    elif which == "interval":
        interval = _bounded(f("interval"), _duration(job.interval), INTERVAL_MIN, INTERVAL_MAX)
    else:
        check_timestamp(f("run_at"), job.run_at.seconds, job.run_at.nanos)
        run_at = job.run_at.ToDatetime(tzinfo=UTC)
    zone = job.time_zone or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid_argument(f("time_zone"), f"unknown time zone {zone[:64]!r}") from None
    # The schedule's own rules (cron fields, ranges, a cron that can never fire) are
    # checked here too, so a bad definition is refused when it is given.
    schedules.parse(
        cron=cron, interval_seconds=interval, run_at=run_at, time_zone=zone, anchor=INTERVAL_ANCHOR, prefix=prefix
    )

    timeout = _duration(job.timeout) if job.HasField("timeout") else TIMEOUT_DEFAULT
    _bounded(f("timeout"), timeout, TIMEOUT_MIN, TIMEOUT_MAX)
    retry = RetryDef()
    if job.HasField("retry"):
        r = job.retry
        if not 0 <= r.max_retries <= RETRIES_MAX:
            raise invalid_argument(f("retry.max_retries"), f"must be between 0 and {RETRIES_MAX}")
        initial = _duration(r.initial_backoff) if r.HasField("initial_backoff") else BACKOFF_DEFAULT
        _bounded(f("retry.initial_backoff"), initial, BACKOFF_MIN, BACKOFF_MAX)
        maximum = _duration(r.max_backoff) if r.HasField("max_backoff") else max(MAX_BACKOFF_DEFAULT, initial)
        _bounded(f("retry.max_backoff"), maximum, initial, MAX_BACKOFF_MAX)
        multiplier = r.multiplier or MULTIPLIER_DEFAULT
        _bounded(f("retry.multiplier"), multiplier, MULTIPLIER_MIN, MULTIPLIER_MAX, unit="")
        jitter = r.jitter
        _bounded(f("retry.jitter"), jitter, 0.0, 1.0, unit="")
        retry = RetryDef(r.max_retries, initial, maximum, multiplier, jitter)
    start_jitter = _duration(job.start_jitter) if job.HasField("start_jitter") else 0.0
    _bounded(f("start_jitter"), start_jitter, 0.0, START_JITTER_MAX)
    window = _duration(job.catch_up_window) if job.HasField("catch_up_window") else CATCH_UP_WINDOW_DEFAULT
    _bounded(f("catch_up_window"), window, 0.0, CATCH_UP_WINDOW_MAX)
    return JobDef(
        name=name,
        argv=tuple(job.command),
        description=job.description,
        script=job.script or job.command[-1],
        working_dir=job.working_dir or None,
        env=dict(job.env),
        cron=cron,
        interval=interval,
        run_at=run_at,
        time_zone=zone,
        enabled=job.enabled,
        concurrency=CONCURRENCY.get(job.concurrency, "forbid"),
        timeout=timeout,
        retry=retry,
        start_jitter=start_jitter,
        catch_up=CATCH_UP.get(job.catch_up, "once"),
        catch_up_window=window,
        run_on_startup=job.run_on_startup,
        source=source,
    )


__all__ = ["ApiError", "JobDef", "RetryDef", "check_name", "validate"]
