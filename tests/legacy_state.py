"""A state folder as the old daemon left it: ``lobmob.db`` in its own schema, and its JSON files.

The schema is written out here as the old daemon created it (lobwife-schema.sql, then
its version-2 broker columns on tasks), not through lobwife's migrations, so that a
test of the upgrade does not take lobwife's own idea of the old schema on trust.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

# The old daemon's schema (lobwife-schema.sql, then its version-2 broker columns on tasks).
OLD_DAEMON_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL DEFAULT (datetime('now')));
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, slug TEXT,
    type TEXT NOT NULL DEFAULT 'swe', status TEXT NOT NULL DEFAULT 'queued',
    priority TEXT NOT NULL DEFAULT 'normal', model TEXT, assigned_to TEXT, repos TEXT,
    discord_thread_id TEXT, estimate_minutes INTEGER, requires_qa INTEGER NOT NULL DEFAULT 0,
    workflow TEXT, created_at TEXT NOT NULL DEFAULT (datetime('now')),
    updated_at TEXT NOT NULL DEFAULT (datetime('now')), queued_at TEXT NOT NULL DEFAULT (datetime('now')),
    assigned_at TEXT, completed_at TEXT
);
CREATE INDEX idx_tasks_status ON tasks(status);
CREATE INDEX idx_tasks_type ON tasks(type);
CREATE TABLE task_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id INTEGER NOT NULL REFERENCES tasks(id),
    event_type TEXT NOT NULL, detail TEXT, actor TEXT, created_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX idx_task_events_task_id ON task_events(task_id);
CREATE TABLE job_state (
    name TEXT PRIMARY KEY, last_run TEXT, last_status TEXT, last_duration REAL, last_output TEXT,
    run_count INTEGER NOT NULL DEFAULT 0, fail_count INTEGER NOT NULL DEFAULT 0, enabled INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE broker_tasks (
    task_id TEXT PRIMARY KEY, repos TEXT NOT NULL, lobster_type TEXT NOT NULL DEFAULT 'unknown',
    registered_at TEXT NOT NULL DEFAULT (datetime('now')), status TEXT NOT NULL DEFAULT 'active',
    token_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE token_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, repos TEXT, action TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX idx_token_audit_task_id ON token_audit(task_id);
INSERT INTO schema_version (version) VALUES (1);
ALTER TABLE tasks ADD COLUMN broker_repos TEXT;
ALTER TABLE tasks ADD COLUMN broker_status TEXT;
ALTER TABLE tasks ADD COLUMN token_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN broker_registered_at TEXT;
INSERT INTO schema_version (version) VALUES (2)
"""


def old_daemon_db(state: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """``state/lobmob.db`` as the old daemon left it (WAL mode, schema version 2), with ``statements`` run."""
    state.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(state / "lobmob.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(OLD_DAEMON_SCHEMA)
    for sql, args in statements:
        conn.execute(sql, args)
    conn.close()


def old_task(task_id: int, **cols: Any) -> tuple[str, tuple[Any, ...]]:
    """An INSERT of a task row the way the old daemon's handlers wrote it (values exactly as given)."""
    values = {"id": task_id, "name": f"task {task_id}", **cols}
    names = ", ".join(values)
    return f"INSERT INTO tasks ({names}) VALUES ({', '.join('?' * len(values))})", tuple(values.values())
