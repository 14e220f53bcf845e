"""What the domains may ask of storage: the boundary a second backend (PostgreSQL) implements.

The domains run their reads and writes as functions of a transaction handle
(``Conn``): ``Storage.write(fn)`` runs ``fn(conn, wctx)`` inside a transaction of
the backend's and resolves once it is durable; ``Storage.read(fn)`` runs
``fn(conn)`` on a consistent snapshot. A domain never uses the handle itself: it
only passes it to its store's functions (``TaskStore``, ``JobStore``), which hold
every statement. So a backend is:

- a ``Storage`` (the SQLite one is ``database.Database``: one writer thread with
  group commit, reader threads);
- one object per domain store with these functions over its own handle (the SQLite
  ones are the modules ``task_store`` and ``job_store``, which satisfy the protocols
  as modules);
- for the task domain's in-process parts, ``TaskSnapshots`` (the write-through
  cache) and ``TaskChanges`` (the change feed behind WatchTasks): their in-process
  implementations are correct only while one process writes. docs/design.md
  ("A second backend") says what a multi-process backend puts there.

The row shapes and the stored vocabulary (status words, columns, ``TaskFilter``,
``RunRow``) are backend-neutral and stay beside the SQL in ``task_store`` and
``job_store``; a second backend imports them from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from lobwife.v1 import jobs_pb2, tasks_pb2

if TYPE_CHECKING:
    from lobwife_server.storage.audit_store import FindingEventRow, FindingFilter, FindingRow, NewFinding
    from lobwife_server.storage.broker_store import AuditRow, BrokerCounts, RegistrationRow
    from lobwife_server.storage.cost_store import CostFilter, CostRow, NewCost, Sums
    from lobwife_server.storage.database import BatchKind, WriteContext
    from lobwife_server.storage.job_store import JobRow, RunRow
    from lobwife_server.storage.task_store import TaskFilter

T = TypeVar("T")
A = TypeVar("A")

#: A backend's transaction handle (SQLite: its ``sqlite3.Connection``). Opaque to the
#: domains: they pass it to their store's functions and never call it.
Conn = Any


class Storage(Protocol):
    """The database as the domains and the app see it: transactions run as functions, durable when answered."""

    @property
    def closed(self) -> bool: ...

    def write(self, fn: Callable[[Conn, WriteContext], T]) -> asyncio.Future[T]:
        """Run ``fn`` in a write transaction; the future resolves after the commit is durable."""
        ...

    def write_as(self, kind: BatchKind[A, T], arg: A) -> asyncio.Future[T]:
        """One write of a kind that may share statements with others of its kind that meet in a batch."""
        ...

    async def read(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn`` on a consistent read snapshot, off the event loop."""
        ...

    async def check(self) -> str | None:
        """None when the database answers a read, else why not."""
        ...

    def size_bytes(self) -> int: ...

    async def backup(self, dest_dir: Path, keep: int) -> str: ...

    async def checkpoint(self) -> str: ...

    async def close(self) -> None: ...


class TaskStore(Protocol):
    """Every statement of the task domain (tasks, their events, the page-token secret)."""

    # reads
    def get_task(self, conn: Conn, number: int) -> tasks_pb2.Task | None: ...
    def get_tasks(self, conn: Conn, ids: Sequence[int]) -> dict[int, tasks_pb2.Task]: ...
    def list_task_keys(self, conn: Conn, f: TaskFilter, before_id: int | None, limit: int) -> list[tuple[int, int]]: ...
    def task_exists(self, conn: Conn, number: int) -> bool: ...
    def list_events(self, conn: Conn, number: int, before_id: int | None, limit: int) -> list[tasks_pb2.TaskEvent]: ...
    def changes_after(
        self, conn: Conn, cursor: int, task_number: int | None, limit: int, max_bytes: int | None = None
    ) -> list[tuple[tasks_pb2.TaskEvent, tasks_pb2.Task]]: ...
    def max_task_id(self, conn: Conn) -> int: ...
    def max_event_id(self, conn: Conn) -> int: ...
    def task_count(self, conn: Conn) -> int: ...
    def find_by_request_id(self, conn: Conn, request_id: str) -> tuple[tasks_pb2.Task, bytes | None] | None: ...
    def status_of(self, conn: Conn, number: int) -> tuple[str, int] | None: ...
    def status_and_values(
        self, conn: Conn, number: int, columns: Sequence[str]
    ) -> tuple[str, int, dict[str, Any]] | None: ...

    # writes
    def prepare_writer(self, conn: Conn) -> None:
        """Ready the writer for ``CreateInserter`` (SQLite: a TEMP trigger that logs each create's event)."""
        ...

    def CreateInserter(self) -> Callable[[Conn, Sequence[Sequence[Any]]], tuple[int, int]]:
        """The function that inserts created tasks (``task_store.CREATE_COLUMNS`` rows) and their "created"
        events, returning (first task id, first event id); ids are consecutive in row order. Writer only."""
        ...

    def insert_event(
        self, conn: Conn, number: int, event_type: str, detail: str | None, actor: str | None, at: int
    ) -> tasks_pb2.TaskEvent: ...
    def update_task(self, conn: Conn, number: int, values: dict[str, Any]) -> None: ...
    def add_token(self, conn: Conn, number: int, at: int) -> tasks_pb2.Task | None: ...
    def get_or_create_secret(self, conn: Conn, key: str, make: bytes) -> bytes: ...


