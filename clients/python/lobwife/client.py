"""Typed clients for the lobwife gRPC API: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

Both take the same arguments, have the same method names and return the generated
message types (``lobwife.v1.tasks_pb2`` for tasks, ``lobwife.v1.jobs_pb2`` for cron jobs)::

    with Client("lobwife:50051", token=token) as lw:
        task = lw.create_task("Fix the flaky test", repos=["org/repo"])
        lw.update_task(task.id, status="active", assigned_to="lobster-7")
        for change in lw.watch_tasks(after_cursor=cursor):
            ...
        run = lw.trigger_job("flush-logs")
        for update in lw.watch_runs(name="flush-logs", include_output=True):
            ...

Jobs methods return ``lobwife.v1.jobs_pb2`` messages (``Job``, ``JobRun``, ...).

Every unary call has a deadline (the client's ``timeout``, overridable per call) and
sends ``authorization: Bearer <token>`` when a token is set. Failures raise
:class:`LobwifeError` with the gRPC code, the message and any field violations.

Retries (``retries``, default 4) use gRPC's own retry support: the channel carries a
service config whose ``retryPolicy`` retries calls that fail with ``UNAVAILABLE`` —
the server being down, restarting or draining — with exponential backoff. With the
defaults the delays between the 5 attempts are about 0.5 s, 1 s, 2 s and 4 s (gRPC
adds ±20 % jitter), so a call rides out roughly 7.5 s of unavailability as long as its
deadline (10 s by default) has not passed. Other codes are never retried. Creates are
still safe to retry: :meth:`Client.create_task` always sends a ``request_id`` (a fresh
uuid4 unless you pass one), and the server returns the first task for a repeated id.
A job's name is its identity, so a retried :meth:`Client.create_job` that did land the
first time answers ``ALREADY_EXISTS`` rather than making a second job.
"""

# gRPC deadlines (not asyncio.timeout) are how these calls are bounded: the server
# sees the deadline too and stops working on an abandoned call.
# ruff: noqa: ASYNC109

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeAlias, TypedDict, TypeVar, Unpack, cast

import grpc
import grpc.aio
from google.protobuf import descriptor, duration_pb2, timestamp_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from lobwife import __version__, enums
from lobwife.v1 import (
    jobs_pb2,
    jobs_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
)
from lobwife.v1.jobs_pb2 import (
    GetStatusResponse,
    Job,
    JobRun,
    ListJobRunsResponse,
    ListJobsResponse,
    RetryPolicy,
    WatchRunsResponse,
)
from lobwife.v1.services import SERVICE_NAMES
from lobwife.v1.tasks_pb2 import (
    CancelTaskResponse,
    ListTaskEventsResponse,
    ListTasksResponse,
    Task,
    TaskEvent,
    TaskStatus,
    UpdateTaskResponse,
    WatchTasksResponse,
)

__all__ = [
    "DEFAULT_ADDR",
    "AsyncClient",
    "Client",
    "FieldViolation",
    "JobFields",
    "LobwifeError",
    "TaskUpdate",
    "channel_options",
    "parse_enum",
    "parse_status",
    "service_config",
    "status_name",
    "to_duration",
]

DEFAULT_ADDR = "127.0.0.1:50051"

# The backoff between attempts: initial, multiplier and cap. See the module docstring.
RETRY_INITIAL_BACKOFF_S = 0.5
RETRY_BACKOFF_MULTIPLIER = 2.0
RETRY_MAX_BACKOFF_S = 5.0
# gRPC ignores maxAttempts above 5 (it silently caps them), so more than 4 retries
# cannot be honoured; say so instead of pretending.
MAX_RETRIES = 4
# While the server is down the channel's own reconnect backoff decides when a new
# connection is tried; gRPC's default starts at 1 s and grows to 120 s, which would
# make late retry attempts fail fast against a stale TRANSIENT_FAILURE state although
# the server is back. Reconnecting sooner lets every retry attempt find a server that
# has just come up.
RECONNECT_INITIAL_BACKOFF_MS = 200
RECONNECT_MAX_BACKOFF_MS = 2000

#: Every service of the contract; the retry policy applies to all of them.
LOBWIFE_SERVICES: tuple[str, ...] = SERVICE_NAMES

_DETAILS_KEY = "grpc-status-details-bin"


