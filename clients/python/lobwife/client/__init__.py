"""Typed clients for the lobwife gRPC API: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

Both take the same arguments, have the same method names and return the generated
message types (``lobwife.v1.tasks_pb2`` for tasks, ``lobwife.v1.jobs_pb2`` for cron jobs)::

    with Client("lobwife:50051", token=token) as lw:
        task = lw.create_task("Fix the flaky test", repos=["org/repo"])
        lw.update_task(task.id, status="active", assigned_to="lobster-7")
        for change in lw.watch_tasks(after_cursor=cursor):   # or from_now=True
            ...
        run = lw.trigger_job("flush-logs")
        for update in lw.watch_runs(name="flush-logs", include_output=True):
            ...

Jobs methods return ``lobwife.v1.jobs_pb2`` messages (``Job``, ``JobRun``, ...); the auth
methods (``mint_token``, ``whoami``) ``lobwife.v1.auth_pb2`` ones, and the token broker's
(``broker_register``, ``issue_task_token``, ``iter_token_audit``, ...) ``lobwife.v1.broker_pb2``
ones. A task's estimate is ``estimate_minutes(task)``: the exact field, or the deprecated
whole minutes from an older server.

One set of builders (``_builders``: one function per method, with its signature, its
docstring and its argument handling) serves both faces; ``_sync`` and ``_async`` add
only the transport. ``_builders.METHODS`` is the table of methods, one RPC each;
tests/unit/client/test_method_table.py holds it to the contract.

Every unary call has a deadline (the client's ``timeout``, overridable per call) and
sends ``authorization: Bearer <token>`` when a token is set (``token=``, else
``$LOBWIFE_TOKEN``; never shown in a repr or an error). Failures raise
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

Watches resume by themselves: when the stream breaks (server restart, dropped
connection, a task watch that fell behind) they call again, a task watch after the last
cursor it saw, and log a warning on the ``lobwife.client`` logger (and call
``on_reconnect``). A task watch without a cursor replays every retained change;
``from_now=True`` asks for "from now on". See :meth:`Client.watch_tasks`.
"""

# The names below were all importable from lobwife.client when it was one module; they stay so.
from lobwife.client._async import AsyncClient
from lobwife.client._builders import METHODS as METHODS
from lobwife.client._builders import cost_request
from lobwife.client._channel import (
    DEFAULT_ADDR,
    LOBWIFE_SERVICES,
    MAX_RETRIES,
    RECONNECT_INITIAL_BACKOFF_MS,
    RECONNECT_MAX_BACKOFF_MS,
    RETRY_BACKOFF_MULTIPLIER,
    RETRY_INITIAL_BACKOFF_S,
    RETRY_MAX_BACKOFF_S,
    channel_options,
    service_config,
)
from lobwife.client._errors import FieldViolation, LobwifeError
from lobwife.client._requests import (
    DurationLike,
    EnumLike,
    JobFields,
    RetryLike,
    StatusLike,
    TaskUpdate,
    TimestampLike,
    estimate_minutes,
    parse_enum,
    parse_status,
    status_name,
    to_duration,
    to_timestamp,
)
from lobwife.client._requests import _create_job_request as _create_job_request
from lobwife.client._requests import _create_request as _create_request
from lobwife.client._requests import _get_job_request as _get_job_request
from lobwife.client._requests import _list_request as _list_request
from lobwife.client._requests import _update_job_request as _update_job_request
from lobwife.client._requests import _update_request as _update_request
from lobwife.client._sync import Client
from lobwife.client._watch import WATCH_BACKOFF_MAX_S, WATCH_BACKOFF_MIN_S, Reconnect
from lobwife.v1.auth_pb2 import MintTokenResponse, Role, WhoAmIResponse
from lobwife.v1.broker_pb2 import (
    BrokerSummary,
    IssueServiceTokenResponse,
    IssueTaskTokenResponse,
    Registration,
    TokenAuditEntry,
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
    "LOBWIFE_SERVICES",
    "MAX_RETRIES",
    "RECONNECT_INITIAL_BACKOFF_MS",
    "RECONNECT_MAX_BACKOFF_MS",
    "RETRY_BACKOFF_MULTIPLIER",
    "RETRY_INITIAL_BACKOFF_S",
    "RETRY_MAX_BACKOFF_S",
    "SERVICE_NAMES",
    "WATCH_BACKOFF_MAX_S",
    "WATCH_BACKOFF_MIN_S",
    "AsyncClient",
    "BrokerSummary",
    "CancelTaskResponse",
    "Client",
    "DurationLike",
    "EnumLike",
    "FieldViolation",
    "GetStatusResponse",
    "IssueServiceTokenResponse",
    "IssueTaskTokenResponse",
    "Job",
    "JobFields",
    "JobRun",
    "ListJobRunsResponse",
    "ListJobsResponse",
    "ListTaskEventsResponse",
    "ListTasksResponse",
    "LobwifeError",
    "MintTokenResponse",
    "Reconnect",
    "Registration",
    "RetryLike",
    "RetryPolicy",
    "Role",
    "StatusLike",
    "Task",
    "TaskEvent",
    "TaskStatus",
    "TaskUpdate",
    "TimestampLike",
    "TokenAuditEntry",
    "UpdateTaskResponse",
    "WatchRunsResponse",
    "WatchTasksResponse",
    "WhoAmIResponse",
    "channel_options",
    "cost_request",
    "estimate_minutes",
    "parse_enum",
    "parse_status",
    "service_config",
    "status_name",
    "to_duration",
    "to_timestamp",
]
