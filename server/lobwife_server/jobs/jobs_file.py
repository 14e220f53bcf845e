"""The jobs file: TOML definitions of file-owned jobs, reconciled into the database on start.

    [jobs.flush-logs]
    description = "Ship pod logs"
    script = "scripts/flush-logs.sh"     # relative to this file; or command = ["python3", "x.py"]
    interpreter = "bash"                 # optional; default: run the script itself
    schedule = "*/30 * * * *"            # cron (5 or 6 fields), "every 30s" or "at 2026-12-01T09:00:00Z"
                                         # (the text the API shows); or every = "30s"; or at = "2026-..."
    time_zone = "UTC"
    concurrency = "forbid"               # forbid | allow | replace
    timeout = "10m"
    retries = 2                          # or a table: [jobs.NAME.retry] max_retries, initial_backoff, ...
    catch_up = "once"                    # skip | once | all
    catch_up_window = "1h"
    start_jitter = "0s"
    run_on_startup = false
    enabled = true
    working_dir = "/srv"                 # relative paths are relative to this file
    env = { LOG_LEVEL = "info" }

A file that cannot be read or has a mistake raises JobsFileError saying where: the
key as the file spells it (``jobs.slow.schedule``, ``jobs.slow.every``), even when the
rule that refused it checks the API's field (``cron``, ``interval``).
"""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import duration_pb2

from lobwife.v1 import jobs_pb2
from lobwife_server.core.errors import ApiError
from lobwife_server.jobs import definitions as job_defs

MAX_FILE_BYTES = 1024 * 1024
MAX_JOBS = 10_000
_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)\s*d)?\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m(?!s))?"
    r"\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*(?:(\d+(?:\.\d+)?)\s*ms)?\s*$"
)
_KNOWN = {
    "description",
    "command",
    "script",
    "interpreter",
    "schedule",
    "cron",
    "every",
    "interval",
    "at",
    "run_at",
    "time_zone",
    "timezone",
    "concurrency",
    "timeout",
    "retries",
    "retry",
    "catch_up",
    "catch_up_window",
    "start_jitter",
    "run_on_startup",
    "enabled",
    "working_dir",
    "env",
}
_ENUMS = {
    "concurrency": {"forbid": 1, "allow": 2, "replace": 3},
    "catch_up": {"skip": 1, "once": 2, "all": 3},
}


class JobsFileError(ValueError):
    """The jobs file cannot be used; the message says where and why."""


def parse_duration(value: object, where: str) -> float:
    """``90``, ``"90s"``, ``"1h30m"``, ``"2d"``, ``"250ms"`` -> seconds."""
    if isinstance(value, bool):
        raise JobsFileError(f'{where}: expected a duration like "30s" or a number of seconds')
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m and any(m.groups()):
            d, h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
            return d * 86400 + h * 3600 + mi * 60 + s + ms / 1000
    raise JobsFileError(f'{where}: expected a duration like "30s", "5m" or "1h30m", got {value!r}')


def _pb_duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise JobsFileError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise JobsFileError(f"{where}: expected true or false")
    return value


