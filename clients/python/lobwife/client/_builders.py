"""The one table of methods: a builder per public method, shared by :class:`Client` and :class:`AsyncClient`.

A builder takes the method's arguments exactly as the public method does (its signature and
docstring are the method's), checks and converts them, and returns what the face has to do: a
:class:`~lobwife.client._rpc.Unary` call, :class:`~lobwife.client._rpc.Pages` of a list call, or
a :class:`~lobwife.client._watch.Watch` stream. A face adds only the transport, one line a
method: ``create_task = unary(b.create_task)``. :data:`METHODS` lists every builder with its RPC
and kind; tests/unit/client/test_method_table.py checks it against the contract and both faces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Unpack

from lobwife.client._requests import (
    DurationLike,
    EnumLike,
    JobFields,
    StatusLike,
    TaskUpdate,
    TimestampLike,
    _create_job_request,
    _create_request,
    _get_job_request,
    _list_request,
    _str_list,
    _task_ref,
    _update_job_request,
    _update_request,
    parse_enum,
    to_duration,
    to_timestamp,
)
from lobwife.client._rpc import Pages, Rpc, Unary, pages, unary, whole
from lobwife.client._watch import Reconnect, RunWatch, TaskWatch
from lobwife.v1 import audits_pb2, auth_pb2, broker_pb2, costs_pb2, jobs_pb2, system_pb2, tasks_pb2
from lobwife.v1.audits_pb2 import CreateFindingResponse, Finding, GetFindingResponse, ListFindingsResponse
from lobwife.v1.auth_pb2 import MintTokenResponse, WhoAmIResponse
from lobwife.v1.broker_pb2 import (
    DeregisterTaskResponse,
    IssueServiceTokenResponse,
    IssueTaskTokenResponse,
    ListTokenAuditResponse,
    RegisterTaskResponse,
    Registration,
    TokenAuditEntry,
)
from lobwife.v1.jobs_pb2 import (
    GetStatusResponse,
    GetSyncStatusResponse,
    Job,
    JobRun,
    ListJobRunsResponse,
    ListJobsResponse,
    TriggerSyncResponse,
)
from lobwife.v1.system_pb2 import GetHealthResponse
from lobwife.v1.tasks_pb2 import (
    CancelTaskResponse,
    ListTaskEventsResponse,
    ListTasksResponse,
    Task,
    TaskEvent,
    UpdateTaskResponse,
)

T = tasks_pb2
J = jobs_pb2
A = auth_pb2
B = broker_pb2
AU = audits_pb2
CO = costs_pb2

# --- the RPCs --------------------------------------------------------------------------

CREATE_TASK = Rpc("TaskService", "CreateTask", T.CreateTaskRequest, T.CreateTaskResponse)
GET_TASK = Rpc("TaskService", "GetTask", T.GetTaskRequest, T.GetTaskResponse)
LIST_TASKS = Rpc("TaskService", "ListTasks", T.ListTasksRequest, T.ListTasksResponse)
UPDATE_TASK = Rpc("TaskService", "UpdateTask", T.UpdateTaskRequest, T.UpdateTaskResponse)
CANCEL_TASK = Rpc("TaskService", "CancelTask", T.CancelTaskRequest, T.CancelTaskResponse)
CREATE_TASK_EVENT = Rpc("TaskService", "CreateTaskEvent", T.CreateTaskEventRequest, T.CreateTaskEventResponse)
LIST_TASK_EVENTS = Rpc("TaskService", "ListTaskEvents", T.ListTaskEventsRequest, T.ListTaskEventsResponse)
REGISTER_TASK_REPOS = Rpc("TaskService", "RegisterTaskRepos", T.RegisterTaskReposRequest, T.RegisterTaskReposResponse)
WATCH_TASKS = Rpc("TaskService", "WatchTasks", T.WatchTasksRequest, T.WatchTasksResponse)

LIST_JOBS = Rpc("JobService", "ListJobs", J.ListJobsRequest, J.ListJobsResponse)
GET_JOB = Rpc("JobService", "GetJob", J.GetJobRequest, J.GetJobResponse)
CREATE_JOB = Rpc("JobService", "CreateJob", J.CreateJobRequest, J.CreateJobResponse)
UPDATE_JOB = Rpc("JobService", "UpdateJob", J.UpdateJobRequest, J.UpdateJobResponse)
DELETE_JOB = Rpc("JobService", "DeleteJob", J.DeleteJobRequest, J.DeleteJobResponse)
TRIGGER_JOB = Rpc("JobService", "TriggerJob", J.TriggerJobRequest, J.TriggerJobResponse)
ENABLE_JOB = Rpc("JobService", "EnableJob", J.EnableJobRequest, J.EnableJobResponse)
DISABLE_JOB = Rpc("JobService", "DisableJob", J.DisableJobRequest, J.DisableJobResponse)
LIST_JOB_RUNS = Rpc("JobService", "ListJobRuns", J.ListJobRunsRequest, J.ListJobRunsResponse)
GET_JOB_RUN = Rpc("JobService", "GetJobRun", J.GetJobRunRequest, J.GetJobRunResponse)
WATCH_RUNS = Rpc("JobService", "WatchRuns", J.WatchRunsRequest, J.WatchRunsResponse)
GET_STATUS = Rpc("JobService", "GetStatus", J.GetStatusRequest, J.GetStatusResponse)
GET_SYNC_STATUS = Rpc("JobService", "GetSyncStatus", J.GetSyncStatusRequest, J.GetSyncStatusResponse)
TRIGGER_SYNC = Rpc("JobService", "TriggerSync", J.TriggerSyncRequest, J.TriggerSyncResponse)

GET_HEALTH = Rpc("SystemService", "GetHealth", system_pb2.GetHealthRequest, system_pb2.GetHealthResponse)

MINT_TOKEN = Rpc("AuthService", "MintToken", A.MintTokenRequest, A.MintTokenResponse)
WHO_AM_I = Rpc("AuthService", "WhoAmI", A.WhoAmIRequest, A.WhoAmIResponse)

REGISTER_TASK = Rpc("BrokerService", "RegisterTask", B.RegisterTaskRequest, B.RegisterTaskResponse)
DEREGISTER_TASK = Rpc("BrokerService", "DeregisterTask", B.DeregisterTaskRequest, B.DeregisterTaskResponse)
LIST_REGISTRATIONS = Rpc("BrokerService", "ListRegistrations", B.ListRegistrationsRequest, B.ListRegistrationsResponse)
ISSUE_TASK_TOKEN = Rpc("BrokerService", "IssueTaskToken", B.IssueTaskTokenRequest, B.IssueTaskTokenResponse)
ISSUE_SERVICE_TOKEN = Rpc("BrokerService", "IssueServiceToken", B.IssueServiceTokenRequest, B.IssueServiceTokenResponse)
LIST_TOKEN_AUDIT = Rpc("BrokerService", "ListTokenAudit", B.ListTokenAuditRequest, B.ListTokenAuditResponse)
EXPIRE_REGISTRATIONS = Rpc(
    "BrokerService", "ExpireRegistrations", B.ExpireRegistrationsRequest, B.ExpireRegistrationsResponse
)

CREATE_FINDING = Rpc("AuditService", "CreateFinding", AU.CreateFindingRequest, AU.CreateFindingResponse)
GET_FINDING = Rpc("AuditService", "GetFinding", AU.GetFindingRequest, AU.GetFindingResponse)
LIST_FINDINGS = Rpc("AuditService", "ListFindings", AU.ListFindingsRequest, AU.ListFindingsResponse)
UPDATE_FINDING = Rpc("AuditService", "UpdateFinding", AU.UpdateFindingRequest, AU.UpdateFindingResponse)
RESOLVE_FINDING = Rpc("AuditService", "ResolveFinding", AU.ResolveFindingRequest, AU.ResolveFindingResponse)

RECORD_COST = Rpc("CostService", "RecordCost", CO.RecordCostRequest, CO.RecordCostResponse)
RECORD_COSTS = Rpc("CostService", "RecordCosts", CO.RecordCostsRequest, CO.RecordCostsResponse)
LIST_COSTS = Rpc("CostService", "ListCosts", CO.ListCostsRequest, CO.ListCostsResponse)
SUMMARIZE_COSTS = Rpc("CostService", "SummarizeCosts", CO.SummarizeCostsRequest, CO.SummarizeCostsResponse)
REPRICE_COSTS = Rpc("CostService", "RepriceCosts", CO.RepriceCostsRequest, CO.RepriceCostsResponse)

# --- the table -------------------------------------------------------------------------

Kind = Literal["unary", "pages", "watch"]


@dataclass(frozen=True)
class Method:
    """A public method of both faces: its name, the RPC it calls, its kind and its builder."""

    name: str
    rpc: Rpc[Any, Any]
    kind: Kind
    build: Callable[..., Any]


#: Every public method of the clients, by name, in the order they are defined.
METHODS: dict[str, Method] = {}

_F = TypeVar("_F", bound=Callable[..., Any])


def _method(rpc: Rpc[Any, Any], kind: Kind = "unary") -> Callable[[_F], _F]:
    def register(build: _F) -> _F:
        if build.__name__ in METHODS:
            raise ValueError(f"{build.__name__} is defined twice")
        if rpc.streaming != (kind == "watch"):
            raise TypeError(f"{build.__name__}: {rpc.full_name} is {'' if rpc.streaming else 'not '}a stream")
        METHODS[build.__name__] = Method(build.__name__, rpc, kind, build)
        return build

    return register


# --- tasks -----------------------------------------------------------------------------


@_method(CREATE_TASK)
def create_task(
    name: str,
    *,
    type: str | None = None,
    status: StatusLike | None = None,
    priority: str | None = None,
    model: str | None = None,
    assigned_to: str | None = None,
    repos: Sequence[str] | None = None,
    discord_thread_id: str | None = None,
    estimate_minutes: float | None = None,
    requires_qa: bool | None = None,
    workflow: str | None = None,
    slug: str | None = None,
    actor: str | None = None,
    request_id: str | None = None,
    budget_usd: float | None = None,
    timeout: float | None = None,
) -> Unary[Task]:
    """Create a task. Without ``request_id`` a uuid4 is sent, so a retried create never duplicates.

    ``estimate_minutes`` keeps fractions (``12.5``; it is sent as ``estimate_minutes_exact``).
    ``budget_usd``: what it may spend on model calls (unset: its type's default, docs/costs.md)."""
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
        budget_usd=budget_usd,
    )
    return unary(CREATE_TASK, req, timeout, lambda r: r.task)


