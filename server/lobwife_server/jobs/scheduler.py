"""The cron scheduler: APScheduler fires, lobwife makes it durable.

APScheduler (in-process, on the event loop) is the timer: each enabled job has
one APScheduler job armed with a DateTrigger at its next slot. The slot times
come from ``schedules`` (cron with zones and a DST policy, intervals, one-offs).
Durability is ours:

- ``jobs.next_fire_at`` is the next slot. When the timer fires, one transaction
  records the slot's run (or why it did not run) and advances ``next_fire_at``.
  A restart therefore never runs a slot twice (the partial unique index on
  ``job_runs(job_name, scheduled_at, attempt)`` enforces it) and never loses one
  without a record.
- On start, slots missed while the server was down are found by comparing
  ``next_fire_at`` with now, and handled by the job's catch-up policy: ``skip``
  (each recorded ``skipped``, reason "missed"), ``once`` (the newest slot inside
  the window runs as ``catch-up``, the others are recorded as coalesced into it),
  ``all`` (every slot inside the window runs, one after another). Slots older
  than the window are recorded as missed. At most MAX_MISSED_RECORDS are
  recorded one by one; the rest are summed up in one record.
- Runs left ``running`` by a dead server are resolved by ``runner.resolve_stale_run``
  (always ``abandoned``, with the reason); ``pending`` ones never started are
  ``abandoned`` too, except retries waiting for their time, which are re-armed.
- Enabling, editing or creating a job arms it at its next slot strictly after
  now: it never fires a surprise run for slots that passed while it was off.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from lobwife.v1 import jobs_pb2
from lobwife_server.core.errors import ApiError, failed_precondition, not_found
from lobwife_server.core.timeutil import from_us, now_us, set_ts
from lobwife_server.jobs import definitions as job_defs
from lobwife_server.jobs import runner, schedules
from lobwife_server.jobs.run_feed import RunFeed, RunSubscription, RunUpdate
from lobwife_server.storage import job_store
from lobwife_server.storage.database import WriteContext
from lobwife_server.storage.interfaces import Conn, JobStore, Storage

log = logging.getLogger("lobwife.scheduler")

MAX_MISSED_RECORDS = 1000
# Job runs at once. Cron makes herds (many jobs at :00); the fleet's scripts mostly wait on the
# network, so 128 lets a herd start together while bounding processes and fds (2 per run).
DEFAULT_MAX_CONCURRENT_RUNS = 128
#: Backoff (seconds) between attempts to record slots the database refused at their time.
FLUSH_RETRY_FIRST = 0.5
FLUSH_RETRY_MAX = 10.0
#: Backoff (seconds) between attempts to record a run's end the database refused.
FINISH_RETRY_FIRST = 0.5
FINISH_RETRY_MAX = 10.0
#: A run ending so is logged at info; any other end (failed, timeout, error) is a warning.
_QUIET_ENDS = frozenset({"success", "abandoned"})

#: A built-in job: an in-process coroutine returning the run's output text.
Builtin = Callable[[], Awaitable[str]]


def us(dt: datetime) -> int:
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


@dataclass
class _Job:
    definition: jobs_pb2.Job
    jdef: job_defs.JobDef
    schedule: schedules.Schedule
    paused: bool
    next_fire_at: int | None
    #: Slots that fired while their record could not be written (a full disk), oldest first, with
    #: the error; ``jobs.next_fire_at`` still holds the first of them until they are recorded.
    unrecorded: list[tuple[int, str]] = field(default_factory=list)
    #: Serializes the writes that advance ``next_fire_at`` (a firing, a flush of ``unrecorded``).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    flushing: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return self.jdef.enabled and not self.paused


@dataclass(frozen=True)
class JobView:
    """What the API may know of a loaded job (Scheduler.view): definition, schedule in force, state."""

    name: str
    definition: jobs_pb2.Job
    jdef: job_defs.JobDef
    schedule: schedules.Schedule
    #: Enabled in its definition and not paused.
    active: bool
    next_fire_at: int | None
    #: A run of it is going.
    running: bool


@dataclass
class _CatchUp:
    """What start-up's catch-up transaction decided: runs to start, and each job's next slot."""

    runs: list[tuple[str, int, int]] = field(default_factory=list)  # (job, run id, slot)
    next_fire: dict[str, int | None] = field(default_factory=dict)


class Scheduler:
    """The cron scheduler: APScheduler as the timer, SQLite as the truth (see the module docstring for the
    guarantees)."""

    def __init__(
        self,
        db: Storage,
        *,
        url: str,
        store: JobStore = job_store,
        builtins: dict[str, tuple[jobs_pb2.Job, Builtin]] | None = None,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT_RUNS,
        output_cap: int = runner.DEFAULT_OUTPUT_CAP,
        kill_grace: float = runner.DEFAULT_KILL_GRACE,
    ) -> None:
        self.db = db
        self.store = store
        #: Mints a run's $LOBWIFE_TOKEN (job name, lifetime in seconds); None while auth is off.
        self.run_token: Callable[[str, float], str] | None = None
        self.url = url
        self.builtins = builtins or {}
        self.output_cap = output_cap
        self.kill_grace = kill_grace
        self.jobs: dict[str, _Job] = {}
        self.running: dict[str, dict[int, asyncio.Task[None]]] = {}
        self.sem = asyncio.Semaphore(max_concurrent)
        self.feed = RunFeed()
        self.boot = runner.boot_id()
        self._aps = AsyncIOScheduler(timezone=UTC)
        self._tasks: set[asyncio.Task[None]] = set()
        # Timer callbacks between their slot's record and their run's start: stop() waits for them,
        # or a slot recorded ``pending`` as the server stops would never be started nor ended.
        self._firing: set[asyncio.Task[Any]] = set()
        self._late: set[asyncio.Task[None]] = set()  # runs spawned after stop() began
        self._next_notes: dict[str, tuple[int, str | None]] = {}  # name -> (next slot, its DST note)
        self._load_errors: dict[str, str] = {}  # jobs whose stored definition did not load, and why
        self._started_at: dict[int, int] = {}  # run id -> when it went running, for WatchRuns messages
        self._stopping = False

    # -- start-up --------------------------------------------------------------

    async def start(self, file_jobs: list[tuple[jobs_pb2.Job, job_defs.JobDef]] | None) -> None:
        """Reconcile definitions, resolve stale runs, catch up, arm timers, start run-on-startup jobs.

        ``file_jobs`` None means the jobs file could not be used: the file-owned
        jobs keep their last good definitions from the database.

        Only the database itself failing stops the start (the caller reports it and exits): a
        problem with one job or one run is logged, recorded on that job, and the others go on,
        so that a restart can never turn into a crash loop.
        """
        now = now_us()

        def reconcile(conn: Conn, w: WriteContext) -> None:
            self._reconcile(conn, file_jobs, now)

        await self.db.write(reconcile)
        for row in await self.db.read(self.store.list_jobs):
            try:
                self._load(row)
            except Exception as e:  # e.g. a definition stored by an older version that no longer validates
                log.error("job %s not scheduled: its stored definition is not valid: %s", row.name, e)
                self._load_errors[row.name] = f"not scheduled: its stored definition is not valid: {e}"
        await self._recover()
        started = await self.db.write(lambda c, w: self._catch_up(c, now_us()))
        for name, nxt in started.next_fire.items():
            self.jobs[name].next_fire_at = nxt
        for name, job in self.jobs.items():
            if job.active and job.next_fire_at is not None:
                self._arm(name, job.next_fire_at)
        # Started after arming: timers added before start() are queued and taken in one pass
        # at start, where each add_job after it queues a scheduler wake-up of its own.
        self._aps.start()
        for name, run_id, slot_us in started.runs:
            self._spawn(name, run_id, "catch-up", slot_us, 1)
        for name, job in self.jobs.items():
            if job.active and job.jdef.run_on_startup:
                try:
                    await self._start_run(name, "startup", None, refuse=False)
                except Exception as e:
                    log.error("run-on-startup of job %s not started: %s", name, e)

    def _reconcile(self, conn: Conn, file_jobs: list[tuple[jobs_pb2.Job, job_defs.JobDef]] | None, now: int) -> None:
        existing = {r.name: r for r in self.store.list_jobs(conn)}
        wanted: dict[str, tuple[jobs_pb2.Job, str]] = {n: (j, "builtin") for n, (j, _) in self.builtins.items()}
        if file_jobs is not None:
            wanted.update({d.name: (j, "file") for j, d in file_jobs})
        for name, (job, source) in wanted.items():
            old = existing.get(name)
            if old is not None and old.source == "api" and source == "file":
                log.warning("jobs file defines %s, which was created through the API; the file now owns it", name)
            if old is None or old.definition != job or old.source != source:
                self.store.upsert_job(conn, job, source, now)
                if old is not None and old.definition != job:
                    # Changed schedule: the next slot is recomputed from now (no surprise run).
                    self.store.set_next_fire(conn, name, None)
                log.info("job %s %s (%s)", name, "added" if old is None else "changed", source)
        for name, old in existing.items():
            gone_from_file = old.source == "file" and file_jobs is not None and name not in wanted
            gone_builtin = old.source == "builtin" and name not in wanted
            if gone_from_file or gone_builtin:
                self.store.delete_job(conn, name)
                log.info("job %s removed (no longer in the %s)", name, "jobs file" if gone_from_file else "build")

    def _load(self, row: job_store.JobRow) -> None:
        jdef = job_defs.validate(row.definition, source=row.source)
        self.jobs[row.name] = _Job(
            row.definition, jdef, _schedule_of(jdef, row.definition), row.paused, row.next_fire_at
        )

    async def _recover(self) -> None:
        for run in await self.db.read(self.store.open_runs):
            job = self.jobs.get(run.job_name)
            if run.status == "pending" and run.trigger == "retry" and job is not None and job.active:
                self._arm_retry(run.job_name, run.id, run.not_before or now_us())
                continue
            try:
                if run.status == "running":
                    reason = await runner.resolve_stale_run(run.boot_id or "", run.pgid, grace=self.kill_grace)
                else:
                    # runner.run holds a started child before its command until the start is
                    # recorded, so a pending run's process (if one was started) never ran it.
                    reason = runner.NEVER_STARTED
            except Exception as e:  # one bad record must not stop the start
                reason = f"abandoned: could not check its processes on restart: {e}"
            await self.db.write(functools.partial(self._abandon, run=run, reason=reason))
            log.warning("run %d of %s abandoned: %s", run.id, run.job_name, reason)

    def _catch_up(self, conn: Conn, now: int) -> _CatchUp:
        """Record missed slots by policy; insert the catch-up runs to start; set every next slot.

        One transaction for every job (each in a savepoint of its own), so no slot between a
        job's stored ``next_fire_at`` and now is left without a record, whenever the server
        dies: the catch-up runs are inserted ``pending`` here, beside the records of the slots
        they cover, and a run that never starts is found and marked on the next start. A job
        whose catch-up fails gets an ``error`` record and its next slot; the others go on.
        """
        out = _CatchUp()
        now_dt = from_us(now)
        for name, why in self._load_errors.items():
            self.store.insert_run(conn, name, "catch-up", "error", scheduled_at=None, finished_at=now, reason=why)
        for name, job in self.jobs.items():
            try:
                with self.store.savepoint(conn, "catch_up_job"):
                    runs, nxt = self._catch_up_job(conn, name, job, now, now_dt)
            except Exception as e:
                log.error("catch-up of job %s failed: %s", name, e)
                runs, nxt = [], self._after_failed_catch_up(conn, name, job, now, now_dt, e)
            out.runs += runs
            out.next_fire[name] = nxt
        return out

    def _catch_up_job(
        self, conn: Conn, name: str, job: _Job, now: int, now_dt: datetime
    ) -> tuple[list[tuple[str, int, int]], int | None]:
        if not job.active:
            if job.next_fire_at is not None:
                self.store.set_next_fire(conn, name, None)
            return [], None
        runs: list[tuple[str, int, int]] = []
        if job.next_fire_at is not None and job.next_fire_at <= now:
            first = from_us(job.next_fire_at)
            earliest = schedules.slots_between(job.schedule, first, now_dt, MAX_MISSED_RECORDS)
            missed = [job.next_fire_at] + [us(s.at) for s in earliest.slots]
            truncated = earliest.truncated
            if truncated:
                # A long outage: the first MAX_MISSED_RECORDS slots are recorded one by one,
                # and the slots inside the catch-up window (the ones that may run) are added.
                recent_start = max(first, now_dt - timedelta(seconds=job.jdef.catch_up_window))
                recent = schedules.slots_between(job.schedule, recent_start, now_dt, MAX_MISSED_RECORDS)
                missed = sorted(set(missed) | {us(s.at) for s in recent.slots})
            runs = self._apply_catch_up(conn, name, job.jdef, missed, truncated, now)
        nxt = schedules.next_slot(job.schedule, now_dt)
        nxt_us = us(nxt.at) if nxt is not None else None
        self.store.set_next_fire(conn, name, nxt_us)
        return runs, nxt_us

    def _after_failed_catch_up(
        self, conn: Conn, name: str, job: _Job, now: int, now_dt: datetime, error: Exception
    ) -> int | None:
        since = f" since {_iso(job.next_fire_at)}" if job.next_fire_at is not None and job.next_fire_at <= now else ""
        self.store.insert_run(
            conn,
            name,
            "catch-up",
            "error",
            scheduled_at=None,
            finished_at=now,
            reason=f"catch-up failed: {error}; the slots{since} missed while lobwife was down were not handled",
        )
        try:
            nxt = schedules.next_slot(job.schedule, now_dt) if job.active else None
        except Exception:
            nxt = None
        nxt_us = us(nxt.at) if nxt is not None else None
        self.store.set_next_fire(conn, name, nxt_us)
        return nxt_us

    def _apply_catch_up(
        self, conn: Conn, name: str, jdef: job_defs.JobDef, missed: list[int], truncated: bool, now: int
    ) -> list[tuple[str, int, int]]:
        window_start = now - int(jdef.catch_up_window * 1_000_000)
        inside = [s for s in missed if s >= window_start]
        if jdef.catch_up == "all" and jdef.concurrency == "allow":
            run = inside
        elif jdef.catch_up in ("all", "once"):
            # Under forbid or replace the runs of "all" would overlap one another (each would be
            # refused, or would end the one before it): the newest slot runs, and the others are
            # recorded as not run because of the overlap.
            run = inside[-1:]
        else:
            run = []
        for slot in missed:
            if slot in run or self.store.slot_recorded(conn, name, slot):
                continue
            if slot < window_start:
                why = "missed while lobwife was down; older than the catch-up window"
            elif jdef.catch_up == "once":
                why = f"missed while lobwife was down; coalesced into the catch-up run of {_iso(run[-1])}"
            elif jdef.catch_up == "all":
                why = (
                    f"missed while lobwife was down; not run: it would overlap the catch-up run of"
                    f" {_iso(run[-1])} (concurrency: {jdef.concurrency})"
                )
            else:
                why = "missed while lobwife was down (catch-up policy: skip)"
            self.store.insert_run(conn, name, "catch-up", "skipped", scheduled_at=slot, reason=why, finished_at=now)
        if truncated:
            self.store.insert_run(
                conn,
                name,
                "catch-up",
                "skipped",
                scheduled_at=None,
                finished_at=now,
                reason=f"more than {MAX_MISSED_RECORDS} slots missed while lobwife was down, between"
                f" {_iso(missed[0])} and {_iso(now)}; not listed one by one",
            )
        return [
            (name, self.store.insert_run(conn, name, "catch-up", "pending", scheduled_at=s), s)
            for s in run
            if not self.store.slot_recorded(conn, name, s)
        ]

    # -- firing ------------------------------------------------------------------

    def _arm(self, name: str, at: int) -> None:
        self._aps.add_job(
            self._on_timer,
            DateTrigger(run_date=from_us(at)),
            args=[name, at],
            id=name,
            replace_existing=True,
            misfire_grace_time=None,
        )

    def _disarm(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self._aps.remove_job(name)

    def _arm_retry(self, name: str, run_id: int, at: int) -> None:
        self._aps.add_job(
            self._on_retry,
            DateTrigger(run_date=from_us(max(at, now_us()))),
            args=[name, run_id],
            id=f"{name}#retry-{run_id}",
            replace_existing=True,
            misfire_grace_time=None,
        )

    async def _on_timer(self, name: str, slot: int) -> None:
        me = asyncio.current_task()
        if me is None:
            return await self._fire(name, slot)
        self._firing.add(me)
        try:
            await self._fire(name, slot)
        finally:
            self._firing.discard(me)

    async def _fire(self, name: str, slot: int) -> None:
        job = self.jobs.get(name)
        if job is None or self._stopping:
            return
        nxt = schedules.next_slot(job.schedule, from_us(slot))
        nxt_us = us(nxt.at) if nxt is not None else None
        # A daylight-saving note (a shifted or once-only local time) goes on the run's record. The
        # previous firing computed this slot already (as its next one): reuse its note.
        known = self._next_notes.pop(name, None)
        if known is not None and known[0] == slot:
            note = known[1]
        else:
            this = schedules.next_slot(job.schedule, from_us(slot - 1))
            note = this.note if this is not None and us(this.at) == slot else None
        async with job.lock:
            decision = self._overlap(name)
            backlog = list(job.unrecorded)
            # While slots wait to be recorded, the stored next slot is still the first of them.
            expected = backlog[0][0] if backlog else slot

            def write(conn: Conn, w: WriteContext) -> int | None:
                row = self.store.get_job(conn, name)
                if row is None or row.next_fire_at != expected or self.store.slot_recorded(conn, name, slot):
                    return None  # stale timer (job edited, disabled or removed meanwhile)
                self._record_unrecorded(conn, name, backlog)
                self.store.set_next_fire(conn, name, nxt_us)
                if decision == "skip":
                    self._insert_skipped(conn, name, "schedule", slot, STILL_RUNNING)
                    return None
                return self.store.insert_run(conn, name, "schedule", "pending", scheduled_at=slot, reason=note)

            try:
                run_id = await self.db.write(write)
            except ApiError as e:
                # The database refused (a full disk, an I/O error): the slot is not run, since a run
                # without a record could run again after a restart. The job keeps its timer; the
                # slot is recorded, with this reason, as soon as the database takes writes again.
                log.error(
                    "could not record slot %s of %s; it is not run, and is recorded once the database"
                    " takes writes again: %s",
                    _iso(slot),
                    name,
                    e.message,
                )
                if len(job.unrecorded) < MAX_MISSED_RECORDS:
                    job.unrecorded.append((slot, e.message))
                run_id = None
                self._flush_later(name, job)
            else:
                del job.unrecorded[: len(backlog)]
        job.next_fire_at = nxt_us
        if nxt is not None and nxt_us is not None:
            self._next_notes[name] = (nxt_us, nxt.note)
            # Armed after this run's start is under way (call_soon runs after the run task's first
            # step): when many jobs share an instant, re-arming them all must not delay the starts.
            asyncio.get_running_loop().call_soon(self._rearm, name, job, nxt_us)
        if run_id is not None:
            if decision == "replace":
                await self._end_running(name, f"replaced by run {run_id}")
            self._spawn(name, run_id, "schedule", slot, 1)

    def _flush_later(self, name: str, job: _Job) -> None:
        """Record ``job.unrecorded`` as soon as the database takes writes, retrying with backoff."""
        if job.flushing is not None and not job.flushing.done():
            return
        job.flushing = asyncio.create_task(self._flush_unrecorded(name, job), name=f"flush-{name}")

    async def _flush_unrecorded(self, name: str, job: _Job) -> None:
        delay = FLUSH_RETRY_FIRST
        while job.unrecorded and not self._stopping and self.jobs.get(name) is job:
            await asyncio.sleep(delay)
            delay = min(delay * 2, FLUSH_RETRY_MAX)
            async with job.lock:
                backlog = list(job.unrecorded)
                if not backlog:
                    return
                target = job.next_fire_at

                try:
                    recorded = await self.db.write(
                        functools.partial(self._flush, name=name, backlog=backlog, target=target)
                    )
                except ApiError:
                    continue  # still refused; the first failure was logged
                del job.unrecorded[: len(backlog)]
                if recorded:
                    log.info("recorded %d slot(s) of %s that could not be recorded at their time", len(backlog), name)

    def _rearm(self, name: str, job: _Job, at: int) -> None:
        # Only if nothing re-armed or changed the job meanwhile (an edit, a pause, a removal).
        if self.jobs.get(name) is job and job.next_fire_at == at and job.active and not self._stopping:
            self._arm(name, at)

    def _overlap(self, name: str) -> str:
        if not self.running.get(name):
            return "start"
        return {"forbid": "skip", "allow": "start", "replace": "replace"}[self.jobs[name].jdef.concurrency]

    async def _end_running(self, name: str, why: str) -> None:
        tasks = list(self.running.get(name, {}).values())
        for t in tasks:
            t.cancel(why)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _start_run(self, name: str, trigger: str, slot: int | None, *, refuse: bool = True) -> int:
        """Record and start a run now. Under ``forbid`` with a run going: 409 if ``refuse``, else
        the run is recorded as skipped (run-on-startup beside a catch-up run, say)."""
        decision = self._overlap(name)
        if decision == "skip":
            if refuse:
                raise failed_precondition(f"Job {name} is already running", reason="JOB_RUNNING")
            return await self.db.write(lambda c, w: self._insert_skipped(c, name, trigger, slot, STILL_RUNNING))
        run_id = await self.db.write(lambda c, w: self.store.insert_run(c, name, trigger, "pending", scheduled_at=slot))
        if decision == "replace":
            await self._end_running(name, f"replaced by run {run_id}")
        self._spawn(name, run_id, trigger, slot, 1)
        return run_id

    # -- what the API reads (JobService) --

    def job_names(self) -> list[str]:
        """The loaded jobs' names, sorted."""
        return sorted(self.jobs)

    def view(self, name: str) -> JobView | None:
        """A loaded job as it stands now, or None."""
        job = self.jobs.get(name)
        if job is None:
            return None
        return JobView(
            name=name,
            definition=job.definition,
            jdef=job.jdef,
            schedule=job.schedule,
            active=job.active,
            next_fire_at=job.next_fire_at,
            running=bool(self.running.get(name)),
        )

    async def job_states(self) -> dict[str, tuple[Any, ...]]:
        """Each job's legacy counters (last run, status, duration, output, run and fail counts), by name."""
        return await self.db.read(self.store.job_state)

    async def get_run(self, run_id: int) -> job_store.RunRow | None:
        return await self.db.read(lambda c: self.store.get_run(c, run_id))

    async def list_runs(self, name: str, before_id: int | None, limit: int) -> list[job_store.RunRow]:
        """A job's runs, newest first, with ids below ``before_id``."""
        return await self.db.read(lambda c: self.store.list_runs(c, name, before_id, limit))

    def watch(self, name: str | None, include_output: bool) -> RunSubscription:
        """A subscription to run updates (of one job, or all): close it when done."""
        return self.feed.subscribe(name, include_output)

    async def trigger(self, name: str, trigger: str = "manual") -> int:
        if name not in self.jobs:
            raise not_found(f"Unknown job: {name}")
        return await self._start_run(name, trigger, None)

    async def _on_retry(self, name: str, run_id: int) -> None:
        run = await self.db.read(lambda c: self.store.get_run(c, run_id))
        if run is None or run.status != "pending" or name not in self.jobs or self._stopping:
            return
        self._spawn(name, run_id, "retry", run.scheduled_at, run.attempt)

    def _spawn(self, name: str, run_id: int, trigger: str, slot: int | None, attempt: int) -> None:
        task = asyncio.create_task(self._execute(name, run_id, trigger, slot, attempt), name=f"run-{run_id}")
        self.running.setdefault(name, {})[run_id] = task
        self._tasks.add(task)
        if self._stopping:
            self._late.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._late.discard(t)
            runs = self.running.get(name, {})
            runs.pop(run_id, None)
            if not runs:
                self.running.pop(name, None)

        task.add_done_callback(done)

    # -- running -------------------------------------------------------------------

    async def _execute(self, name: str, run_id: int, trigger: str, slot: int | None, attempt: int) -> None:
        job = self.jobs[name]
        jdef = job.jdef
        scheduled = from_us(slot) if slot is not None else datetime.now(UTC)
        # The slot in the bound is held until the run's end is recorded, so the runs the API shows
        # as running never outnumber --max-concurrent-runs (a run that ended but is not yet recorded
        # still counts).
        held = False
        if self._stopping:
            # Recorded as the server began to stop (a slot that fired, a retry, a trigger in flight):
            # not started, and ended now, so a clean stop leaves no run open.
            why = "not started: lobwife shutting down"
            await self._finish(name, run_id, trigger, slot, attempt, "abandoned", None, None, "", False, why)
            return
        try:
            try:
                await self.sem.acquire()
                held = True
                if jdef.start_jitter > 0:
                    await asyncio.sleep(random.uniform(0, jdef.start_jitter))
                self._publish(run_id, name, trigger, "running", slot, attempt)
                log.info(
                    "run %d of %s started (%s)",
                    run_id,
                    name,
                    trigger,
                    extra={"job": name, "run_id": run_id, "trigger": trigger, "attempt": attempt},
                )
                if jdef.argv and jdef.argv[0].startswith("builtin:"):
                    result = await self._run_builtin(name, run_id, jdef)
                else:
                    result = await self._run_process(name, run_id, jdef, scheduled)
            except asyncio.CancelledError as e:
                why = str(e.args[0]) if e.args else "lobwife shutting down"
                await self._finish(name, run_id, trigger, slot, attempt, "abandoned", None, None, "", False, why)
                if self._stopping:
                    raise
                return
            except Exception as e:
                # Its start could not be recorded (the database refused): runner.run ended the process,
                # which never ran the command. A record of why, once the database takes it.
                log.error("run %d of %s not started: %s", run_id, name, e)
                why = f"not started: {e.message if isinstance(e, ApiError) else e}"
                await self._finish(name, run_id, trigger, slot, attempt, "error", None, None, "", False, why)
                return
            await self._finish(
                name,
                run_id,
                trigger,
                slot,
                attempt,
                result.status,
                result.duration,
                result.exit_code,
                result.output,
                result.output_truncated,
                result.reason,
            )
        finally:
            if held:
                self.sem.release()
        if result.status in ("failed", "timeout", "error") and attempt <= jdef.retry.max_retries and not self._stopping:
            delay = jdef.retry.backoff(attempt)
            delay *= 1 + random.uniform(-jdef.retry.jitter, jdef.retry.jitter)
            at = now_us() + int(delay * 1_000_000)
            try:
                retry_id = await self.db.write(
                    lambda c, w: self.store.insert_run(
                        c,
                        name,
                        "retry",
                        "pending",
                        scheduled_at=slot,
                        attempt=attempt + 1,
                        not_before=at,
                        reason=f"retry {attempt} of {jdef.retry.max_retries} after {delay:.1f}s"
                        f" (run {run_id} {result.status})",
                    )
                )
            except ApiError as e:
                log.error("retry of run %d of %s not scheduled: %s", run_id, name, e.message)
                return
            self._arm_retry(name, retry_id, at)
            log.info(
                "run %d of %s %s: retry %d of %d is run %d, in %.1fs",
                run_id,
                name,
                result.status,
                attempt,
                jdef.retry.max_retries,
                retry_id,
                delay,
                extra={
                    "job": name,
                    "run_id": retry_id,
                    "retry_of": run_id,
                    "attempt": attempt + 1,
                    "delay_seconds": round(delay, 3),
                },
            )

    async def _run_process(
        self, name: str, run_id: int, jdef: job_defs.JobDef, scheduled: datetime
    ) -> runner.RunResult:
        env = {**jdef.env, **runner.job_env(url=self.url, job=name, run_id=run_id, scheduled_at=scheduled)}
        if self.run_token is not None:
            # With auth on, a job calling back ($LOBWIFE_URL) needs a credential: one of its own, for
            # this run only (it expires a minute after the run's timeout), never stored or logged.
            env["LOBWIFE_TOKEN"] = self.run_token(name, jdef.timeout + 60)
        spec = runner.RunSpec(
            argv=jdef.argv,
            cwd=Path(jdef.working_dir) if jdef.working_dir else None,
            env=env,
            timeout=jdef.timeout,
            kill_grace=self.kill_grace,
            output_cap=self.output_cap,
        )

        async def on_start(pid: int, pgid: int) -> None:
            await self.db.write(lambda c, w: self.store.mark_started(c, run_id, now_us(), pid, pgid, self.boot))

        # Incremental: a character split across two chunks is not mangled.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

        def on_output(chunk: bytes) -> None:
            text = decoder.decode(chunk)
            if text:
                run = jobs_pb2.JobRun(run_id=run_id, job_name=name, status=jobs_pb2.RUN_STATUS_RUNNING)
                self.feed.publish(RunUpdate(run, text))

        return await runner.run(spec, on_start=on_start, on_output=on_output)

    async def _run_builtin(self, name: str, run_id: int, jdef: job_defs.JobDef) -> runner.RunResult:
        fn = self.builtins[name][1]
        started = datetime.now(UTC)
        t0 = asyncio.get_running_loop().time()
        await self.db.write(lambda c, w: self.store.mark_started(c, run_id, now_us(), 0, 0, self.boot))
        status: runner.Status
        try:
            output = await asyncio.wait_for(fn(), timeout=jdef.timeout)
            status, reason = "success", "ok"
        except TimeoutError:
            output, status, reason = "", "timeout", f"timed out after {jdef.timeout:g}s"
        except Exception as e:  # a maintenance failure is a failed run, not a crash
            log.exception("built-in job %s failed", name)
            output, status, reason = f"{type(e).__name__}: {e}", "failed", str(e)
        return runner.RunResult(
            status=status,
            exit_code=0 if status == "success" else None,
            output=output[: self.output_cap],
            output_truncated=len(output) > self.output_cap,
            bytes_total=len(output),
            started_at=started,
            finished_at=datetime.now(UTC),
            duration=asyncio.get_running_loop().time() - t0,
            pid=None,
            pgid=None,
            reason=reason,
        )

    async def _finish(
        self,
        name: str,
        run_id: int,
        trigger: str,
        slot: int | None,
        attempt: int,
        status: str,
        duration: float | None,
        exit_code: int | None,
        output: str,
        truncated: bool,
        reason: str,
    ) -> None:
        finished = now_us()
        if duration is not None:
            duration = round(duration, 6)  # microseconds: a float's tail is noise, not precision

        def write(conn: Conn, w: WriteContext) -> None:
            self.store.finish_run(
                conn,
                run_id,
                name,
                status=status,
                finished_at=finished,
                duration=duration,
                exit_code=exit_code,
                output=output,
                output_truncated=truncated,
                reason=reason,
            )

        # A run's end is retried while the database refuses it (a full disk): left unrecorded, the run
        # would stay "running" until a restart called it abandoned. Given up on at shutdown, where the
        # next start resolves it from its record.
        delay = FINISH_RETRY_FIRST
        while True:
            try:
                await self.db.write(write)
                break
            except ApiError as e:
                if self._stopping or self.db.closed:
                    log.error("end of run %d of %s not recorded: %s", run_id, name, e.message)
                    return
                log.error("could not record the end of run %d of %s; retrying: %s", run_id, name, e.message)
                await asyncio.sleep(delay)
                delay = min(delay * 2, FINISH_RETRY_MAX)
        self._publish(
            run_id,
            name,
            trigger,
            status,
            slot,
            attempt,
            duration=duration,
            exit_code=exit_code,
            reason=reason,
            finished_at=finished,
        )
        # A failure is a warning (the rate limiter keeps a failing herd to a few lines a minute).
        log.log(
            logging.INFO if status in _QUIET_ENDS else logging.WARNING,
            "run %d of %s %s: %s",
            run_id,
            name,
            status,
            reason,
            extra={
                "job": name,
                "run_id": run_id,
                "trigger": trigger,
                "status": status,
                "duration": None if duration is None else round(duration, 3),
                "exit_code": exit_code,
                "attempt": attempt,
            },
        )

    def _publish(
        self,
        run_id: int,
        name: str,
        trigger: str,
        status: str,
        slot: int | None,
        attempt: int,
        *,
        duration: float | None = None,
        exit_code: int | None = None,
        reason: str = "",
        finished_at: int | None = None,
    ) -> None:
        run = jobs_pb2.JobRun(
            run_id=run_id,
            job_name=name,
            trigger=TRIGGERS[trigger],
            status=STATUSES[status],
            attempt=attempt,
            reason=reason,
        )
        if slot is not None:
            set_ts(run.scheduled_at, slot)
        if duration is not None:
            run.duration = duration
        if exit_code is not None:
            run.exit_code = exit_code
        # The times a watcher sees are the ones recorded (within the write's latency): started when
        # the run goes running, finished with its end; a run that never started has no start.
        if status == "running":
            self._started_at[run_id] = now_us()
        started = self._started_at.get(run_id) if finished_at is None else self._started_at.pop(run_id, None)
        if started is not None:
            set_ts(run.started_at, started)
        if finished_at is not None:
            set_ts(run.finished_at, finished_at)
        self.feed.publish(RunUpdate(run))

    # -- changes through the API ------------------------------------------------

    async def set_enabled(self, name: str, enabled: bool) -> None:
        job = self.jobs.get(name)
        if job is None:
            raise not_found(f"Unknown job: {name}")
        nxt: int | None = None
        if job.jdef.enabled and enabled:
            slot = schedules.next_slot(job.schedule, datetime.now(UTC))
            nxt = us(slot.at) if slot is not None else None
        async with job.lock:
            backlog = list(job.unrecorded)

            def write(conn: Conn, w: WriteContext) -> None:
                self._record_unrecorded(conn, name, backlog)
                self.store.set_paused(conn, name, not enabled, now_us())
                self.store.set_next_fire(conn, name, nxt)

            await self.db.write(write)
            del job.unrecorded[: len(backlog)]
        job.paused = not enabled
        job.next_fire_at = nxt
        if nxt is not None:
            self._arm(name, nxt)
        else:
            self._disarm(name)

    async def put_job(self, definition: jobs_pb2.Job, source: str) -> None:
        """Create or replace an API-owned job; armed at its next slot after now."""
        jdef = job_defs.validate(definition, source=source)
        sched = _schedule_of(jdef, definition)
        old = self.jobs.get(jdef.name)
        paused = old.paused if old is not None else False
        nxt_slot = schedules.next_slot(sched, datetime.now(UTC)) if jdef.enabled and not paused else None
        nxt = us(nxt_slot.at) if nxt_slot is not None else None

        backlog = list(old.unrecorded) if old is not None else []

        def write(conn: Conn, w: WriteContext) -> None:
            self._record_unrecorded(conn, jdef.name, backlog)
            self.store.upsert_job(conn, definition, source, now_us())
            self.store.set_next_fire(conn, jdef.name, nxt)

        await self.db.write(write)
        self.jobs[jdef.name] = _Job(definition, jdef, sched, paused, nxt)
        self._next_notes.pop(jdef.name, None)  # a note of the old schedule
        if nxt is not None:
            self._arm(jdef.name, nxt)
        else:
            self._disarm(jdef.name)

    async def delete_job(self, name: str) -> None:
        if name not in self.jobs:
            raise not_found(f"Unknown job: {name}")
        await self.db.write(lambda c, w: self.store.delete_job(c, name))
        self._disarm(name)
        del self.jobs[name]
        self._next_notes.pop(name, None)

    # -- shutdown ---------------------------------------------------------------

    # -- writes shared by the paths above (writer thread) --

    def _insert_skipped(self, conn: Conn, name: str, trigger: str, slot: int | None, reason: str) -> int:
        return self.store.insert_run(
            conn, name, trigger, "skipped", scheduled_at=slot, finished_at=now_us(), reason=reason
        )

    def _record_unrecorded(self, conn: Conn, name: str, backlog: list[tuple[int, str]]) -> None:
        for slot, error in backlog:
            if not self.store.slot_recorded(conn, name, slot):
                why = f"not run: the slot could not be recorded at its time ({error})"
                self._insert_skipped(conn, name, "schedule", slot, why)

    def _flush(
        self, conn: Conn, w: WriteContext, *, name: str, backlog: list[tuple[int, str]], target: int | None
    ) -> bool:
        row = self.store.get_job(conn, name)
        if row is None or row.next_fire_at != backlog[0][0]:
            return False  # the job was edited, disabled or removed meanwhile
        self._record_unrecorded(conn, name, backlog)
        self.store.set_next_fire(conn, name, target)
        return True

    def _abandon(self, conn: Conn, w: WriteContext, *, run: job_store.RunRow, reason: str) -> None:
        self.store.finish_run(
            conn,
            run.id,
            run.job_name,
            status="abandoned",
            finished_at=now_us(),
            duration=None,
            exit_code=None,
            output=run.output,
            output_truncated=run.output_truncated,
            reason=reason,
        )

    async def stop(self, grace: float) -> None:
        """Stop firing; let running runs finish within ``grace``; then end and record the rest."""
        self._stopping = True
        if self._aps.running:
            self._aps.shutdown(wait=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # Until nothing is left: a timer callback in flight may still start a run, which then ends
        # at once (see _execute). Neither those runs nor the firings are cancelled: a task cancelled
        # before its first step runs none of its code, so its run would stay pending.
        while pending := [t for t in self._tasks | self._firing if not t.done()]:
            remaining = deadline - loop.time()
            if remaining > 0:
                await asyncio.wait(pending, timeout=remaining)
                continue
            for t in pending:
                if t in self._tasks and t not in self._late:
                    t.cancel("ended at shutdown: still running after the grace period")
            await asyncio.gather(*pending, return_exceptions=True)
        self.feed.close()


STILL_RUNNING = "previous run still running (concurrency: forbid)"


def _schedule_of(jdef: job_defs.JobDef, definition: jobs_pb2.Job) -> schedules.Schedule:
    return _shared_schedule(jdef.cron, jdef.interval, jdef.run_at, jdef.time_zone)


@functools.lru_cache(maxsize=65536)
def _shared_schedule(
    cron: str | None, interval: float | None, run_at: datetime | None, time_zone: str
) -> schedules.Schedule:
    # Schedules are immutable: jobs with the same schedule share one (and its
    # compiled cron triggers), which keeps 10,000 jobs' memory and start-up down.
    return schedules.parse(
        cron=cron, interval_seconds=interval, run_at=run_at, time_zone=time_zone, anchor=job_defs.INTERVAL_ANCHOR
    )


def _iso(at: int) -> str:
    return from_us(at).isoformat().replace("+00:00", "Z")


TRIGGERS = {
    "schedule": jobs_pb2.RUN_TRIGGER_SCHEDULE,
    "manual": jobs_pb2.RUN_TRIGGER_MANUAL,
    "retry": jobs_pb2.RUN_TRIGGER_RETRY,
    "catch-up": jobs_pb2.RUN_TRIGGER_CATCH_UP,
    "startup": jobs_pb2.RUN_TRIGGER_STARTUP,
}
STATUSES = {
    "pending": jobs_pb2.RUN_STATUS_PENDING,
    "running": jobs_pb2.RUN_STATUS_RUNNING,
    "success": jobs_pb2.RUN_STATUS_SUCCESS,
    "failed": jobs_pb2.RUN_STATUS_FAILED,
    "timeout": jobs_pb2.RUN_STATUS_TIMEOUT,
    "error": jobs_pb2.RUN_STATUS_ERROR,
    "skipped": jobs_pb2.RUN_STATUS_SKIPPED,
    "abandoned": jobs_pb2.RUN_STATUS_ABANDONED,
}
