"""SQL for the vault sync: its durable cursor on the task change feed (``meta``), and the tasks it writes.

The cursor is a ``task_events`` id: every change of a task writes an event (created, updated,
cancelled, ...), ids grow in commit order (one writer), so the tasks to write again are those
with an event after the cursor. It moves only after a sync cycle succeeded.
"""

from __future__ import annotations

import sqlite3

from lobwife.v1 import tasks_pb2
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


def finished_since(conn: sqlite3.Connection, after: int) -> bool:
    """Whether a task changed after event ``after`` and is now completed, failed or cancelled."""
    marks = ",".join("?" * len(FINISHING))
    row = conn.execute(
        f"SELECT 1 FROM task_events e JOIN tasks t ON t.id = e.task_id WHERE e.id > ? AND t.status IN ({marks})"
        " LIMIT 1",
        (after, *FINISHING),
    ).fetchone()
    return row is not None
