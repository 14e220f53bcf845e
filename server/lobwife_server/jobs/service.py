"""JobService: the cron jobs, their runs, and the legacy status document."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc

from lobwife.v1 import broker_pb2, jobs_pb2
from lobwife_server.api.fields import UpdateMask
from lobwife_server.api.rpc import CallContext
from lobwife_server.core.errors import ApiError, failed_precondition, invalid_argument, not_found, unavailable
from lobwife_server.core.timeutil import set_ts
from lobwife_server.core.validation import PageTokens, request_page_size
from lobwife_server.jobs import definitions as job_defs
from lobwife_server.jobs import schedules
from lobwife_server.jobs.run_feed import RunSubscription
from lobwife_server.jobs.scheduler import STATUSES, TRIGGERS, JobView, us
from lobwife_server.storage import job_store

_STATUS_ENUM = STATUSES
_TRIGGER_ENUM = TRIGGERS
_CONCURRENCY = {v: k for k, v in job_defs.CONCURRENCY.items()}
_CATCH_UP = {v: k for k, v in job_defs.CATCH_UP.items()}
_SOURCE = {v: k for k, v in job_defs.SOURCES.items()}
NEXT_RUNS_DEFAULT, NEXT_RUNS_MAX = 5, 100
# Fields of a Job that UpdateJob may change (the definition; the rest is state).
_DEFINITION_FIELDS = frozenset(
    {
        "description",
        "command",
        "script",
        "working_dir",
        "env",
        "cron",
        "interval",
        "run_at",
        "time_zone",
        "enabled",
        "concurrency",
        "timeout",
        "retry",
        "start_jitter",
        "catch_up",
        "catch_up_window",
        "run_on_startup",
    }
)
#: UpdateJob's mask: paths of a Job; `name` (IDENTIFIER) is passed over, OUTPUT_ONLY state refused (api.fields).
_UPDATE_MASK = UpdateMask(
    jobs_pb2.Job.DESCRIPTOR, _DEFINITION_FIELDS, unknown="{path!r} is not a field of a job's definition"
)


def run_message(r: job_store.RunRow) -> jobs_pb2.JobRun:
    m = jobs_pb2.JobRun(
        run_id=r.id,
        job_name=r.job_name,
        trigger=_TRIGGER_ENUM.get(r.trigger, jobs_pb2.RUN_TRIGGER_UNSPECIFIED),
        status=_STATUS_ENUM.get(r.status, jobs_pb2.RUN_STATUS_UNSPECIFIED),
        attempt=r.attempt,
        output=r.output or "",
        output_truncated=r.output_truncated,
        reason=r.reason or "",
    )
    if r.scheduled_at is not None:
        set_ts(m.scheduled_at, r.scheduled_at)
    if r.started_at is not None:
        set_ts(m.started_at, r.started_at)
    if r.finished_at is not None:
        set_ts(m.finished_at, r.finished_at)
    if r.duration is not None:
        m.duration = r.duration
    if r.exit_code is not None:
        m.exit_code = r.exit_code
    return m


class JobControl(Protocol):
    """What JobService needs of the scheduler (jobs.scheduler.Scheduler is the one implementation)."""

    def job_names(self) -> list[str]: ...
    def view(self, name: str) -> JobView | None: ...
    async def job_states(self) -> dict[str, tuple[Any, ...]]: ...
    async def get_run(self, run_id: int) -> job_store.RunRow | None: ...
    async def list_runs(self, name: str, before_id: int | None, limit: int) -> list[job_store.RunRow]: ...
    def watch(self, name: str | None, include_output: bool) -> RunSubscription: ...
    async def trigger(self, name: str, trigger: str = "manual") -> int: ...
    async def set_enabled(self, name: str, enabled: bool) -> None: ...
    async def put_job(self, definition: jobs_pb2.Job, source: str) -> None: ...
    async def delete_job(self, name: str) -> None: ...


class SyncCycle(Protocol):
    """What GetSyncStatus shows of the last vault sync cycle (vault/sync.py's SyncResult has it)."""

    @property
    def written(self) -> Sequence[object]: ...
    @property
    def moved(self) -> Sequence[object]: ...
    @property
    def removed(self) -> Sequence[object]: ...
    @property
    def skipped(self) -> Sequence[object]: ...
    @property
    def commit(self) -> str | None: ...
    @property
    def pushed(self) -> bool: ...
    #: Why it failed, already free of secrets (the vault replaces a token with `***`); None: it succeeded.
    @property
    def error(self) -> str | None: ...
    @property
    def duration_s(self) -> float: ...


class SyncControl(Protocol):
    """What GetSyncStatus and TriggerSync ask of the vault sync (vault/runner.py implements it)."""

    @property
    def running(self) -> bool: ...

    #: Epoch seconds of the last cycle that succeeded; None before one.
    last_sync: float | None
    #: Epoch seconds the last cycle ended, whether it succeeded or not; None before one.
    last_attempt: float | None
    last_full: bool

    @property
    def last(self) -> SyncCycle | None: ...

    @property
    def full_pending(self) -> bool: ...

    def request(self, full: bool = False) -> None:
        """A cycle as soon as possible; ``full``: a full rebuild."""
        ...


class JobService:
    """JobService RPCs over the scheduler: definitions, triggers, pause and resume, run history, live runs,
    legacy summaries."""

    def __init__(
        self,
        scheduler: JobControl,
        tokens: PageTokens,
        started: float,
        broker: Callable[[], Awaitable[broker_pb2.BrokerSummary]] | None = None,
        sync: SyncControl | None = None,
    ) -> None:
        self.s = scheduler
        #: The vault sync; None: not configured (GetSyncStatus says disabled, TriggerSync is 503).
        self.sync = sync
        self.tokens = tokens
        self.started = started
        #: The legacy broker summary of GetStatus (SystemService.broker_summary); None: zeros.
        self.broker = broker

    def _job(self, name: str) -> JobView:
        job = self.s.view(name)
        if job is None:
            raise not_found(f"Unknown job: {name[:100]}")
        return job

    async def _view(self, names: list[str], preview: int = 0, with_output: bool = False) -> list[jobs_pb2.Job]:
        state = await self.s.job_states()
        out = []
        for name in names:
            job = self.s.view(name)
            if job is None:  # removed since the names were read (a jobs-file reload)
                continue
            m = jobs_pb2.Job()
            m.CopyFrom(job.definition)
            m.enabled = job.active
            m.schedule = schedules.describe(job.schedule)
            _effective(m, job.jdef)
            m.source = _SOURCE.get(job.jdef.source, 0)  # type: ignore[assignment]
            m.running = job.running
            if not m.script:
                m.script = job.jdef.script
            if job.next_fire_at is not None:
                set_ts(m.next_run, job.next_fire_at)
            st = state.get(name)
            if st is not None:
                last_run, last_status, last_duration, last_output, run_count, fail_count = st
                if last_run is not None:
                    set_ts(m.last_run, last_run)
                m.last_status = _STATUS_ENUM.get(last_status or "", jobs_pb2.RUN_STATUS_UNSPECIFIED)
                if last_duration is not None:
                    m.last_duration = last_duration
                m.run_count, m.fail_count = run_count, fail_count
                if with_output and last_output is not None:
                    m.last_output = last_output
            if preview and job.active:
                for slot in schedules.next_slots(job.schedule, datetime.now(UTC), preview):
                    set_ts(m.next_runs.add(), us(slot.at))
            out.append(m)
        return out

    async def ListJobs(self, req: jobs_pb2.ListJobsRequest, ctx: CallContext) -> jobs_pb2.ListJobsResponse:
        size = request_page_size(req)
        start = self.tokens.parse(req.page_token, "jobs", []) or 0
        names = self.s.job_names()
        page = names[start : start + size]
        resp = jobs_pb2.ListJobsResponse(jobs=await self._view(page))
        if start + size < len(names):
            resp.next_page_token = self.tokens.make("jobs", [], start + size)
        return resp

    async def GetJob(self, req: jobs_pb2.GetJobRequest, ctx: CallContext) -> jobs_pb2.GetJobResponse:
        self._job(req.name)
        if not 0 <= req.next_runs_count <= NEXT_RUNS_MAX:
            raise invalid_argument("next_runs_count", f"must be between 0 and {NEXT_RUNS_MAX}")
        preview = req.next_runs_count or NEXT_RUNS_DEFAULT
        (job,) = await self._view([req.name], preview=preview, with_output=True)
        return jobs_pb2.GetJobResponse(job=job)

    async def CreateJob(self, req: jobs_pb2.CreateJobRequest, ctx: CallContext) -> jobs_pb2.CreateJobResponse:
        # `job` is REQUIRED: the dispatcher has answered a request without it.
        definition = _definition_only(req.job)
        job_defs.validate(definition)
        if self.s.view(definition.name) is not None:
            raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"Job {definition.name} already exists")
        await self.s.put_job(definition, "api")
        (job,) = await self._view([definition.name], preview=NEXT_RUNS_DEFAULT)
        return jobs_pb2.CreateJobResponse(job=job)

    async def UpdateJob(self, req: jobs_pb2.UpdateJobRequest, ctx: CallContext) -> jobs_pb2.UpdateJobResponse:
        name = req.job.name
        current = self._job(name)
        if current.jdef.source != "api":
            raise failed_precondition(
                f"Job {name} is owned by the {'jobs file' if current.jdef.source == 'file' else 'server'};"
                " change it there, or pause it with disable",
                reason="JOB_NOT_API_OWNED",
            )
        masked = req.HasField("update_mask") and req.update_mask.paths
        # Without a mask, the fields that are set: output-only state a client echoed back is refused too.
        paths = _UPDATE_MASK.paths(req.update_mask if masked else [f.name for f, _ in req.job.ListFields()])
        merged = jobs_pb2.Job()
        merged.CopyFrom(current.definition)
        for path in paths:
            _copy_field(merged, req.job, path)
        job_defs.validate(merged)
        await self.s.put_job(merged, "api")
        (job,) = await self._view([name], preview=NEXT_RUNS_DEFAULT)
        return jobs_pb2.UpdateJobResponse(job=job)

    async def DeleteJob(self, req: jobs_pb2.DeleteJobRequest, ctx: CallContext) -> jobs_pb2.DeleteJobResponse:
        job = self._job(req.name)
        if job.jdef.source != "api":
            raise failed_precondition(f"Job {req.name} is not API-owned; remove it from the jobs file instead")
        await self.s.delete_job(req.name)
        return jobs_pb2.DeleteJobResponse(message=f"Job {req.name} deleted")

    async def TriggerJob(self, req: jobs_pb2.TriggerJobRequest, ctx: CallContext) -> jobs_pb2.TriggerJobResponse:
        self._job(req.name)
        run_id = await self.s.trigger(req.name)
        run = await self.s.get_run(run_id)
        resp = jobs_pb2.TriggerJobResponse(message=f"Job {req.name} triggered")
        if run is not None:
            resp.run.CopyFrom(run_message(run))
        return resp

    async def EnableJob(self, req: jobs_pb2.EnableJobRequest, ctx: CallContext) -> jobs_pb2.EnableJobResponse:
        self._job(req.name)
        await self.s.set_enabled(req.name, True)
        (job,) = await self._view([req.name])
        return jobs_pb2.EnableJobResponse(message=f"Job {req.name} enabled", job=job)

    async def DisableJob(self, req: jobs_pb2.DisableJobRequest, ctx: CallContext) -> jobs_pb2.DisableJobResponse:
        self._job(req.name)
        await self.s.set_enabled(req.name, False)
        (job,) = await self._view([req.name])
        return jobs_pb2.DisableJobResponse(message=f"Job {req.name} disabled", job=job)

    async def ListJobRuns(self, req: jobs_pb2.ListJobRunsRequest, ctx: CallContext) -> jobs_pb2.ListJobRunsResponse:
        size = request_page_size(req)
        before = self.tokens.parse(req.page_token, "runs", [req.name])
        runs = await self.s.list_runs(req.name, before, size + 1)
        if not runs and self.s.view(req.name) is None and before is None:
            raise not_found(f"Unknown job: {req.name[:100]}")
        resp = jobs_pb2.ListJobRunsResponse(runs=[run_message(r) for r in runs[:size]])
        resp.next_page_token = self.tokens.after("runs", [req.name], runs, size)
        return resp

    async def GetJobRun(self, req: jobs_pb2.GetJobRunRequest, ctx: CallContext) -> jobs_pb2.GetJobRunResponse:
        run = await self.s.get_run(req.run_id)
        if run is None or run.job_name != req.name:
            raise not_found(f"Run {req.run_id} of job {req.name[:100]} not found")
        return jobs_pb2.GetJobRunResponse(run=run_message(run))

    async def WatchRuns(
        self, req: jobs_pb2.WatchRunsRequest, ctx: CallContext
    ) -> AsyncIterator[jobs_pb2.WatchRunsResponse]:
        if req.name:
            self._job(req.name)
        sub = self.s.watch(req.name or None, req.include_output)
        try:
            while True:
                update = await sub.get()
                if update is None:
                    return
                yield jobs_pb2.WatchRunsResponse(run=update.run, output_chunk=update.output_chunk)
        finally:
            sub.close()

    async def GetStatus(self, req: jobs_pb2.GetStatusRequest, ctx: CallContext) -> jobs_pb2.GetStatusResponse:
        resp = jobs_pb2.GetStatusResponse(
            status="ok",
            uptime=round(time.monotonic() - self.started, 3),
            broker=await self.broker() if self.broker is not None else broker_pb2.BrokerSummary(enabled=False),
        )
        for job in await self._view(self.s.job_names()):
            s = resp.jobs[job.name]
            s.description, s.schedule, s.enabled, s.running = job.description, job.schedule, job.enabled, job.running
            s.last_status, s.run_count, s.fail_count = job.last_status, job.run_count, job.fail_count
            if job.HasField("last_run"):
                s.last_run.CopyFrom(job.last_run)
            if job.HasField("last_duration"):
                s.last_duration = job.last_duration
            if job.HasField("next_run"):
                s.next_run.CopyFrom(job.next_run)
        return resp

    async def GetSyncStatus(
        self, req: jobs_pb2.GetSyncStatusRequest, ctx: CallContext
    ) -> jobs_pb2.GetSyncStatusResponse:
        sync = self.sync
        if sync is None:
            return jobs_pb2.GetSyncStatusResponse(enabled=False)
        resp = jobs_pb2.GetSyncStatusResponse(enabled=True, running=sync.running, full_pending=sync.full_pending)
        if sync.last_sync is not None:
            resp.last_sync.FromNanoseconds(int(sync.last_sync * 1e9))
        last = sync.last
        if last is not None:
            if sync.last_attempt is not None:
                resp.last_attempt.FromNanoseconds(int(sync.last_attempt * 1e9))
            resp.last_error = last.error or ""
            resp.last_commit = last.commit or ""
            resp.last_pushed = last.pushed
            resp.last_written = len(last.written)
            resp.last_moved = len(last.moved)
            resp.last_removed = len(last.removed)
            resp.last_skipped = len(last.skipped)
            resp.last_full = sync.last_full
            resp.last_duration.FromNanoseconds(int(last.duration_s * 1e9))
        return resp

    async def TriggerSync(self, req: jobs_pb2.TriggerSyncRequest, ctx: CallContext) -> jobs_pb2.TriggerSyncResponse:
        if self.sync is None:
            raise unavailable("vault sync is not enabled (set VAULT_PATH or --vault to a git clone of the vault)")
        self.sync.request(full=req.full)
        return jobs_pb2.TriggerSyncResponse(status="full sync requested" if req.full else "sync requested")