@_method(GET_TASK)
def get_task(task_id: int | str, *, timeout: float | None = None) -> Unary[Task]:
    """Get a task by number (``42``) or display id (``"T42"``)."""
    return unary(GET_TASK, T.GetTaskRequest(task_id=_task_ref(task_id)), timeout, lambda r: r.task)


@_method(LIST_TASKS)
def list_tasks(
    *,
    status: StatusLike | None = None,
    type: str | None = None,
    assigned_to: str | None = None,
    created_after: TimestampLike | None = None,
    created_before: TimestampLike | None = None,
    page_size: int | None = None,
    page_token: str | None = None,
    timeout: float | None = None,
) -> Unary[ListTasksResponse]:
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
    return whole(LIST_TASKS, req, timeout)


@_method(LIST_TASKS, "pages")
def iter_tasks(
    *,
    status: StatusLike | None = None,
    type: str | None = None,
    assigned_to: str | None = None,
    created_after: TimestampLike | None = None,
    created_before: TimestampLike | None = None,
    page_size: int | None = None,
    timeout: float | None = None,
) -> Pages[Task]:
    """Every matching task, fetching page after page (each page has its own deadline)."""
    filters: dict[str, Any] = {
        "status": status,
        "type": type,
        "assigned_to": assigned_to,
        "created_after": created_after,
        "created_before": created_before,
        "page_size": page_size,
    }
    return pages(lambda token: list_tasks(page_token=token, timeout=timeout, **filters), lambda page: page.tasks)