def service_config(retries: int = MAX_RETRIES) -> dict[str, Any]:
    """The gRPC service config the clients' channels carry (as a dict; the channel gets its JSON).

    ``retries`` is the number of retries after the first attempt, 0 to 4.
    """
    if not 0 <= retries <= MAX_RETRIES:
        raise ValueError(f"retries must be between 0 and {MAX_RETRIES} (gRPC allows at most 5 attempts), not {retries}")
    method_config: dict[str, Any] = {"name": [{"service": name} for name in LOBWIFE_SERVICES]}
    if retries:
        # maxAttempts counts the first attempt; a retryPolicy with maxAttempts < 2 is
        # invalid and would make gRPC reject the whole service config.
        method_config["retryPolicy"] = {
            "maxAttempts": retries + 1,
            "initialBackoff": f"{RETRY_INITIAL_BACKOFF_S}s",
            "maxBackoff": f"{RETRY_MAX_BACKOFF_S}s",
            "backoffMultiplier": RETRY_BACKOFF_MULTIPLIER,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return {"methodConfig": [method_config]}


def channel_options(retries: int = MAX_RETRIES) -> list[tuple[str, str | int]]:
    """Channel arguments for a lobwife channel: the retry service config and reconnect backoff."""
    return [
        ("grpc.service_config", json.dumps(service_config(retries))),
        ("grpc.enable_retries", 1),
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_BACKOFF_MS),
        ("grpc.primary_user_agent", f"lobwife-python/{__version__}"),
    ]


# --- errors ---------------------------------------------------------------------------


class FieldViolation(NamedTuple):
    """One bad field of a request, from the ``google.rpc.BadRequest`` error detail."""

    field: str
    description: str


class LobwifeError(Exception):
    """A failed call: the gRPC status code, its message and the field violations, if any.

    ``str(err)`` is ``"NOT_FOUND: Task T9 not found"``. ``reason`` is the
    ``google.rpc.ErrorInfo`` reason when the server gave one.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        field_violations: Sequence[FieldViolation | tuple[str, str]] = (),
        *,
        reason: str | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.field_violations: tuple[FieldViolation, ...] = tuple(FieldViolation(*v) for v in field_violations)
        self.reason = reason

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> LobwifeError:
        """Build from a failed call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``)."""
        code = _call_attr(error, "code")
        if not isinstance(code, grpc.StatusCode):
            code = grpc.StatusCode.UNKNOWN
        message = _call_attr(error, "details")
        if not isinstance(message, str):
            message = str(error)
        status = _rich_status(error)
        violations: list[FieldViolation] = []
        reason: str | None = None
        if status is not None:
            message = status.message or message
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
                elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason or None
        return cls(code, message, violations, reason=reason)

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle as cls(*args); ours has a different signature, and errors
        # cross process boundaries (concurrent.futures, multiprocessing).
        return (_rebuild_error, (self.code.name, self.message, self.field_violations, self.reason))

    def __repr__(self) -> str:
        return f"LobwifeError({self.code.name}, {self.message!r}, {list(self.field_violations)!r})"


def _rebuild_error(code: str, message: str, violations: Sequence[tuple[str, str]], reason: str | None) -> LobwifeError:
    return LobwifeError(grpc.StatusCode[code], message, violations, reason=reason)


def _call_attr(error: grpc.RpcError, name: str) -> object:
    # A grpc.RpcError that is not also a grpc.Call (rare, e.g. raised by an
    # interceptor) has no code()/details(); fall back rather than mask the failure.
    method = getattr(error, name, None)
    if method is None:
        return None
    try:
        return method()
    except Exception:
        return None


def _rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` the server put in the trailers, if any."""
    try:
        status = rpc_status.from_call(cast(grpc.Call, error))
    except ValueError:
        # The details disagree with the call's status line (a proxy rewrote one of
        # them); the details still say which fields were wrong, so read them anyway.
        status = _details_from_trailers(error)
    except Exception:
        # Not a grpc.Call (no trailers to read): there are no details to add.
        return None
    return status if isinstance(status, status_pb2.Status) else None


def _details_from_trailers(error: grpc.RpcError) -> status_pb2.Status | None:
    trailers = _call_attr(error, "trailing_metadata")
    if not isinstance(trailers, Iterable):
        return None
    for item in trailers:
        key, value = item
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


