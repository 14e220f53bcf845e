"""SQL for jobs, their runs and per-job counters (tables of migration 4).

Write functions run in the storage writer thread; read functions on a reader.
Times are integer microseconds since the epoch, UTC.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lobwife.v1 import jobs_pb2

RUN_COLUMNS = (
    "id, job_name, trigger, status, scheduled_at, not_before, attempt, started_at, finished_at, duration, "
    "exit_code, pid, pgid, boot_id, output, output_truncated, reason"
)
FAILED = frozenset({"failed", "timeout", "error", "abandoned"})


@dataclass(frozen=True)
class JobRow:
    """A row of ``jobs``: a definition, who owns it, whether it is paused, its next slot."""

    name: str
    source: str
    definition: jobs_pb2.Job
    paused: bool
    next_fire_at: int | None


@dataclass(frozen=True)
class RunRow:
    """A row of ``job_runs``: one run or one recorded slot, times in microseconds."""

    id: int
    job_name: str
    trigger: str
    status: str
    scheduled_at: int | None
    not_before: int | None
    attempt: int
    started_at: int | None
    finished_at: int | None
    duration: float | None
    exit_code: int | None
    pid: int | None
    pgid: int | None
    boot_id: str | None
    output: str | None
    output_truncated: bool
    reason: str | None


def _job(r: Sequence[Any]) -> JobRow:
    return JobRow(r[0], r[1], jobs_pb2.Job.FromString(r[2]), bool(r[3]), r[4])


def _run(r: Sequence[Any]) -> RunRow:
    return RunRow(
        id=r[0],
        job_name=r[1],
        trigger=r[2],
        status=r[3],
        scheduled_at=r[4],
        not_before=r[5],
        attempt=r[6],
        started_at=r[7],
        finished_at=r[8],
        duration=r[9],
        exit_code=r[10],
        pid=r[11],
        pgid=r[12],
        boot_id=r[13],
        output=r[14],
        output_truncated=bool(r[15]),
        reason=r[16],
    )


def get_job(conn: sqlite3.Connection, name: str) -> JobRow | None:
    r = conn.execute(
        "SELECT name, source, definition, paused, next_fire_at FROM jobs WHERE name = ?", (name,)
    ).fetchone()
    return _job(r) if r else None


def list_jobs(conn: sqlite3.Connection) -> list[JobRow]:
    rows = conn.execute("SELECT name, source, definition, paused, next_fire_at FROM jobs ORDER BY name")
    return [_job(r) for r in rows]


def upsert_job(conn: sqlite3.Connection, job: jobs_pb2.Job, source: str, now: int) -> None:
    """Store a definition; a job defined here for the first time starts paused if the old daemon had paused it.

    The old daemon kept its pause in ``job_state.enabled`` (0: the operator disabled the
    job), and its definitions in code, so lobwife's ``jobs`` row only appears when the
    jobs file (or a builtin) defines the job at a later start. The pause is taken over
    then, once (``enabled`` is set back to 1): from there on ``jobs.paused`` is the one
    record of it, which a restart or a changed definition leaves as it is.
    """
    new = conn.execute("SELECT 1 FROM jobs WHERE name = ?", (job.name,)).fetchone() is None
    conn.execute(
        "INSERT INTO jobs (name, source, definition, paused, next_fire_at, created_at, updated_at)"
        " VALUES (?, ?, ?, COALESCE((SELECT enabled = 0 FROM job_state WHERE name = ?), 0), NULL, ?, ?)"
        " ON CONFLICT(name) DO UPDATE SET source = excluded.source, definition = excluded.definition,"
        " updated_at = excluded.updated_at",
        (job.name, source, job.SerializeToString(deterministic=True), job.name, now, now),
    )
    if new:
        conn.execute("UPDATE job_state SET enabled = 1 WHERE name = ? AND enabled = 0", (job.name,))


def delete_job(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("DELETE FROM jobs WHERE name = ?", (name,)).rowcount > 0


def set_paused(conn: sqlite3.Connection, name: str, paused: bool, now: int) -> None:
    conn.execute("UPDATE jobs SET paused = ?, updated_at = ? WHERE name = ?", (int(paused), now, name))


def set_next_fire(conn: sqlite3.Connection, name: str, at: int | None) -> None:
    conn.execute("UPDATE jobs SET next_fire_at = ? WHERE name = ?", (at, name))


def insert_run(
    conn: sqlite3.Connection,
    job_name: str,
    trigger: str,
    status: str,
    *,
    scheduled_at: int | None,
    attempt: int = 1,
    not_before: int | None = None,
    reason: str | None = None,
    finished_at: int | None = None,
) -> int:
    cur = conn.execute(
        "INSERT INTO job_runs (job_name, trigger, status, scheduled_at, not_before, attempt, reason, finished_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (job_name, trigger, status, scheduled_at, not_before, attempt, reason, finished_at),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def slot_recorded(conn: sqlite3.Connection, job_name: str, scheduled_at: int) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM job_runs WHERE job_name = ? AND scheduled_at = ? AND trigger IN ('schedule', 'catch-up')",
            (job_name, scheduled_at),
        ).fetchone()
        is not None
    )


def mark_started(conn: sqlite3.Connection, run_id: int, started_at: int, pid: int, pgid: int, boot: str) -> None:
    conn.execute(
        "UPDATE job_runs SET status = 'running', started_at = ?, pid = ?, pgid = ?, boot_id = ? WHERE id = ?",
        (started_at, pid, pgid, boot, run_id),
    )


def finish_run(
    conn: sqlite3.Connection,
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
) -> None:
    """Close a run and update the job's legacy counters (skipped runs do not count as runs)."""
    conn.execute(
        "UPDATE job_runs SET status = ?, finished_at = ?, duration = ?, exit_code = ?, output = ?,"
        " output_truncated = ?, reason = COALESCE(?, reason) WHERE id = ?",
        (status, finished_at, duration, exit_code, output, int(output_truncated), reason, run_id),
    )
    if not count:
        return
    failed = 1 if status in FAILED else 0
    conn.execute(
        "INSERT INTO job_state (name, last_run, last_status, last_duration, last_output, run_count, fail_count)"
        " VALUES (?, ?, ?, ?, ?, 1, ?)"
        " ON CONFLICT(name) DO UPDATE SET last_run = excluded.last_run, last_status = excluded.last_status,"
        " last_duration = excluded.last_duration, last_output = excluded.last_output,"
        " run_count = job_state.run_count + 1, fail_count = job_state.fail_count + excluded.fail_count",
        (job_name, finished_at, status, round(duration, 3) if duration is not None else None, output, failed),
    )