@_method(UPDATE_TASK)
def update_task(
    task_id: int | str,
    *,
    actor: str | None = None,
    timeout: float | None = None,
    **fields: Unpack[TaskUpdate],
) -> Unary[UpdateTaskResponse]:
    """Change exactly the fields given: ``update_task(7, status="active", assigned_to=None)``
    sets the status and clears the assignee; ``update_mask`` names those fields."""
    return whole(UPDATE_TASK, _update_request(task_id, actor, fields), timeout)


@_method(CANCEL_TASK)
def cancel_task(
    task_id: int | str,
    *,
    actor: str | None = None,
    reason: str | None = None,
    timeout: float | None = None,
) -> Unary[CancelTaskResponse]:
    """Cancel a task; FAILED_PRECONDITION when it is already completed or cancelled."""
    return whole(CANCEL_TASK, T.CancelTaskRequest(task_id=_task_ref(task_id), actor=actor, reason=reason), timeout)


@_method(CREATE_TASK_EVENT)
def add_event(
    task_id: int | str,
    event_type: str,
    *,
    detail: str | None = None,
    actor: str | None = None,
    timeout: float | None = None,
) -> Unary[TaskEvent]:
    """Append an event to a task's trail and return it."""
    req = T.CreateTaskEventRequest(task_id=_task_ref(task_id), event_type=event_type, detail=detail, actor=actor)
    return unary(CREATE_TASK_EVENT, req, timeout, lambda r: r.event)


@_method(LIST_TASK_EVENTS)
def list_events(
    task_id: int | str,
    *,
    page_size: int | None = None,
    page_token: str | None = None,
    timeout: float | None = None,
) -> Unary[ListTaskEventsResponse]:
    """One page of a task's events, newest first."""
    req = T.ListTaskEventsRequest(task_id=_task_ref(task_id), page_size=page_size or 0, page_token=page_token or "")
    return whole(LIST_TASK_EVENTS, req, timeout)


@_method(LIST_TASK_EVENTS, "pages")
def iter_events(task_id: int | str, *, page_size: int | None = None, timeout: float | None = None) -> Pages[TaskEvent]:
    """All of a task's events, newest first, page after page."""
    return pages(
        lambda token: list_events(task_id, page_size=page_size, page_token=token, timeout=timeout),
        lambda page: page.events,
    )


@_method(REGISTER_TASK_REPOS)
def register_repos(
    task_id: int | str,
    repos: Sequence[str],
    *,
    lobster_type: str | None = None,
    actor: str | None = None,
    timeout: float | None = None,
) -> Unary[Task]:
    """Record the repositories the task may get GitHub tokens for; returns the updated task."""
    req = T.RegisterTaskReposRequest(
        task_id=_task_ref(task_id), repos=_str_list("repos", repos), lobster_type=lobster_type, actor=actor
    )
    return unary(REGISTER_TASK_REPOS, req, timeout, lambda r: r.task)