class JobStore(Protocol):
    """Every statement of the jobs domain (definitions, schedule state, runs, the legacy counters)."""

    def get_job(self, conn: Conn, name: str) -> JobRow | None: ...
    def list_jobs(self, conn: Conn) -> list[JobRow]: ...
    def upsert_job(self, conn: Conn, job: jobs_pb2.Job, source: str, now: int) -> None: ...
    def delete_job(self, conn: Conn, name: str) -> bool: ...
    def set_paused(self, conn: Conn, name: str, paused: bool, now: int) -> None: ...
    def set_next_fire(self, conn: Conn, name: str, at: int | None) -> None: ...
    def insert_run(
        self,
        conn: Conn,
        job_name: str,
        trigger: str,
        status: str,
        *,
        scheduled_at: int | None,
        attempt: int = 1,
        not_before: int | None = None,
        reason: str | None = None,
        finished_at: int | None = None,
    ) -> int: ...
    def slot_recorded(self, conn: Conn, job_name: str, scheduled_at: int) -> bool: ...
    def mark_started(self, conn: Conn, run_id: int, started_at: int, pid: int, pgid: int, boot: str) -> None: ...
    def finish_run(
        self,
        conn: Conn,
        run_id: int,
        job_name: str,
        *,
        status: str,
        finished_at: int,
        duration: float | None,
        exit_code: int | None,
        output: str | None,
        output_truncated: bool,
        reason: str | None,
        count: bool = True,
    ) -> None: ...
    def get_run(self, conn: Conn, run_id: int) -> RunRow | None: ...
    def list_runs(self, conn: Conn, job_name: str, before_id: int | None, limit: int) -> list[RunRow]: ...
    def open_runs(self, conn: Conn) -> list[RunRow]: ...
    def job_state(self, conn: Conn) -> dict[str, tuple[Any, ...]]: ...
    def prune_runs(self, conn: Conn, *, older_than: int, keep_per_job: int) -> int: ...
    def savepoint(self, conn: Conn, name: str) -> AbstractContextManager[None]:
        """A nested transaction: undone if the block raises, kept otherwise."""
        ...


class BrokerStore(Protocol):
    """Every statement of the token broker (registrations, the token audit, the legacy summary)."""

    def summary(self, conn: Conn) -> BrokerCounts: ...
    def list_registrations(self, conn: Conn) -> list[RegistrationRow]: ...
    def get_registration(self, conn: Conn, ref: str) -> RegistrationRow | None: ...
    def find_task(self, conn: Conn, ref: str) -> int | None: ...
    def link_unlinked(self, conn: Conn) -> list[tuple[str, int]]: ...
    def upsert_registration(
        self,
        conn: Conn,
        ref: str,
        repos: Sequence[str],
        lobster_type: str,
        task_number: int | None,
        registered_by: str | None,
        now: int,
    ) -> None: ...
    def delete_registration(self, conn: Conn, ref: str) -> bool: ...
    def linked_refs(self, conn: Conn, number: int) -> list[str]: ...
    def active_links(self, conn: Conn, number: int) -> int: ...
    def count_token(self, conn: Conn, ref: str, now: int) -> bool: ...
    def expire_idle(self, conn: Conn, cutoff: int, now: int) -> list[tuple[str, list[str]]]: ...
    def insert_audit(
        self,
        conn: Conn,
        task_id: str,
        repos: Sequence[str] | None,
        action: str,
        now: int,
        *,
        identity: str | None = None,
        token_sha256: str | None = None,
        reused: bool = False,
        detail: str | None = None,
    ) -> int: ...
    def list_audit(self, conn: Conn, task_id: str | None, before_id: int | None, limit: int) -> list[AuditRow]: ...


