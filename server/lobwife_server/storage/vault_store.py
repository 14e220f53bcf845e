"""SQL for the vault sync: its durable cursor on the task change feed (``meta``), the tasks it writes,
and what its summary pages show (costs, open audit findings).

The cursor is a ``task_events`` id: every change of a task writes an event (created, updated,
cancelled, ...), ids grow in commit order (one writer), so the tasks to write again are those
with an event after the cursor. It moves only after a sync cycle succeeded.

The summary pages read other domains' tables here, in storage, so the vault domain never imports
the costs or audits domain (docs/design.md, "Packages").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Container
from dataclasses import dataclass

from lobwife.v1 import tasks_pb2
from lobwife_server.storage.cost_store import DAY_US, CostFilter, Sums, summarize
from lobwife_server.storage.task_store import COLUMNS, changes_after, max_event_id, row_to_task

CURSOR_KEY = "vault.cursor"
#: Events read per look at the feed (a cycle takes every page up to the newest).
PAGE = 5000
#: Task statuses that sync the vault soon after they are reached, not at the next interval.
FINISHING = ("completed", "failed", "cancelled")


def cursor(conn: sqlite3.Connection) -> int | None:
    """The last event id written to the vault; None before the first (full) sync."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,)).fetchone()
    return int(row[0]) if row is not None else None


def set_cursor(conn: sqlite3.Connection, value: int) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (CURSOR_KEY, str(value)),
    )


def changed_since(conn: sqlite3.Connection, after: int) -> tuple[list[tasks_pb2.Task], int]:
    """The tasks with an event after ``after`` (each once, as they are now) and the newest event id."""
    tasks: dict[int, tasks_pb2.Task] = {}
    last = after
    while True:
        page = changes_after(conn, last, None, PAGE)
        if not page:
            return list(tasks.values()), last
        for event, task in page:
            tasks[task.id] = task
            last = event.id


def all_tasks(conn: sqlite3.Connection) -> tuple[list[tasks_pb2.Task], int]:
    """Every task, and the newest event id (a full rebuild's cursor)."""
    newest = max_event_id(conn)
    return [row_to_task(r) for r in conn.execute(f"SELECT {COLUMNS} FROM tasks ORDER BY id")], newest


def task_numbers(conn: sqlite3.Connection) -> Container[int]:
    """The numbers of the tasks there are (an ordinary sync cycle counts only their files).

    Ids are given in order and a task is never deleted (a cancel is a status), so they are almost
    always ``low..high`` with no gap: then a ``range``, from two lookups on the primary key and a count,
    the same at any number of tasks. An old daemon's database that lobwife upgraded may have gaps (it
    deleted tasks, and the ids it gave are kept): then the set of ids.
    """
    low, high, count = conn.execute("SELECT MIN(id), MAX(id), COUNT(*) FROM tasks").fetchone()
    if not count:
        return range(0)
    if count == high - low + 1:
        return range(int(low), int(high) + 1)
    return frozenset(int(r[0]) for r in conn.execute("SELECT id FROM tasks"))


def finished_since(conn: sqlite3.Connection, after: int) -> bool:
    """Whether a task changed after event ``after`` and is now completed, failed or cancelled."""
    marks = ",".join("?" * len(FINISHING))
    row = conn.execute(
        f"SELECT 1 FROM task_events e JOIN tasks t ON t.id = e.task_id WHERE e.id > ? AND t.status IN ({marks})"
        " LIMIT 1",
        (after, *FINISHING),
    ).fetchone()
    return row is not None


# --- summary pages --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CostWindow:
    """Spend over whole UTC days ``first_day`` .. ``last_day`` (day numbers: days since 1970-01-01)."""

    first_day: int
    last_day: int
    by_day: dict[int, Sums]
    by_model: dict[str, Sums]


def cost_window(conn: sqlite3.Connection, now: int, days: int) -> CostWindow | None:
    """The ``days`` days that end with the day of the newest cost at or before ``now`` (µs); None: no costs.

    The window ends at the newest cost, not at today, so that the page it makes changes only when
    the costs do: a window that moved with the clock would rewrite the page, and commit, every day
    with no new data. A cost dated after ``now`` does not move it (a caller's clock may be ahead).
    """
    newest = conn.execute("SELECT MAX(occurred_at) FROM cost_events WHERE occurred_at <= ?", (now,)).fetchone()[0]
    if newest is None:
        return None
    last_day = int(newest) // DAY_US
    first_day = last_day - days + 1
    # Whole days: both summaries come from the hourly rollup alone.
    flt = CostFilter(start=first_day * DAY_US, end=(last_day + 1) * DAY_US)
    return CostWindow(first_day, last_day, summarize(conn, "day", flt), summarize(conn, "model", flt))


@dataclass(frozen=True, slots=True)
class OpenFinding:
    id: int
    severity: int
    category: str
    title: str
    subject: str
    task_number: int | None
    count: int
    last_seen_at: int  # µs


@dataclass(frozen=True, slots=True)
class OpenFindings:
    """The most severe open findings (at most the limit asked), and how many are open by severity."""

    rows: list[OpenFinding]
    by_severity: dict[int, int]

    @property
    def total(self) -> int:
        return sum(self.by_severity.values())


def open_findings(conn: sqlite3.Connection, limit: int) -> OpenFindings:
    """Open findings, most severe first, then the most recently seen, then the newest (a total order,
    so the page is the same for the same findings)."""
    counts = conn.execute("SELECT severity, COUNT(*) FROM audit_findings WHERE status = 'open' GROUP BY severity")
    by_severity = {int(r[0]): int(r[1]) for r in counts}
    rows = conn.execute(
        "SELECT id, severity, category, title, subject, task_number, report_count, last_seen_at FROM audit_findings"
        " WHERE status = 'open' ORDER BY severity DESC, last_seen_at DESC, id DESC LIMIT ?",
        (limit,),
    )
    found = [
        OpenFinding(int(r[0]), int(r[1]), r[2], r[3], r[4], None if r[5] is None else int(r[5]), int(r[6]), int(r[7]))
        for r in rows
    ]
    return OpenFindings(found, by_severity)


def summaries(conn: sqlite3.Connection, now: int, days: int, limit: int) -> tuple[CostWindow | None, OpenFindings]:
    """Both pages' data in one read snapshot."""
    return cost_window(conn, now, days), open_findings(conn, limit)