@_method(WATCH_TASKS, "watch")
def watch_tasks(
    *,
    after_cursor: int = 0,
    from_now: bool = False,
    task_id: int | str | None = None,
    timeout: float | None = None,
    reconnect: bool = True,
    on_reconnect: Callable[[Reconnect], None] | None = None,
) -> TaskWatch:
    """Stream task changes after ``after_cursor`` until closed, resuming by itself across reconnects.

    Where it starts: after ``after_cursor`` (the ``cursor`` of the last message you saw);
    by default (no cursor) with every retained change from the first; with
    ``from_now=True`` at the current end, and then the first message carries only the
    ``cursor`` of that position (``HasField("event")`` is false): keep it to resume from
    later, e.g. after your own restart. Giving both is INVALID_ARGUMENT naming ``from_now``.

    When the stream breaks (the server restarts or drains, the connection drops:
    UNAVAILABLE or a clean end; or ABORTED ``WATCH_FELL_BEHIND`` when you read too
    slowly) the watch calls again with ``after_cursor`` = the last cursor it saw, after a
    backoff of 0.1 s doubling to 5 s. Nothing is missed and nothing is yielded twice. Each
    reconnect is logged as a warning on the ``lobwife.client`` logger naming the cursor,
    and passed to ``on_reconnect`` (a :class:`Reconnect`) if given. ``reconnect=False``
    raises the error instead (a clean end then ends the iteration). Other errors are raised.

    A watch has no deadline unless ``timeout`` is given: it is meant to stay open, and
    ``timeout`` bounds it as a whole, reconnects included. The call starts at the first
    ``next()``; closing the generator (or leaving the ``for`` loop) cancels it.
    """
    return TaskWatch(
        WATCH_TASKS,
        after_cursor=after_cursor,
        from_now=from_now,
        task_id=_task_ref(task_id) if task_id is not None else "",
        timeout=timeout,
        reconnect=reconnect,
        on_reconnect=on_reconnect,
    )


# --- cron jobs -------------------------------------------------------------------------


@_method(LIST_JOBS)
def list_jobs(
    *, page_size: int | None = None, page_token: str | None = None, timeout: float | None = None
) -> Unary[ListJobsResponse]:
    """One page of jobs, by name; ``next_page_token`` is empty on the last page."""
    return whole(LIST_JOBS, J.ListJobsRequest(page_size=page_size or 0, page_token=page_token or ""), timeout)


@_method(LIST_JOBS, "pages")
def iter_jobs(*, page_size: int | None = None, timeout: float | None = None) -> Pages[Job]:
    """Every job, by name, page after page (each page has its own deadline)."""
    return pages(lambda token: list_jobs(page_size=page_size, page_token=token, timeout=timeout), lambda p: p.jobs)


@_method(GET_JOB)
def get_job(name: str, *, next_runs: int | None = None, timeout: float | None = None) -> Unary[Job]:
    """A job with its last output and its next ``next_runs`` fire times (server default 5, at most 100)."""
    return unary(GET_JOB, _get_job_request(name, next_runs), timeout, lambda r: r.job)


@_method(CREATE_JOB)
def create_job(
    job: Job | str | None = None,
    *,
    name: str | None = None,
    request_id: str | None = None,
    timeout: float | None = None,
    **fields: Unpack[JobFields],
) -> Unary[Job]:
    """Create an API-owned job from a Job message or from fields::

        lw.create_job("nightly", command=["backup.sh"], cron="0 3 * * *", time_zone="Europe/Berlin",
                      run_timeout=600, concurrency="forbid", retry={"max_retries": 2})

    ``enabled`` defaults to True, as in the jobs file; a Job message is sent as it is.
    ALREADY_EXISTS when the name is taken; INVALID_ARGUMENT names the bad field.
    """
    return unary(CREATE_JOB, _create_job_request(job, name, request_id, fields), timeout, lambda r: r.job)


@_method(UPDATE_JOB)
def update_job(
    job: Job | str,
    *,
    update_mask: Sequence[str] | None = None,
    timeout: float | None = None,
    **fields: Unpack[JobFields],
) -> Unary[Job]:
    """Change exactly the fields given: ``update_job("nightly", cron="0 4 * * *", working_dir=None)``
    sets the schedule and clears the working directory. Or pass a Job message and the
    ``update_mask`` paths to take from it. Only API-owned jobs can be changed
    (FAILED_PRECONDITION for file and built-in jobs)."""
    return unary(UPDATE_JOB, _update_job_request(job, update_mask, fields), timeout, lambda r: r.job)


@_method(DELETE_JOB)
def delete_job(name: str, *, timeout: float | None = None) -> Unary[None]:
    """Delete an API-owned job and its schedule; its run history stays."""
    return unary(DELETE_JOB, J.DeleteJobRequest(name=name), timeout, lambda r: None)


@_method(TRIGGER_JOB)
def trigger_job(name: str, *, timeout: float | None = None) -> Unary[JobRun]:
    """Start a run now and return it (``pending``). FAILED_PRECONDITION (reason
    ``JOB_RUNNING``) when the job is running and its concurrency policy forbids overlap."""
    return unary(TRIGGER_JOB, J.TriggerJobRequest(name=name), timeout, lambda r: r.run)


@_method(ENABLE_JOB)
def enable_job(name: str, *, timeout: float | None = None) -> Unary[Job]:
    """Resume a job's schedule (slots missed while disabled are not run); returns the job."""
    return unary(ENABLE_JOB, J.EnableJobRequest(name=name), timeout, lambda r: r.job)


@_method(DISABLE_JOB)
def disable_job(name: str, *, timeout: float | None = None) -> Unary[Job]:
    """Pause a job's schedule (a run in progress goes on); returns the job."""
    return unary(DISABLE_JOB, J.DisableJobRequest(name=name), timeout, lambda r: r.job)