# --- request building (shared by both clients) -----------------------------------------

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
    estimate_minutes: int | None
    requires_qa: bool | None
    workflow: str | None
    queued_at: TimestampLike | None
    assigned_at: TimestampLike | None
    completed_at: TimestampLike | None


_UPDATABLE = frozenset(TaskUpdate.__annotations__)
_TIMESTAMP_FIELDS = frozenset({"queued_at", "assigned_at", "completed_at"})


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
    estimate_minutes: int | None,
    requires_qa: bool | None,
    workflow: str | None,
    slug: str | None,
    actor: str | None,
    request_id: str | None,
) -> tasks_pb2.CreateTaskRequest:
    req = tasks_pb2.CreateTaskRequest(name=name, request_id=request_id or str(uuid.uuid4()))
    optional: dict[str, object] = {
        "type": type,
        "priority": priority,
        "model": model,
        "assigned_to": assigned_to,
        "discord_thread_id": discord_thread_id,
        "estimate_minutes": estimate_minutes,
        "requires_qa": requires_qa,
        "workflow": workflow,
        "slug": slug,
        "actor": actor,
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
    req.update_mask.paths.extend(fields)
    for field, value in fields.items():
        if value is None:
            continue
        if field == "status":
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


_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def _resolve_addr(addr: str | None) -> str:
    return addr or os.environ.get("LOBWIFE_ADDR") or DEFAULT_ADDR


class _Base:
    def __init__(self, addr: str | None, timeout: float, retries: int, token: str | None, secure: bool) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        self.addr = _resolve_addr(addr)
        self.timeout = timeout
        self.retries = retries
        self.secure = secure
        self._options = channel_options(retries)
        self._metadata = _metadata(token)

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout


# --- the blocking client -------------------------------------------------------------


class Client(_Base):
    """Blocking client over one gRPC channel. Thread-safe; close it (or use ``with``) when done.

    ``addr`` defaults to ``$LOBWIFE_ADDR`` or ``127.0.0.1:50051``. ``timeout`` (seconds) is
    the deadline of each unary call, retries included; every method takes ``timeout=`` to
    override it. ``secure`` uses TLS with the system's root certificates.
    """

    def __init__(
        self,
        addr: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = MAX_RETRIES,
        token: str | None = None,
        secure: bool = False,
    ) -> None:
        super().__init__(addr, timeout, retries, token, secure)
        if secure:
            self._channel = grpc.secure_channel(self.addr, grpc.ssl_channel_credentials(), options=self._options)
        else:
            self._channel = grpc.insecure_channel(self.addr, options=self._options)
        self._tasks = tasks_pb2_grpc.TaskServiceStub(self._channel)
        self._jobs = jobs_pb2_grpc.JobServiceStub(self._channel)

    def close(self) -> None:
        """Close the channel; calls in flight (e.g. a watch) are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Tasks

    def create_task(
        self,
        name: str,
        *,
        type: str | None = None,
        status: StatusLike | None = None,
        priority: str | None = None,
        model: str | None = None,
        assigned_to: str | None = None,
        repos: Sequence[str] | None = None,
        discord_thread_id: str | None = None,
        estimate_minutes: int | None = None,
        requires_qa: bool | None = None,
        workflow: str | None = None,
        slug: str | None = None,
        actor: str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Task:
        """Create a task. Without ``request_id`` a uuid4 is sent, so a retried create never duplicates."""
        req = _create_request(
            name,
            type=type,
            status=status,
            priority=priority,
            model=model,
            assigned_to=assigned_to,
            repos=repos,
            discord_thread_id=discord_thread_id,
            estimate_minutes=estimate_minutes,
            requires_qa=requires_qa,
            workflow=workflow,
            slug=slug,
            actor=actor,
            request_id=request_id,
        )
        try:
            return self._tasks.CreateTask(req, timeout=self._deadline(timeout), metadata=self._metadata).task
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e

    def get_task(self, task_id: int | str, *, timeout: float | None = None) -> Task:
        """Get a task by number (``42``) or display id (``"T42"``)."""
        req = tasks_pb2.GetTaskRequest(task_id=_task_ref(task_id))
        try:
            return self._tasks.GetTask(req, timeout=self._deadline(timeout), metadata=self._metadata).task
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e

    def list_tasks(
        self,
        *,
        status: StatusLike | None = None,
        type: str | None = None,
        assigned_to: str | None = None,
        created_after: TimestampLike | None = None,
        created_before: TimestampLike | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> ListTasksResponse:
        """One page of tasks, newest first; ``next_page_token`` is empty on the last page."""
        req = _list_request(
            status=status,
            type=type,
            assigned_to=assigned_to,
            created_after=created_after,
            created_before=created_before,
            page_size=page_size,
            page_token=page_token,
        )
        try:
            return self._tasks.ListTasks(req, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e

    def iter_tasks(
        self,
        *,
        status: StatusLike | None = None,
        type: str | None = None,
        assigned_to: str | None = None,
        created_after: TimestampLike | None = None,
        created_before: TimestampLike | None = None,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[Task]:
        """Every matching task, fetching page after page (each page has its own deadline)."""
        token = ""
        while True:
            page = self.list_tasks(
                status=status,
                type=type,
                assigned_to=assigned_to,
                created_after=created_after,
                created_before=created_before,
                page_size=page_size,
                page_token=token,
                timeout=timeout,
            )
            yield from page.tasks
            token = page.next_page_token
            if not token:
                return

    def update_task(
        self,
        task_id: int | str,
        *,
        actor: str | None = None,
        timeout: float | None = None,
        **fields: Unpack[TaskUpdate],
    ) -> UpdateTaskResponse:
        """Change exactly the fields given: ``update_task(7, status="active", assigned_to=None)``
        sets the status and clears the assignee; ``update_mask`` names those fields."""
        req = _update_request(task_id, actor, fields)
        try:
            return self._tasks.UpdateTask(req, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e

    def cancel_task(
        self,
        task_id: int | str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        timeout: float | None = None,
    ) -> CancelTaskResponse:
        """Cancel a task; FAILED_PRECONDITION when it is already completed or cancelled."""
        req = tasks_pb2.CancelTaskRequest(task_id=_task_ref(task_id), actor=actor, reason=reason)
        try:
            return self._tasks.CancelTask(req, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e

    def add_event(
        self,
        task_id: int | str,
        event_type: str,
        *,
        detail: str | None = None,
        actor: str | None = None,
        timeout: float | None = None,
    ) -> TaskEvent:
        """Append an event to a task's trail and return it."""
        req = tasks_pb2.CreateTaskEventRequest(
            task_id=_task_ref(task_id), event_type=event_type, detail=detail, actor=actor
        )
        try:
            return self._tasks.CreateTaskEvent(req, timeout=self._deadline(timeout), metadata=self._metadata).event
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e

    def list_events(
        self,
        task_id: int | str,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> ListTaskEventsResponse:
        """One page of a task's events, newest first."""
        req = tasks_pb2.ListTaskEventsRequest(
            task_id=_task_ref(task_id), page_size=page_size or 0, page_token=page_token or ""
        )
        try:
            return self._tasks.ListTaskEvents(req, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e

    def iter_events(
        self, task_id: int | str, *, page_size: int | None = None, timeout: float | None = None
    ) -> Iterator[TaskEvent]:
        """All of a task's events, newest first, page after page."""
        token = ""
        while True:
            page = self.list_events(task_id, page_size=page_size, page_token=token, timeout=timeout)
            yield from page.events
            token = page.next_page_token
            if not token:
                return

    def register_repos(
        self,
        task_id: int | str,
        repos: Sequence[str],
        *,
        lobster_type: str | None = None,
        actor: str | None = None,
        timeout: float | None = None,
    ) -> Task:
        """Record the repositories the task may get GitHub tokens for; returns the updated task."""
        req = tasks_pb2.RegisterTaskReposRequest(
            task_id=_task_ref(task_id), repos=_str_list("repos", repos), lobster_type=lobster_type, actor=actor
        )
        try:
            return self._tasks.RegisterTaskRepos(req, timeout=self._deadline(timeout), metadata=self._metadata).task
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e

    def watch_tasks(
        self, *, after_cursor: int = 0, task_id: int | str | None = None, timeout: float | None = None
    ) -> Generator[WatchTasksResponse, None, None]:
        """Stream task changes after ``after_cursor`` (0: from now on) until closed.

        Unlike unary calls a watch has no deadline unless ``timeout`` is given: it is
        meant to stay open. The call starts at the first ``next()``; closing the
        generator (or breaking out of a ``for`` loop over it) cancels it. To resume
        after a disconnect, watch again with the ``cursor`` of the last message seen.
        """
        req = tasks_pb2.WatchTasksRequest(
            after_cursor=after_cursor, task_id=_task_ref(task_id) if task_id is not None else ""
        )
        call = self._tasks.WatchTasks(req, timeout=timeout, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e
        finally:
            call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves cancel() untyped

    # Cron jobs

    def _unary(self, method: grpc.UnaryUnaryMultiCallable[_Req, _Resp], request: _Req, timeout: float | None) -> _Resp:
        try:
            return method(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e

    def list_jobs(
        self, *, page_size: int | None = None, page_token: str | None = None, timeout: float | None = None
    ) -> ListJobsResponse:
        """One page of jobs, by name; ``next_page_token`` is empty on the last page."""
        req = jobs_pb2.ListJobsRequest(page_size=page_size or 0, page_token=page_token or "")
        return self._unary(self._jobs.ListJobs, req, timeout)

    def iter_jobs(self, *, page_size: int | None = None, timeout: float | None = None) -> Iterator[Job]:
        """Every job, by name, page after page (each page has its own deadline)."""
        token = ""
        while True:
            page = self.list_jobs(page_size=page_size, page_token=token, timeout=timeout)
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    def get_job(self, name: str, *, next_runs: int | None = None, timeout: float | None = None) -> Job:
        """A job with its last output and its next ``next_runs`` fire times (server default 5, at most 100)."""
        return self._unary(self._jobs.GetJob, _get_job_request(name, next_runs), timeout).job

    def create_job(
        self,
        job: Job | str | None = None,
        *,
        name: str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
        **fields: Unpack[JobFields],
    ) -> Job:
        """Create an API-owned job from a Job message or from fields::

            lw.create_job("nightly", command=["backup.sh"], cron="0 3 * * *", time_zone="Europe/Berlin",
                          run_timeout=600, concurrency="forbid", retry={"max_retries": 2})

        ``enabled`` defaults to True, as in the jobs file; a Job message is sent as it is.
        ALREADY_EXISTS when the name is taken; INVALID_ARGUMENT names the bad field.
        """
        req = _create_job_request(job, name, request_id, fields)
        return self._unary(self._jobs.CreateJob, req, timeout).job

    def update_job(
        self,
        job: Job | str,
        *,
        update_mask: Sequence[str] | None = None,
        timeout: float | None = None,
        **fields: Unpack[JobFields],
    ) -> Job:
        """Change exactly the fields given: ``update_job("nightly", cron="0 4 * * *", working_dir=None)``
        sets the schedule and clears the working directory. Or pass a Job message and the
        ``update_mask`` paths to take from it. Only API-owned jobs can be changed
        (FAILED_PRECONDITION for file and built-in jobs)."""
        req = _update_job_request(job, update_mask, fields)
        return self._unary(self._jobs.UpdateJob, req, timeout).job

    def delete_job(self, name: str, *, timeout: float | None = None) -> None:
        """Delete an API-owned job and its schedule; its run history stays."""
        self._unary(self._jobs.DeleteJob, jobs_pb2.DeleteJobRequest(name=name), timeout)

    def trigger_job(self, name: str, *, timeout: float | None = None) -> JobRun:
        """Start a run now and return it (``pending``). FAILED_PRECONDITION (reason
        ``JOB_RUNNING``) when the job is running and its concurrency policy forbids overlap."""
        return self._unary(self._jobs.TriggerJob, jobs_pb2.TriggerJobRequest(name=name), timeout).run

    def enable_job(self, name: str, *, timeout: float | None = None) -> Job:
        """Resume a job's schedule (slots missed while disabled are not run); returns the job."""
        return self._unary(self._jobs.EnableJob, jobs_pb2.EnableJobRequest(name=name), timeout).job

    def disable_job(self, name: str, *, timeout: float | None = None) -> Job:
        """Pause a job's schedule (a run in progress goes on); returns the job."""
        return self._unary(self._jobs.DisableJob, jobs_pb2.DisableJobRequest(name=name), timeout).job

    def list_runs(
        self,
        name: str,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> ListJobRunsResponse:
        """One page of a job's runs, newest first (server default 50, at most 500)."""
        req = jobs_pb2.ListJobRunsRequest(name=name, page_size=page_size or 0, page_token=page_token or "")
        return self._unary(self._jobs.ListJobRuns, req, timeout)

    def iter_runs(self, name: str, *, page_size: int | None = None, timeout: float | None = None) -> Iterator[JobRun]:
        """All of a job's runs, newest first, page after page."""
        token = ""
        while True:
            page = self.list_runs(name, page_size=page_size, page_token=token, timeout=timeout)
            yield from page.runs
            token = page.next_page_token
            if not token:
                return

    def get_run(self, name: str, run_id: int, *, timeout: float | None = None) -> JobRun:
        """One run of a job, with its captured output."""
        return self._unary(self._jobs.GetJobRun, jobs_pb2.GetJobRunRequest(name=name, run_id=run_id), timeout).run

    def watch_runs(
        self, *, name: str | None = None, include_output: bool = False, timeout: float | None = None
    ) -> Generator[WatchRunsResponse, None, None]:
        """Stream run state changes (of job ``name``, or of every job) from now on, until closed.

        With ``include_output`` the output of running runs arrives too, as messages whose
        ``output_chunk`` is set. Like :meth:`watch_tasks` there is no deadline unless
        ``timeout`` is given, the call starts at the first ``next()`` and closing the
        generator cancels it. The feed is live only: nothing from before the call is
        replayed (use :meth:`list_runs` for history).
        """
        req = jobs_pb2.WatchRunsRequest(name=name or "", include_output=include_output)
        call = self._jobs.WatchRuns(req, timeout=timeout, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e
        finally:
            call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves cancel() untyped

    def status(self, *, timeout: float | None = None) -> GetStatusResponse:
        """The server's status and a summary of every job."""
        return self._unary(self._jobs.GetStatus, jobs_pb2.GetStatusRequest(), timeout)


# --- the asyncio client --------------------------------------------------------------


class AsyncClient(_Base):
    """The asyncio twin of :class:`Client` (grpc.aio): same arguments, same methods, awaitable.

    Create it inside a running event loop; ``await close()`` or use ``async with``.
    """

    def __init__(
        self,
        addr: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = MAX_RETRIES,
        token: str | None = None,
        secure: bool = False,
    ) -> None:
        super().__init__(addr, timeout, retries, token, secure)
        if secure:
            self._channel = grpc.aio.secure_channel(self.addr, grpc.ssl_channel_credentials(), options=self._options)
        else:
            self._channel = grpc.aio.insecure_channel(self.addr, options=self._options)
        self._tasks = tasks_pb2_grpc.TaskServiceStub(self._channel)
        self._jobs = jobs_pb2_grpc.JobServiceStub(self._channel)

    async def close(self) -> None:
        """Close the channel; calls in flight (e.g. a watch) are cancelled."""
        await self._channel.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def create_task(
        self,
        name: str,
        *,
        type: str | None = None,
        status: StatusLike | None = None,
        priority: str | None = None,
        model: str | None = None,
        assigned_to: str | None = None,
        repos: Sequence[str] | None = None,
        discord_thread_id: str | None = None,
        estimate_minutes: int | None = None,
        requires_qa: bool | None = None,
        workflow: str | None = None,
        slug: str | None = None,
        actor: str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Task:
        """See :meth:`Client.create_task`."""
        req = _create_request(
            name,
            type=type,
            status=status,
            priority=priority,
            model=model,
            assigned_to=assigned_to,
            repos=repos,
            discord_thread_id=discord_thread_id,
            estimate_minutes=estimate_minutes,
            requires_qa=requires_qa,
            workflow=workflow,
            slug=slug,
            actor=actor,
            request_id=request_id,
        )
        try:
            resp = await self._tasks.CreateTask(req, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e
        return resp.task

    async def get_task(self, task_id: int | str, *, timeout: float | None = None) -> Task:
        """See :meth:`Client.get_task`."""
        req = tasks_pb2.GetTaskRequest(task_id=_task_ref(task_id))
        try:
            resp = await self._tasks.GetTask(req, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e
        return resp.task

    async def list_tasks(
        self,
        *,
        status: StatusLike | None = None,
        type: str | None = None,
        assigned_to: str | None = None,
        created_after: TimestampLike | None = None,
        created_before: TimestampLike | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> ListTasksResponse:
        """See :meth:`Client.list_tasks`."""
        req = _list_request(
            status=status,
            type=type,
            assigned_to=assigned_to,
            created_after=created_after,
            created_before=created_before,
            page_size=page_size,
            page_token=page_token,
        )
        try:
            return await self._tasks.ListTasks(req, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e

    async def iter_tasks(
        self,
        *,
        status: StatusLike | None = None,
        type: str | None = None,
        assigned_to: str | None = None,
        created_after: TimestampLike | None = None,
        created_before: TimestampLike | None = None,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Task]:
        """See :meth:`Client.iter_tasks`."""
        token = ""
        while True:
            page = await self.list_tasks(
                status=status,
                type=type,
                assigned_to=assigned_to,
                created_after=created_after,
                created_before=created_before,
                page_size=page_size,
                page_token=token,
                timeout=timeout,
            )
            for task in page.tasks:
                yield task
            token = page.next_page_token
            if not token:
                return

    async def update_task(
        self,
        task_id: int | str,
        *,
        actor: str | None = None,
        timeout: float | None = None,
        **fields: Unpack[TaskUpdate],
    ) -> UpdateTaskResponse:
        """See :meth:`Client.update_task`."""
        req = _update_request(task_id, actor, fields)
        try:
            return await self._tasks.UpdateTask(req, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e

    async def cancel_task(
        self,
        task_id: int | str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        timeout: float | None = None,
    ) -> CancelTaskResponse:
        """See :meth:`Client.cancel_task`."""
        req = tasks_pb2.CancelTaskRequest(task_id=_task_ref(task_id), actor=actor, reason=reason)
        try:
            return await self._tasks.CancelTask(req, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e

    async def add_event(
        self,
        task_id: int | str,
        event_type: str,
        *,
        detail: str | None = None,
        actor: str | None = None,
        timeout: float | None = None,
    ) -> TaskEvent:
        """See :meth:`Client.add_event`."""
        req = tasks_pb2.CreateTaskEventRequest(
            task_id=_task_ref(task_id), event_type=event_type, detail=detail, actor=actor
        )
        try:
            resp = await self._tasks.CreateTaskEvent(req, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e
        return resp.event

    async def list_events(
        self,
        task_id: int | str,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> ListTaskEventsResponse:
        """See :meth:`Client.list_events`."""
        req = tasks_pb2.ListTaskEventsRequest(
            task_id=_task_ref(task_id), page_size=page_size or 0, page_token=page_token or ""
        )
        try:
            return await self._tasks.ListTaskEvents(req, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e

    async def iter_events(
        self, task_id: int | str, *, page_size: int | None = None, timeout: float | None = None
    ) -> AsyncIterator[TaskEvent]:
        """See :meth:`Client.iter_events`."""
        token = ""
        while True:
            page = await self.list_events(task_id, page_size=page_size, page_token=token, timeout=timeout)
            for event in page.events:
                yield event
            token = page.next_page_token
            if not token:
                return

    async def register_repos(
        self,
        task_id: int | str,
        repos: Sequence[str],
        *,
        lobster_type: str | None = None,
        actor: str | None = None,
        timeout: float | None = None,
    ) -> Task:
        """See :meth:`Client.register_repos`."""
        req = tasks_pb2.RegisterTaskReposRequest(
            task_id=_task_ref(task_id), repos=_str_list("repos", repos), lobster_type=lobster_type, actor=actor
        )
        try:
            resp = await self._tasks.RegisterTaskRepos(req, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e
        return resp.task

    async def watch_tasks(
        self, *, after_cursor: int = 0, task_id: int | str | None = None, timeout: float | None = None
    ) -> AsyncGenerator[WatchTasksResponse, None]:
        """See :meth:`Client.watch_tasks`; ``await gen.aclose()`` (or leaving ``async for``) cancels."""
        req = tasks_pb2.WatchTasksRequest(
            after_cursor=after_cursor, task_id=_task_ref(task_id) if task_id is not None else ""
        )
        call = self._tasks.WatchTasks(req, timeout=timeout, metadata=self._metadata)
        try:
            async for msg in call:
                yield msg
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e
        finally:
            call.cancel()

    # Cron jobs

    async def _unary(
        self, method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp], request: _Req, timeout: float | None
    ) -> _Resp:
        try:
            return await method(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e

    async def list_jobs(
        self, *, page_size: int | None = None, page_token: str | None = None, timeout: float | None = None
    ) -> ListJobsResponse:
        """See :meth:`Client.list_jobs`."""
        req = jobs_pb2.ListJobsRequest(page_size=page_size or 0, page_token=page_token or "")
        return await self._unary(self._jobs.ListJobs, req, timeout)

    async def iter_jobs(self, *, page_size: int | None = None, timeout: float | None = None) -> AsyncIterator[Job]:
        """See :meth:`Client.iter_jobs`."""
        token = ""
        while True:
            page = await self.list_jobs(page_size=page_size, page_token=token, timeout=timeout)
            for job in page.jobs:
                yield job
            token = page.next_page_token
            if not token:
                return

    async def get_job(self, name: str, *, next_runs: int | None = None, timeout: float | None = None) -> Job:
        """See :meth:`Client.get_job`."""
        return (await self._unary(self._jobs.GetJob, _get_job_request(name, next_runs), timeout)).job

    async def create_job(
        self,
        job: Job | str | None = None,
        *,
        name: str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
        **fields: Unpack[JobFields],
    ) -> Job:
        """See :meth:`Client.create_job`."""
        req = _create_job_request(job, name, request_id, fields)
        return (await self._unary(self._jobs.CreateJob, req, timeout)).job

    async def update_job(
        self,
        job: Job | str,
        *,
        update_mask: Sequence[str] | None = None,
        timeout: float | None = None,
        **fields: Unpack[JobFields],
    ) -> Job:
        """See :meth:`Client.update_job`."""
        req = _update_job_request(job, update_mask, fields)
        return (await self._unary(self._jobs.UpdateJob, req, timeout)).job

    async def delete_job(self, name: str, *, timeout: float | None = None) -> None:
        """See :meth:`Client.delete_job`."""
        await self._unary(self._jobs.DeleteJob, jobs_pb2.DeleteJobRequest(name=name), timeout)

    async def trigger_job(self, name: str, *, timeout: float | None = None) -> JobRun:
        """See :meth:`Client.trigger_job`."""
        return (await self._unary(self._jobs.TriggerJob, jobs_pb2.TriggerJobRequest(name=name), timeout)).run

    async def enable_job(self, name: str, *, timeout: float | None = None) -> Job:
        """See :meth:`Client.enable_job`."""
        return (await self._unary(self._jobs.EnableJob, jobs_pb2.EnableJobRequest(name=name), timeout)).job

    async def disable_job(self, name: str, *, timeout: float | None = None) -> Job:
        """See :meth:`Client.disable_job`."""
        return (await self._unary(self._jobs.DisableJob, jobs_pb2.DisableJobRequest(name=name), timeout)).job

    async def list_runs(
        self,
        name: str,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> ListJobRunsResponse:
        """See :meth:`Client.list_runs`."""
        req = jobs_pb2.ListJobRunsRequest(name=name, page_size=page_size or 0, page_token=page_token or "")
        return await self._unary(self._jobs.ListJobRuns, req, timeout)

    async def iter_runs(
        self, name: str, *, page_size: int | None = None, timeout: float | None = None
    ) -> AsyncIterator[JobRun]:
        """See :meth:`Client.iter_runs`."""
        token = ""
        while True:
            page = await self.list_runs(name, page_size=page_size, page_token=token, timeout=timeout)
            for run in page.runs:
                yield run
            token = page.next_page_token
            if not token:
                return

    async def get_run(self, name: str, run_id: int, *, timeout: float | None = None) -> JobRun:
        """See :meth:`Client.get_run`."""
        req = jobs_pb2.GetJobRunRequest(name=name, run_id=run_id)
        return (await self._unary(self._jobs.GetJobRun, req, timeout)).run

    async def watch_runs(
        self, *, name: str | None = None, include_output: bool = False, timeout: float | None = None
    ) -> AsyncGenerator[WatchRunsResponse, None]:
        """See :meth:`Client.watch_runs`; ``await gen.aclose()`` (or leaving ``async for``) cancels."""
        req = jobs_pb2.WatchRunsRequest(name=name or "", include_output=include_output)
        call = self._jobs.WatchRuns(req, timeout=timeout, metadata=self._metadata)
        try:
            async for msg in call:
                yield msg
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e
        finally:
            call.cancel()

    async def status(self, *, timeout: float | None = None) -> GetStatusResponse:
        """See :meth:`Client.status`."""
        return await self._unary(self._jobs.GetStatus, jobs_pb2.GetStatusRequest(), timeout)