def _time(value: str, where: str) -> datetime:
    """An RFC 3339 / ISO 8601 time; one with no zone is UTC."""
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise JobsFileError(f"{where}: expected an RFC 3339 time like 2026-12-01T09:00:00Z, got {value!r}") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _to_job(name: str, spec: dict[str, Any], base_dir: Path, written: dict[str, str]) -> jobs_pb2.Job:
    """One ``[jobs.NAME]`` table as a Job message (not yet validated against bounds), noting in ``written``
    each Job field (as ``validate`` names it) that the file spells otherwise."""
    w = f"jobs.{name}"
    unknown = sorted(set(spec) - _KNOWN)
    if unknown:
        raise JobsFileError(f"{w}: unknown key {unknown[0]!r}")
    job = jobs_pb2.Job(name=name, enabled=True, source=jobs_pb2.JOB_SOURCE_FILE)
    if "description" in spec:
        job.description = _str(spec["description"], f"{w}.description")
    if "command" in spec and "script" in spec:
        raise JobsFileError(f"{w}: give either command or script, not both")
    if "command" in spec:
        cmd = spec["command"]
        if isinstance(cmd, str):
            cmd = [cmd]
        if not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd):
            raise JobsFileError(f"{w}.command: expected a list of strings (the program and its arguments)")
        job.command.extend(cmd)
    elif "script" in spec:
        script = Path(_str(spec["script"], f"{w}.script"))
        path = script if script.is_absolute() else (base_dir / script)
        job.script = str(path)
        interpreter = spec.get("interpreter")
        written["command"] = "script"
        if interpreter is not None:
            job.command.extend([_str(interpreter, f"{w}.interpreter"), str(path)])
            written.update({"command[0]": "interpreter", "command[1]": "script"})
        else:
            job.command.append(str(path))
            written["command[0]"] = "script"
    schedules = [k for k in ("schedule", "cron", "every", "interval", "at", "run_at") if k in spec]
    if len(schedules) != 1:
        got = f" (got {' and '.join(schedules)})" if schedules else ""
        raise JobsFileError(
            f'{w}: give exactly one of schedule (cron, "every 30s" or "at <time>"), every (interval)'
            f" or at (one-off time){got}"
        )
    key: str = schedules[0]
    text = spec[key]
    kind = {"schedule": "cron", "every": "interval", "at": "run_at"}.get(key, key)
    if key == "schedule":
        # The API shows a schedule as this one text (cron as given, "every 60s", "at <time>"),
        # so the file takes it back as it is shown.
        words = _str(text, f"{w}.schedule").split(None, 1)
        if len(words) == 2 and words[0].lower() in ("every", "at"):
            kind, text = ("interval" if words[0].lower() == "every" else "run_at"), words[1]
    written.update({kind: key, "trigger": key})
    if kind == "cron":
        job.cron = _str(text, f"{w}.{key}")
    elif kind == "interval":
        job.interval.CopyFrom(_pb_duration(parse_duration(text, f"{w}.{key}")))
    elif isinstance(text, str):
        job.run_at.FromDatetime(_time(text, f"{w}.{key}"))
    elif isinstance(text, datetime):  # a TOML date-time; one with no offset is UTC
        job.run_at.FromDatetime(text if text.tzinfo is not None else text.replace(tzinfo=UTC))
    else:
        raise JobsFileError(f"{w}.{key}: expected a time like 2026-12-01T09:00:00Z")
    zone_key = "time_zone" if "time_zone" in spec else "timezone"
    if "time_zone" in spec and "timezone" in spec:
        raise JobsFileError(f"{w}: give either time_zone or timezone, not both")
    if zone_key in spec:
        job.time_zone = _str(spec[zone_key], f"{w}.{zone_key}")
        written["time_zone"] = zone_key
    for key, values in _ENUMS.items():
        if key in spec:
            text = _str(spec[key], f"{w}.{key}").lower()
            if text not in values:
                raise JobsFileError(f"{w}.{key}: must be one of {', '.join(values)}")
            setattr(job, key, values[text])
    for key in ("timeout", "start_jitter", "catch_up_window"):
        if key in spec:
            getattr(job, key).CopyFrom(_pb_duration(parse_duration(spec[key], f"{w}.{key}")))
    if "retries" in spec and "retry" in spec:
        raise JobsFileError(f"{w}: give either retries or retry, not both")
    if "retries" in spec:
        n = spec["retries"]
        if not isinstance(n, int) or isinstance(n, bool):
            raise JobsFileError(f"{w}.retries: expected a whole number")
        job.retry.max_retries = n
        written["retry.max_retries"] = "retries"
    if "retry" in spec:
        r = spec["retry"]
        if not isinstance(r, dict):
            raise JobsFileError(f"{w}.retry: expected a table")
        for k, v in r.items():
            if k == "max_retries" and isinstance(v, int) and not isinstance(v, bool):
                job.retry.max_retries = v
            elif k in ("initial_backoff", "max_backoff"):
                getattr(job.retry, k).CopyFrom(_pb_duration(parse_duration(v, f"{w}.retry.{k}")))
            elif k in ("multiplier", "jitter") and isinstance(v, int | float) and not isinstance(v, bool):
                setattr(job.retry, k, float(v))
            else:
                raise JobsFileError(f"{w}.retry.{k}: unknown key or wrong type")
    for key in ("run_on_startup", "enabled"):
        if key in spec:
            setattr(job, key, _bool(spec[key], f"{w}.{key}"))
    if "working_dir" in spec:
        wd = Path(_str(spec["working_dir"], f"{w}.working_dir"))
        job.working_dir = str(wd if wd.is_absolute() else base_dir / wd)
    if "env" in spec:
        env = spec["env"]
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise JobsFileError(f"{w}.env: expected a table of strings")
        job.env.update(env)
    return job


RESERVED_PREFIX = "lobwife-"  # built-in maintenance jobs


def load(path: Path) -> list[tuple[jobs_pb2.Job, job_defs.JobDef]]:
    """Read, parse and validate the whole file; all or nothing."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise JobsFileError(f"{path}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise JobsFileError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise JobsFileError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise JobsFileError(f"{path}: TOML syntax error: {e}") from None
    unknown = sorted(set(data) - {"jobs"})
    if unknown:
        raise JobsFileError(f"{path}: unknown top-level key {unknown[0]!r} (jobs go under [jobs.NAME])")
    jobs = data.get("jobs", {})
    if not isinstance(jobs, dict):
        raise JobsFileError(f"{path}: `jobs` must be a table of [jobs.NAME] tables")
    if len(jobs) > MAX_JOBS:
        raise JobsFileError(f"{path}: more than {MAX_JOBS} jobs")
    out: list[tuple[jobs_pb2.Job, job_defs.JobDef]] = []
    for name, spec in jobs.items():
        if not isinstance(spec, dict):
            raise JobsFileError(f"{path}: jobs.{name} must be a table")
        if name.startswith(RESERVED_PREFIX):
            raise JobsFileError(f"{path}: jobs.{name}: names starting with {RESERVED_PREFIX!r} are reserved")
        written: dict[str, str] = {}
        try:
            job_defs.check_name(name, f"jobs.{name[:40]}")
            job = _to_job(name, spec, path.parent, written)
            out.append((job, job_defs.validate(job, f"jobs.{name}", source="file")))
        except ApiError as e:
            raise JobsFileError(f"{path}: {_as_written(e, f'jobs.{name}', written)}") from None
        except JobsFileError as e:
            raise JobsFileError(f"{path}: {e}") from None
    return out


def _as_written(e: ApiError, prefix: str, written: dict[str, str]) -> str:
    """The error of a rule on a Job field, naming the key the file wrote (``cron`` -> ``schedule``)."""
    if not e.violations:
        return e.message
    field, desc = e.violations[0]
    if field.startswith(prefix + "."):
        key = field[len(prefix) + 1 :]
        field = f"{prefix}.{written.get(key, key)}"
    return f"{field}: {desc}"