@_method(LIST_JOB_RUNS)
def list_runs(
    name: str,
    *,
    page_size: int | None = None,
    page_token: str | None = None,
    timeout: float | None = None,
) -> Unary[ListJobRunsResponse]:
    """One page of a job's runs, newest first (server default 50, at most 500)."""
    req = J.ListJobRunsRequest(name=name, page_size=page_size or 0, page_token=page_token or "")
    return whole(LIST_JOB_RUNS, req, timeout)


@_method(LIST_JOB_RUNS, "pages")
def iter_runs(name: str, *, page_size: int | None = None, timeout: float | None = None) -> Pages[JobRun]:
    """All of a job's runs, newest first, page after page."""
    return pages(
        lambda token: list_runs(name, page_size=page_size, page_token=token, timeout=timeout), lambda p: p.runs
    )


@_method(GET_JOB_RUN)
def get_run(name: str, run_id: int, *, timeout: float | None = None) -> Unary[JobRun]:
    """One run of a job, with its captured output."""
    return unary(GET_JOB_RUN, J.GetJobRunRequest(name=name, run_id=run_id), timeout, lambda r: r.run)


@_method(WATCH_RUNS, "watch")
def watch_runs(
    *,
    name: str | None = None,
    include_output: bool = False,
    timeout: float | None = None,
    reconnect: bool = True,
    on_reconnect: Callable[[Reconnect], None] | None = None,
) -> RunWatch:
    """Stream run state changes (of job ``name``, or of every job) from now on, until closed.

    With ``include_output`` the output of running runs arrives too, as messages whose
    ``output_chunk`` is set. The feed is live only: nothing from before the call is
    replayed (use :meth:`list_runs` for history), and it has no cursor. So when the
    stream breaks (UNAVAILABLE, a clean end on server shutdown) the watch reconnects, as
    :meth:`watch_tasks` does and saying so the same way, and goes on with what happens
    from then: updates made while it was disconnected are **not** replayed (a run that
    ended meanwhile is not announced; :meth:`get_run` tells). ``reconnect=False`` raises
    instead. ``timeout``, the first ``next()`` and closing behave as in :meth:`watch_tasks`.
    """
    return RunWatch(
        WATCH_RUNS,
        request=J.WatchRunsRequest(name=name or "", include_output=include_output),
        timeout=timeout,
        reconnect=reconnect,
        on_reconnect=on_reconnect,
    )


@_method(GET_STATUS)
def status(*, timeout: float | None = None) -> Unary[GetStatusResponse]:
    """The server's status and a summary of every job."""
    return whole(GET_STATUS, J.GetStatusRequest(), timeout)


@_method(GET_SYNC_STATUS)
def sync_status(*, timeout: float | None = None) -> Unary[GetSyncStatusResponse]:
    """The vault sync's state: enabled, running, the last success, and the last cycle (when it
    ended, its error, commit, push and counts), and whether a full rebuild is pending."""
    return whole(GET_SYNC_STATUS, J.GetSyncStatusRequest(), timeout)


@_method(TRIGGER_SYNC)
def trigger_sync(*, full: bool = False, timeout: float | None = None) -> Unary[TriggerSyncResponse]:
    """Request a vault sync now; ``full``: a full rebuild (every task file rewritten), which the
    server keeps pending until one succeeds. UNAVAILABLE when sync is not enabled, after the
    channel's retries (``retries``, ~7.5 s by default): gRPC cannot tell that answer from an outage."""
    return whole(TRIGGER_SYNC, J.TriggerSyncRequest(full=full), timeout)


# --- the server ------------------------------------------------------------------------


@_method(GET_HEALTH)
def health(*, timeout: float | None = None) -> Unary[GetHealthResponse]:
    """The server's health document: status, uptime, running jobs, broker and database state."""
    return whole(GET_HEALTH, system_pb2.GetHealthRequest(), timeout)


# --- auth --------------------------------------------------------------------------------


@_method(MINT_TOKEN)
def mint_token(
    role: EnumLike,
    *,
    task: int | str | None = None,
    subject: str | None = None,
    ttl: DurationLike | None = None,
    timeout: float | None = None,
) -> Unary[MintTokenResponse]:
    """Mint a lobwife-signed bearer token (the caller needs an admin token, in every auth mode).

    ``role`` is ``"admin"``, ``"service"``, ``"task"`` or ``"reader"`` (or a ``Role`` value); a
    ``task`` token names its ``task`` (``42`` or ``"T42"``) and stops working when that task
    ends. ``subject`` defaults to the role (``task-T42`` for a task token); ``ttl`` (seconds,
    a timedelta or a Duration) to 1 hour, at most 366 days. The answer's ``token`` is shown
    once: the server keeps no copy.
    """
    req = A.MintTokenRequest(
        role=A.Role.ValueType(parse_enum(A.Role.DESCRIPTOR, role, "role")),
        task_id=_task_ref(task) if task is not None else "",
        subject=subject or "",
    )
    if ttl is not None:
        req.ttl.CopyFrom(to_duration(ttl, "ttl"))
    return whole(MINT_TOKEN, req, timeout)


@_method(WHO_AM_I)
def whoami(*, timeout: float | None = None) -> Unary[WhoAmIResponse]:
    """Who the server takes this client for: role, subject, task, the credential's source and
    expiry, and the server's auth mode (``role`` is unspecified without a valid credential)."""
    return whole(WHO_AM_I, A.WhoAmIRequest(), timeout)


# --- the token broker ----------------------------------------------------------------------