def get_run(conn: sqlite3.Connection, run_id: int) -> RunRow | None:
    r = conn.execute(f"SELECT {RUN_COLUMNS} FROM job_runs WHERE id = ?", (run_id,)).fetchone()
    return _run(r) if r else None


def list_runs(conn: sqlite3.Connection, job_name: str, before_id: int | None, limit: int) -> list[RunRow]:
    if before_id is None:
        rows = conn.execute(
            f"SELECT {RUN_COLUMNS} FROM job_runs WHERE job_name = ? ORDER BY id DESC LIMIT ?", (job_name, limit)
        )
    else:
        rows = conn.execute(
            f"SELECT {RUN_COLUMNS} FROM job_runs WHERE job_name = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (job_name, before_id, limit),
        )
    return [_run(r) for r in rows]


def open_runs(conn: sqlite3.Connection) -> list[RunRow]:
    """Runs not finished: pending (not started yet, or a retry waiting) and running."""
    rows = conn.execute(f"SELECT {RUN_COLUMNS} FROM job_runs WHERE status IN ('pending', 'running') ORDER BY id")
    return [_run(r) for r in rows]


def job_state(conn: sqlite3.Connection) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT name, last_run, last_status, last_duration, last_output, run_count, fail_count FROM job_state"
    )
    return {r[0]: tuple(r[1:]) for r in rows}


def prune_runs(conn: sqlite3.Connection, *, older_than: int, keep_per_job: int) -> int:
    """Delete finished runs older than ``older_than`` or beyond the newest ``keep_per_job`` of their job."""
    deleted = conn.execute(
        "DELETE FROM job_runs WHERE status NOT IN ('pending', 'running') AND finished_at < ?", (older_than,)
    ).rowcount
    deleted += conn.execute(
        "DELETE FROM job_runs WHERE status NOT IN ('pending', 'running') AND id IN ("
        " SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY job_name ORDER BY id DESC) AS n"
        " FROM job_runs) WHERE n > ?)",
        (keep_per_job,),
    ).rowcount
    return int(deleted)


@contextlib.contextmanager
def savepoint(conn: sqlite3.Connection, name: str) -> Iterator[None]:
    """A nested transaction: what the block wrote is undone if it raises (the error goes on), kept otherwise."""
    conn.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")
        raise
    conn.execute(f"RELEASE {name}")