class AuditStore(Protocol):
    """Every statement of audit findings: one row per fingerprint, its events, the reports' request ids."""

    def get_finding(self, conn: Conn, finding_id: int) -> FindingRow | None: ...
    def find_by_fingerprint(self, conn: Conn, fingerprint: str) -> FindingRow | None: ...
    def insert_finding(self, conn: Conn, new: NewFinding, now: int) -> FindingRow: ...
    def count_report(self, conn: Conn, finding_id: int, now: int, *, reopen: bool) -> FindingRow: ...
    def update_finding(self, conn: Conn, finding_id: int, values: dict[str, Any], now: int) -> FindingRow: ...
    def set_status(
        self, conn: Conn, finding_id: int, status: str, resolution: str, note: str, actor: str | None, now: int
    ) -> FindingRow: ...
    def insert_event(self, conn: Conn, finding_id: int, kind: str, actor: str, detail: str, now: int) -> int: ...
    def list_events(self, conn: Conn, finding_id: int, limit: int) -> list[FindingEventRow]: ...
    def list_findings(self, conn: Conn, flt: FindingFilter, before_id: int | None, limit: int) -> list[FindingRow]: ...
    def find_request(self, conn: Conn, request_id: str) -> tuple[int, bytes, bool, bool] | None: ...
    def insert_request(
        self, conn: Conn, request_id: str, finding_id: int, request_fp: bytes, created: bool, reopened: bool, now: int
    ) -> None: ...
    def task_exists(self, conn: Conn, number: int) -> bool: ...


class CostStore(Protocol):
    """Every statement of cost events: the events, their hourly rollup (kept in the same write), reprices."""

    def find_request(self, conn: Conn, request_id: str) -> tuple[CostRow, bytes | None] | None: ...
    def insert_cost(self, conn: Conn, new: NewCost, now: int) -> CostRow | None: ...
    def list_costs(self, conn: Conn, flt: CostFilter, before_id: int | None, limit: int) -> list[CostRow]: ...
    def summarize(self, conn: Conn, group_by: str, flt: CostFilter) -> dict[Any, Sums]: ...
    def repriceable(self, conn: Conn, start: int, end: int, after_id: int, limit: int) -> list[CostRow]: ...
    def set_computed(
        self, conn: Conn, row: CostRow, cost: float | None, price_id: str, note: str, actor: str, now: int
    ) -> bool: ...
    def savepoint(self, conn: Conn, name: str) -> AbstractContextManager[None]:
        """A nested transaction: undone if the block raises, kept otherwise."""
        ...


# -- the in-process parts a multi-process backend replaces ---------------------------------------


class TaskSnapshots(Protocol):
    """The write-through cache of task snapshots (serialized), filled by commits and by reads.

    Correct because one process writes: every commit puts its snapshot here before
    any caller is answered. ``mark``/``fill`` keep a read from putting back a version
    older than one a write put in meanwhile.
    """

    def mark(self) -> int: ...
    def get_bytes(self, task_id: int) -> bytes | None: ...
    def peek_bytes(self, task_id: int, updated_us: int) -> bytes | None: ...
    def newest(self, top: int, count: int) -> list[tuple[int, bytes]] | None: ...
    def put(self, task: tasks_pb2.Task, data: bytes | None = None, updated_us: int | None = None) -> None: ...
    def fill(self, task: tasks_pb2.Task, mark: int, data: bytes | None = None) -> None: ...


class TaskSubscription(Protocol):
    """One WatchTasks stream's bounded queue of changes."""

    @property
    def size(self) -> int: ...

    max_bytes: int
    overflowed: bool

    def reset(self) -> None: ...
    async def get(self) -> TaskChange | None: ...
    def close(self) -> None: ...


class TaskChange(Protocol):
    """A committed task event and the task as it stood after it; the event id is the cursor."""

    cursor: int
    event: tasks_pb2.TaskEvent
    task: tasks_pb2.Task


class TaskChanges(Protocol):
    """The feed of committed task events in commit order, behind WatchTasks; ``last_cursor`` is the newest."""

    last_cursor: int

    @property
    def watched(self) -> bool:
        """Whether any stream is subscribed (when none is, commits only move the cursor)."""
        ...

    def skip_to(self, cursor: int) -> None: ...
    def publish_event(self, event: tasks_pb2.TaskEvent, task: tasks_pb2.Task) -> None: ...
    def subscribe(self) -> TaskSubscription: ...
    def close(self) -> None: ...