@_method(REGISTER_TASK)
def broker_register(
    task_ref: int | str,
    repos: Sequence[str],
    *,
    lobster_type: str | None = None,
    timeout: float | None = None,
) -> Unary[RegisterTaskResponse]:
    """Register the repositories (``owner/name``, 1 to 500) a task may get GitHub tokens for.

    ``task_ref`` is ``T42``, a task's slug, name or ``assigned_to`` value; a reference that
    matches no task is registered on its own. FAILED_PRECONDITION when the task it matches
    has finished. (:meth:`register_repos` is the TaskService's form, which needs a task.)
    """
    req = B.RegisterTaskRequest(
        task_id=_task_ref(task_ref), repos=_str_list("repos", repos), lobster_type=lobster_type or ""
    )
    return whole(REGISTER_TASK, req, timeout)


@_method(DEREGISTER_TASK)
def broker_deregister(task_ref: int | str, *, timeout: float | None = None) -> Unary[DeregisterTaskResponse]:
    """Remove a task's registration: its later token requests are refused (PERMISSION_DENIED)."""
    return whole(DEREGISTER_TASK, B.DeregisterTaskRequest(task_id=_task_ref(task_ref)), timeout)


@_method(LIST_REGISTRATIONS)
def broker_registrations(*, timeout: float | None = None) -> Unary[dict[str, Registration]]:
    """Every registration, by task reference."""
    return unary(LIST_REGISTRATIONS, B.ListRegistrationsRequest(), timeout, lambda r: dict(r.registrations))


@_method(ISSUE_TASK_TOKEN)
def issue_task_token(task_ref: int | str, *, timeout: float | None = None) -> Unary[IssueTaskTokenResponse]:
    """A GitHub installation token scoped to the task's registered repositories (``token``,
    ``expires_at``, ``repos``). PERMISSION_DENIED when the task is not registered or has
    finished; UNAVAILABLE when the broker is not configured or GitHub does not answer."""
    return whole(ISSUE_TASK_TOKEN, B.IssueTaskTokenRequest(task_id=_task_ref(task_ref)), timeout)


@_method(ISSUE_SERVICE_TOKEN)
def issue_service_token(service: str, *, timeout: float | None = None) -> Unary[IssueServiceTokenResponse]:
    """A GitHub installation token for every repository of the installation, for ``service``."""
    return whole(ISSUE_SERVICE_TOKEN, B.IssueServiceTokenRequest(service=service), timeout)


@_method(LIST_TOKEN_AUDIT)
def list_token_audit(
    *,
    task_ref: int | str | None = None,
    page_size: int | None = None,
    page_token: str | None = None,
    timeout: float | None = None,
) -> Unary[ListTokenAuditResponse]:
    """One page of the token audit log (of ``task_ref``, or of every task), newest first."""
    req = B.ListTokenAuditRequest(
        task_id=_task_ref(task_ref) if task_ref is not None else "",
        page_size=page_size or 0,
        page_token=page_token or "",
    )
    return whole(LIST_TOKEN_AUDIT, req, timeout)


@_method(LIST_TOKEN_AUDIT, "pages")
def iter_token_audit(
    *, task_ref: int | str | None = None, page_size: int | None = None, timeout: float | None = None
) -> Pages[TokenAuditEntry]:
    """The whole token audit log (of ``task_ref``, or of every task), newest first, page after page."""
    return pages(
        lambda token: list_token_audit(task_ref=task_ref, page_size=page_size, page_token=token, timeout=timeout),
        lambda p: p.entries,
    )


@_method(EXPIRE_REGISTRATIONS)
def expire_registrations(*, timeout: float | None = None) -> Unary[int]:
    """Expire the registrations idle longer than the server's configured age; returns how many."""
    return unary(EXPIRE_REGISTRATIONS, B.ExpireRegistrationsRequest(), timeout, lambda r: r.expired)


# --- audit findings --------------------------------------------------------------------

_SEVERITY = AU.Severity.DESCRIPTOR
_FINDING_STATUS = AU.FindingStatus.DESCRIPTOR
#: What UpdateFinding may change.
FINDING_FIELDS = ("severity", "title", "detail", "subject", "source")