def _effective(m: jobs_pb2.Job, d: job_defs.JobDef) -> None:
    """Show the values in force, defaults included (the legacy view has `concurrency` always)."""
    m.concurrency = _CONCURRENCY[d.concurrency]  # type: ignore[assignment]
    m.catch_up = _CATCH_UP[d.catch_up]  # type: ignore[assignment]
    m.time_zone = d.time_zone
    m.timeout.FromNanoseconds(round(d.timeout * 1e9))
    m.catch_up_window.FromNanoseconds(round(d.catch_up_window * 1e9))
    m.start_jitter.FromNanoseconds(round(d.start_jitter * 1e9))
    r = m.retry
    r.max_retries, r.multiplier, r.jitter = d.retry.max_retries, d.retry.multiplier, d.retry.jitter
    r.initial_backoff.FromNanoseconds(round(d.retry.initial_backoff * 1e9))
    r.max_backoff.FromNanoseconds(round(d.retry.max_backoff * 1e9))


def _copy_field(dst: Any, src: Any, name: str) -> None:
    """Make field ``name`` of ``dst`` what it is in ``src`` (unset there: cleared here)."""
    field: Any = dst.DESCRIPTOR.fields_by_name[name]
    dst.ClearField(name)
    if field.is_repeated:
        target = getattr(dst, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target.update(getattr(src, name))
        else:
            target.extend(getattr(src, name))
    elif field.message_type is not None or field.has_presence:
        if src.HasField(name):
            if field.message_type is not None:
                getattr(dst, name).CopyFrom(getattr(src, name))
            else:
                setattr(dst, name, getattr(src, name))
    else:
        setattr(dst, name, getattr(src, name))


def _definition_only(job: jobs_pb2.Job) -> jobs_pb2.Job:
    """The definition fields of a Job (output-only state a client sent is dropped)."""
    out = jobs_pb2.Job(name=job.name)
    for field, _ in job.ListFields():
        if field.name in _DEFINITION_FIELDS:
            _copy_field(out, job, field.name)
    return out
