"""Request building shared by both faces: argument conversion (statuses, times, durations, enums) and
the request messages the methods with many arguments send. The builders in ``_builders`` call these."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias, TypedDict

from google.protobuf import descriptor, duration_pb2, timestamp_pb2

from lobwife import enums
from lobwife.v1 import jobs_pb2, tasks_pb2
from lobwife.v1.jobs_pb2 import Job, RetryPolicy
from lobwife.v1.tasks_pb2 import TaskStatus

#: A TaskStatus value (an int at run time) or its name, short (``"active"``) or full.
StatusLike: TypeAlias = int | str
TimestampLike: TypeAlias = datetime | timestamp_pb2.Timestamp

_STATUS_PREFIX = enums.value_prefix(TaskStatus.DESCRIPTOR)  # TASK_STATUS_


def parse_status(value: StatusLike) -> TaskStatus.ValueType:
    """A TaskStatus from its enum value, its short name (``"active"``) or full name."""
    if isinstance(value, int):
        if value not in TaskStatus.values():
            raise ValueError(f"status: unknown task status {value}")
        return TaskStatus.ValueType(value)
    name = value.strip().upper().replace("-", "_")
    if not name.startswith(_STATUS_PREFIX):
        name = _STATUS_PREFIX + name
    if name not in TaskStatus.keys() or name == "TASK_STATUS_UNSPECIFIED":  # noqa: SIM118 (an EnumTypeWrapper, not a dict)
        choices = ", ".join(status_name(v) for v in TaskStatus.values() if v)
        raise ValueError(f"status: unknown task status {value!r} (one of {choices})")
    return TaskStatus.Value(name)


def status_name(value: int) -> str:
    """The short lowercase name of a TaskStatus value: ``"active"``."""
    if value not in TaskStatus.DESCRIPTOR.values_by_number:
        return str(value)
    return enums.short_name(TaskStatus.DESCRIPTOR, value) or "unspecified"


def to_timestamp(value: TimestampLike) -> timestamp_pb2.Timestamp:
    """A Timestamp from a datetime (naive datetimes are UTC, as in the fleet's records)."""
    if isinstance(value, timestamp_pb2.Timestamp):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


class TaskUpdate(TypedDict, total=False):
    """The fields :meth:`Client.update_task` can change; ``None`` clears a field."""

    name: str | None
    slug: str | None
    type: str | None
    status: StatusLike | None
    priority: str | None
    model: str | None
    assigned_to: str | None
    repos: Sequence[str] | None
    discord_thread_id: str | None
    #: Minutes, fractions kept (``12.5``): sets ``estimate_minutes_exact``.
    estimate_minutes: float | None
    requires_qa: bool | None
    workflow: str | None
    #: US dollars the task may spend on model calls; None: its type's default (the server's).
    budget_usd: float | None
    queued_at: TimestampLike | None
    assigned_at: TimestampLike | None
    completed_at: TimestampLike | None


_UPDATABLE = frozenset(TaskUpdate.__annotations__)
_TIMESTAMP_FIELDS = frozenset({"queued_at", "assigned_at", "completed_at"})
# TaskUpdate names that set another field of the request (and name it in the mask): the
# estimate is the double `estimate_minutes_exact`; the int32 `estimate_minutes` is deprecated.
_TASK_FIELD_RENAMES = {"estimate_minutes": "estimate_minutes_exact"}


def _estimate(value: object) -> float:
    """An estimate in minutes as the request's double; the server checks the range (naming the field)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"estimate_minutes: expected a number of minutes, not {type(value).__name__}")
    return float(value)


def estimate_minutes(task: tasks_pb2.Task) -> float | None:
    """A task's estimate in minutes: ``estimate_minutes_exact``, or the deprecated whole-minute
    ``estimate_minutes`` from a server older than the exact field; None when it has none."""
    if task.HasField("estimate_minutes_exact"):
        return task.estimate_minutes_exact
    if task.HasField("estimate_minutes"):
        return float(task.estimate_minutes)
    return None


def _create_request(
    name: str,
    *,
    type: str | None,
    status: StatusLike | None,
    priority: str | None,
    model: str | None,
    assigned_to: str | None,
    repos: Sequence[str] | None,
    discord_thread_id: str | None,
    estimate_minutes: float | None,
    requires_qa: bool | None,
    workflow: str | None,
    slug: str | None,
    actor: str | None,
    request_id: str | None,
    budget_usd: float | None = None,
) -> tasks_pb2.CreateTaskRequest:
    req = tasks_pb2.CreateTaskRequest(name=name, request_id=request_id or str(uuid.uuid4()))
    optional: dict[str, object] = {
        "type": type,
        "priority": priority,
        "model": model,
        "assigned_to": assigned_to,
        "discord_thread_id": discord_thread_id,
        "estimate_minutes_exact": _estimate(estimate_minutes) if estimate_minutes is not None else None,
        "requires_qa": requires_qa,
        "workflow": workflow,
        "slug": slug,
        "actor": actor,
        "budget_usd": budget_usd,
    }
    for field, value in optional.items():
        if value is not None:
            setattr(req, field, value)
    if status is not None:
        req.status = parse_status(status)
    if repos is not None:
        req.repos.extend(_str_list("repos", repos))
    return req


def _list_request(
    *,
    status: StatusLike | None,
    type: str | None,
    assigned_to: str | None,
    created_after: TimestampLike | None,
    created_before: TimestampLike | None,
    page_size: int | None,
    page_token: str | None,
) -> tasks_pb2.ListTasksRequest:
    req = tasks_pb2.ListTasksRequest(
        type=type or "",
        assigned_to=assigned_to or "",
        page_size=page_size or 0,
        page_token=page_token or "",
    )
    if status is not None:
        req.status = parse_status(status)
    if created_after is not None:
        req.created_after.CopyFrom(to_timestamp(created_after))
    if created_before is not None:
        req.created_before.CopyFrom(to_timestamp(created_before))
    return req


def _update_request(task_id: int | str, actor: str | None, fields: Mapping[str, object]) -> tasks_pb2.UpdateTaskRequest:
    unknown = sorted(set(fields) - _UPDATABLE)
    if unknown:
        raise TypeError(f"update_task() got unexpected field(s): {', '.join(unknown)}")
    if not fields:
        raise ValueError("update_task() needs at least one field to change")
    req = tasks_pb2.UpdateTaskRequest(task_id=_task_ref(task_id))
    if actor is not None:
        req.actor = actor
    # The mask names exactly the fields given, so a field given as None is cleared
    # rather than left alone (AIP-134: a masked field that is unset is cleared).
    req.update_mask.paths.extend(_TASK_FIELD_RENAMES.get(f, f) for f in fields)
    for field, value in fields.items():
        if value is None:
            continue
        if field == "estimate_minutes":
            req.estimate_minutes_exact = _estimate(value)
        elif field == "status":
            req.status = parse_status(value)  # type: ignore[arg-type]
        elif field == "repos":
            req.repos.extend(_str_list("repos", value))  # type: ignore[arg-type]
        elif field in _TIMESTAMP_FIELDS:
            getattr(req, field).CopyFrom(to_timestamp(value))  # type: ignore[arg-type]
        else:
            setattr(req, field, value)
    return req


def _str_list(field: str, values: Sequence[str]) -> list[str]:
    # A bare string is a Sequence[str] too; taking it letter by letter is never meant.
    if isinstance(values, str):
        raise TypeError(f"{field} must be a list of strings, not a string")
    return list(values)


def _task_ref(task_id: int | str) -> str:
    return str(task_id)


# --- jobs: request building (shared by both clients) -------------------------------------

#: Seconds (``90``, ``0.5``), a timedelta or a Duration message.
DurationLike: TypeAlias = int | float | timedelta | duration_pb2.Duration
#: An enum value (an int at run time) or its name, short (``"forbid"``) or full.
EnumLike: TypeAlias = int | str
#: A RetryPolicy, or a mapping of its fields (``{"max_retries": 2, "initial_backoff": 5}``).
RetryLike: TypeAlias = RetryPolicy | Mapping[str, Any]


class JobFields(TypedDict, total=False):
    """A job's definition fields, as :meth:`Client.create_job` and :meth:`Client.update_job` take them.

    Give at most one of ``cron``, ``interval`` and ``run_at`` (the schedule). In an
    update, ``None`` clears a field; in a create it leaves the field unset.

    ``run_timeout`` is the Job's ``timeout`` field (how long a run may take): every
    method's ``timeout`` argument is already the call's deadline.
    """

    description: str | None
    command: Sequence[str] | None
    script: str | None
    working_dir: str | None
    env: Mapping[str, str] | None
    cron: str | None
    interval: DurationLike | None
    run_at: TimestampLike | None
    time_zone: str | None
    enabled: bool | None
    concurrency: EnumLike | None
    run_timeout: DurationLike | None
    retry: RetryLike | None
    start_jitter: DurationLike | None
    catch_up: EnumLike | None
    catch_up_window: DurationLike | None
    run_on_startup: bool | None


_JOB_FIELDS = frozenset(JobFields.__annotations__)
# JobFields names that differ from the Job field they set.
_JOB_FIELD_RENAMES = {"run_timeout": "timeout"}
_JOB_DURATIONS = frozenset({"interval", "timeout", "start_jitter", "catch_up_window"})
_JOB_SCHEDULES = ("cron", "interval", "run_at")
_JOB_ENUMS: dict[str, descriptor.EnumDescriptor] = {
    "concurrency": jobs_pb2.ConcurrencyPolicy.DESCRIPTOR,
    "catch_up": jobs_pb2.CatchUpPolicy.DESCRIPTOR,
}
_RETRY_FIELDS = frozenset({"max_retries", "initial_backoff", "max_backoff", "multiplier", "jitter"})


def parse_enum(enum: descriptor.EnumDescriptor, value: EnumLike, field: str) -> int:
    """A value of ``enum`` from its number, its short name (``"forbid"``) or its full name.

    ``field`` names the argument in the error (a ValueError) for an unknown value.
    """
    # The names are lobwife.enums' (one rule with the gateway and the CLI).
    prefix = enums.value_prefix(enum)
    choices = ", ".join(s for s in enums.short_names(enum).values() if s is not None)
    if isinstance(value, bool):
        raise TypeError(f"{field}: expected a name or a number, not a bool")
    if isinstance(value, int):
        if value not in enum.values_by_number:
            raise ValueError(f"{field}: unknown value {value} (one of {choices})")
        return value
    name = value.strip().upper().replace("-", "_")
    if not name.startswith(prefix):
        name = prefix + name
    known = enum.values_by_name.get(name)
    if known is None or known.number == 0:
        raise ValueError(f"{field}: unknown value {value!r} (one of {choices})")
    return known.number


def to_duration(value: DurationLike, field: str = "duration") -> duration_pb2.Duration:
    """A Duration from seconds, a timedelta or a Duration (returned as is)."""
    if isinstance(value, duration_pb2.Duration):
        return value
    out = duration_pb2.Duration()
    if isinstance(value, timedelta):
        out.FromTimedelta(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out.FromNanoseconds(round(value * 1e9))
    else:
        raise TypeError(f"{field}: expected seconds, a timedelta or a Duration, not {type(value).__name__}")
    return out


def _retry_policy(value: RetryLike) -> RetryPolicy:
    if isinstance(value, RetryPolicy):
        return value
    unknown = sorted(set(value) - _RETRY_FIELDS)
    if unknown:
        raise TypeError(f"retry: unknown field(s): {', '.join(unknown)}")
    policy = RetryPolicy()
    for key, item in value.items():
        if key in ("initial_backoff", "max_backoff"):
            getattr(policy, key).CopyFrom(to_duration(item, f"retry.{key}"))
        else:
            setattr(policy, key, item)
    return policy


def _job_message(name: str, fields: Mapping[str, object], what: str) -> Job:
    """A Job named ``name`` with ``fields`` set (``None`` values left unset)."""
    unknown = sorted(set(fields) - _JOB_FIELDS)
    if unknown:
        raise TypeError(f"{what}() got unexpected field(s): {', '.join(unknown)}")
    schedules = [f for f in _JOB_SCHEDULES if fields.get(f) is not None]
    if len(schedules) > 1:
        # They are one oneof: setting the second would silently drop the first.
        raise ValueError(f"{what}(): give only one schedule, not {' and '.join(schedules)}")
    job = Job(name=name)
    for key, value in fields.items():
        field = _JOB_FIELD_RENAMES.get(key, key)
        if value is None:
            continue
        if field == "command":
            job.command.extend(_str_list("command", value))  # type: ignore[arg-type]
        elif field == "env":
            job.env.update(dict(value))  # type: ignore[call-overload]
        elif field in _JOB_DURATIONS:
            getattr(job, field).CopyFrom(to_duration(value, key))  # type: ignore[arg-type]
        elif field == "run_at":
            job.run_at.CopyFrom(to_timestamp(value))  # type: ignore[arg-type]
        elif field in _JOB_ENUMS:
            setattr(job, field, parse_enum(_JOB_ENUMS[field], value, field))  # type: ignore[arg-type]
        elif field == "retry":
            job.retry.CopyFrom(_retry_policy(value))  # type: ignore[arg-type]
        else:
            setattr(job, field, value)
    return job


def _create_job_request(
    job: Job | str | None, name: str | None, request_id: str | None, fields: Mapping[str, object]
) -> jobs_pb2.CreateJobRequest:
    if isinstance(job, Job):
        if fields or name is not None:
            raise TypeError("create_job(): give a Job message or fields, not both")
        message = job
    else:
        if job is not None and name is not None:
            raise TypeError("create_job(): the name is given twice")
        job_name = job if job is not None else name
        if not job_name:
            raise ValueError("create_job(): a name is required")
        # As in the jobs file, a new job runs on its schedule unless told otherwise (an
        # unset proto3 bool would make it disabled).
        message = _job_message(job_name, {"enabled": True, **fields}, "create_job")
    return jobs_pb2.CreateJobRequest(job=message, request_id=request_id or str(uuid.uuid4()))


def _update_job_request(
    job: Job | str, update_mask: Sequence[str] | None, fields: Mapping[str, object]
) -> jobs_pb2.UpdateJobRequest:
    if isinstance(job, Job):
        if fields:
            raise TypeError("update_job(): give a Job message or fields, not both")
        req = jobs_pb2.UpdateJobRequest(job=job)
        if update_mask is not None:
            req.update_mask.paths.extend(_str_list("update_mask", update_mask))
        return req
    if update_mask is not None:
        raise TypeError("update_job(): update_mask goes with a Job message; with fields the mask is their names")
    if not fields:
        raise ValueError("update_job() needs at least one field to change")
    req = jobs_pb2.UpdateJobRequest(job=_job_message(job, fields, "update_job"))
    # As for tasks: the mask names exactly the fields given, so a field given as None
    # is cleared rather than left alone.
    req.update_mask.paths.extend(_JOB_FIELD_RENAMES.get(f, f) for f in fields)
    return req


def _get_job_request(name: str, next_runs: int | None) -> jobs_pb2.GetJobRequest:
    return jobs_pb2.GetJobRequest(name=name, next_runs_count=next_runs or 0)