@_method(CREATE_FINDING)
def create_finding(
    category: str,
    title: str,
    *,
    severity: EnumLike | None = None,
    detail: str | None = None,
    subject: str | None = None,
    source: str | None = None,
    fingerprint: str | None = None,
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[CreateFindingResponse]:
    """Report a finding (``category`` is the audit type). The answer's ``created`` is False when
    it was counted on an open finding with the same fingerprint, ``reopened`` True when it
    reopened a resolved one. ``severity``: ``"info"`` .. ``"critical"`` (default medium);
    ``subject``: ``"T42"``, ``"org/repo"``, ``"job:NAME"`` or free text."""
    finding = AU.Finding(
        category=category,
        title=title,
        severity=parse_enum(_SEVERITY, severity, "severity") if severity is not None else 0,  # type: ignore[arg-type]
        detail=detail or "",
        subject=subject or "",
        source=source or "",
        fingerprint=fingerprint or "",
    )
    return whole(CREATE_FINDING, AU.CreateFindingRequest(finding=finding, request_id=request_id or ""), timeout)


@_method(GET_FINDING)
def get_finding(finding_id: int, *, timeout: float | None = None) -> Unary[GetFindingResponse]:
    """One finding (``finding``) with its events, oldest first (``events``)."""
    return whole(GET_FINDING, AU.GetFindingRequest(id=finding_id), timeout)


def _findings_request(
    status: EnumLike | None,
    min_severity: EnumLike | None,
    task_ref: int | str | None,
    category: str | None,
    subject: str | None,
    since: TimestampLike | None,
    page_size: int | None,
    page_token: str | None,
) -> audits_pb2.ListFindingsRequest:
    req = AU.ListFindingsRequest(
        status=parse_enum(_FINDING_STATUS, status, "status") if status is not None else 0,  # type: ignore[arg-type]
        min_severity=parse_enum(_SEVERITY, min_severity, "min_severity") if min_severity is not None else 0,  # type: ignore[arg-type]
        task_id=_task_ref(task_ref) if task_ref is not None else "",
        category=category or "",
        subject=subject or "",
        page_size=page_size or 0,
        page_token=page_token or "",
    )
    if since is not None:
        req.since.CopyFrom(to_timestamp(since))
    return req


@_method(LIST_FINDINGS)
def list_findings(
    *,
    status: EnumLike | None = None,
    min_severity: EnumLike | None = None,
    task_ref: int | str | None = None,
    category: str | None = None,
    subject: str | None = None,
    since: TimestampLike | None = None,
    page_size: int | None = None,
    page_token: str | None = None,
    timeout: float | None = None,
) -> Unary[ListFindingsResponse]:
    """One page of findings, newest first, matching every filter given (``since``: seen at or after)."""
    req = _findings_request(status, min_severity, task_ref, category, subject, since, page_size, page_token)
    return whole(LIST_FINDINGS, req, timeout)


@_method(LIST_FINDINGS, "pages")
def iter_findings(
    *,
    status: EnumLike | None = None,
    min_severity: EnumLike | None = None,
    task_ref: int | str | None = None,
    category: str | None = None,
    subject: str | None = None,
    since: TimestampLike | None = None,
    page_size: int | None = None,
    timeout: float | None = None,
) -> Pages[Finding]:
    """Every finding matching the filters, newest first, page after page."""
    return pages(
        lambda token: whole(
            LIST_FINDINGS,
            _findings_request(status, min_severity, task_ref, category, subject, since, page_size, token),
            timeout,
        ),
        lambda p: p.findings,
    )


@_method(UPDATE_FINDING)
def update_finding(
    finding_id: int,
    *,
    actor: str | None = None,
    timeout: float | None = None,
    **fields: str | int,
) -> Unary[Finding]:
    """Change exactly the fields given (``severity``, ``title``, ``detail``, ``subject``, ``source``):
    ``update_finding(12, severity="high")``. Each change is a finding event."""
    unknown = sorted(set(fields) - set(FINDING_FIELDS))
    if unknown:
        raise TypeError(f"update_finding: unknown field(s) {', '.join(unknown)}; fields: {', '.join(FINDING_FIELDS)}")
    if not fields:
        raise TypeError(f"update_finding: name at least one of {', '.join(FINDING_FIELDS)}")
    finding = AU.Finding(id=finding_id)
    for name, value in fields.items():
        if name == "severity":
            finding.severity = parse_enum(_SEVERITY, value, "severity")  # type: ignore[assignment]
        else:
            setattr(finding, name, str(value))
    req = AU.UpdateFindingRequest(finding=finding, actor=actor or "")
    req.update_mask.paths.extend(fields)
    return unary(UPDATE_FINDING, req, timeout, lambda r: r.finding)


@_method(RESOLVE_FINDING)
def resolve_finding(
    finding_id: int,
    *,
    resolution: str | None = None,
    note: str | None = None,
    status: EnumLike = "resolved",
    actor: str | None = None,
    timeout: float | None = None,
) -> Unary[Finding]:
    """Resolve a finding (``status`` ``"resolved"``, or ``"wont_fix"``) saying how, or reopen it
    (``"open"``). ``actor`` defaults to the caller's identity."""
    req = AU.ResolveFindingRequest(
        id=finding_id,
        status=parse_enum(_FINDING_STATUS, status, "status"),  # type: ignore[arg-type]
        resolution=resolution or "",
        note=note or "",
        actor=actor or "",
    )
    return unary(RESOLVE_FINDING, req, timeout, lambda r: r.finding)


# --- costs ------------------------------------------------------------------------------

_GROUP_BY = CO.CostGroupBy.DESCRIPTOR


def cost_request(
    model: str,
    *,
    task_ref: int | str | None = None,
    provider: str | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
    cost_usd: float | None = None,
    at: TimestampLike | None = None,
    request_id: str | None = None,
) -> costs_pb2.RecordCostRequest:
    """One call's usage as a request (for :meth:`record_costs`' list). ``input_tokens`` excludes
    the cache (as Anthropic reports it); ``reasoning_tokens`` are part of ``output_tokens``."""
    req = CO.RecordCostRequest(
        model=model,
        task_id=_task_ref(task_ref) if task_ref is not None else "",
        provider=provider or "",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read_tokens,
        cache_write_tokens=cache_write_tokens,
        reasoning_tokens=reasoning_tokens,
        request_id=request_id or "",
    )
    if cost_usd is not None:
        req.cost_usd = cost_usd
    if at is not None:
        req.created_at.CopyFrom(to_timestamp(at))
    return req


@_method(RECORD_COST)
def record_cost(
    model: str,
    *,
    task_ref: int | str | None = None,
    provider: str | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
    cost_usd: float | None = None,
    at: TimestampLike | None = None,
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[costs_pb2.CostEvent]:
    """Record one model call; its cost is ``cost_usd`` when given (what the provider billed), else the
    server's price table's. Returns the stored event (``computed_cost_usd``, ``price_id``, ``cost_note``)."""
    req = cost_request(
        model,
        task_ref=task_ref,
        provider=provider,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read_tokens,
        cache_write_tokens=cache_write_tokens,
        reasoning_tokens=reasoning_tokens,
        cost_usd=cost_usd,
        at=at,
        request_id=request_id,
    )
    return unary(RECORD_COST, req, timeout, lambda r: r.cost)


@_method(RECORD_COSTS)
def record_costs(
    items: Sequence[costs_pb2.RecordCostRequest], *, timeout: float | None = None
) -> Unary[costs_pb2.RecordCostsResponse]:
    """Record up to 500 calls (built with :func:`lobwife.client.cost_request`); each is stored or refused
    on its own: ``results[i].error`` says why one was refused, the others are stored."""
    return whole(RECORD_COSTS, CO.RecordCostsRequest(items=list(items)), timeout)


def _costs_request(
    task_ref: int | str | None,
    model: str | None,
    provider: str | None,
    task_type: str | None,
    start: TimestampLike | None,
    end: TimestampLike | None,
    page_size: int | None,
    page_token: str | None,
) -> costs_pb2.ListCostsRequest:
    req = CO.ListCostsRequest(
        task_id=_task_ref(task_ref) if task_ref is not None else "",
        model=model or "",
        provider=provider or "",
        task_type=task_type or "",
        page_size=page_size or 0,
        page_token=page_token or "",
    )
    if start is not None:
        req.start_time.CopyFrom(to_timestamp(start))
    if end is not None:
        req.end_time.CopyFrom(to_timestamp(end))
    return req


@_method(LIST_COSTS)
def list_costs(
    *,
    task_ref: int | str | None = None,
    model: str | None = None,
    provider: str | None = None,
    task_type: str | None = None,
    start: TimestampLike | None = None,
    end: TimestampLike | None = None,
    page_size: int | None = None,
    page_token: str | None = None,
    timeout: float | None = None,
) -> Unary[costs_pb2.ListCostsResponse]:
    """One page of cost events, newest first, in [start, end) and matching the filters."""
    req = _costs_request(task_ref, model, provider, task_type, start, end, page_size, page_token)
    return whole(LIST_COSTS, req, timeout)


@_method(LIST_COSTS, "pages")
def iter_costs(
    *,
    task_ref: int | str | None = None,
    model: str | None = None,
    provider: str | None = None,
    task_type: str | None = None,
    start: TimestampLike | None = None,
    end: TimestampLike | None = None,
    page_size: int | None = None,
    timeout: float | None = None,
) -> Pages[costs_pb2.CostEvent]:
    """Every cost event matching the filters, newest first, page after page."""
    return pages(
        lambda token: whole(
            LIST_COSTS, _costs_request(task_ref, model, provider, task_type, start, end, page_size, token), timeout
        ),
        lambda p: p.costs,
    )


@_method(SUMMARIZE_COSTS)
def summarize_costs(
    group_by: EnumLike,
    *,
    task_ref: int | str | None = None,
    model: str | None = None,
    start: TimestampLike | None = None,
    end: TimestampLike | None = None,
    timeout: float | None = None,
) -> Unary[costs_pb2.SummarizeCostsResponse]:
    """Totals by ``group_by`` (``"model"``, ``"task"``, ``"type"``, ``"day"``, ``"hour"``) over [start, end):
    ``rows`` (most expensive first; by time for day and hour) and their ``total``."""
    req = CO.SummarizeCostsRequest(
        group_by=parse_enum(_GROUP_BY, group_by, "group_by"),  # type: ignore[arg-type]
        task_id=_task_ref(task_ref) if task_ref is not None else "",
        model=model or "",
    )
    if start is not None:
        req.start_time.CopyFrom(to_timestamp(start))
    if end is not None:
        req.end_time.CopyFrom(to_timestamp(end))
    return whole(SUMMARIZE_COSTS, req, timeout)


@_method(REPRICE_COSTS)
def reprice_costs(
    since: TimestampLike, *, until: TimestampLike | None = None, dry_run: bool = False, timeout: float | None = None
) -> Unary[costs_pb2.RepriceCostsResponse]:
    """Compute again, with the server's price table as it is now, the costs of the calls in [since, until)
    that carry no cost of the caller's; ``dry_run`` only counts. Admin only."""
    req = CO.RepriceCostsRequest(dry_run=dry_run)
    req.since.CopyFrom(to_timestamp(since))
    if until is not None:
        req.until.CopyFrom(to_timestamp(until))
    return whole(REPRICE_COSTS, req, timeout)


#: Every RPC the table calls, by full name.
RPCS: dict[str, Rpc[Any, Any]] = {m.rpc.full_name: m.rpc for m in METHODS.values()}
