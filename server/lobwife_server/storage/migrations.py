"""Versioned, transactional, forward-only schema migrations.

Versions 1 and 2 are the old daemon's schema (``lobmob.db``), so a fresh
database and an upgraded one take the same path from version 2 on. Each
migration runs in one transaction with a row appended to ``schema_version``
(the old daemon read ``MAX(version)``, and so do we). A database newer than
this code is refused rather than guessed at.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from lobwife_server.core.timeutil import now_us, parse_legacy

log = logging.getLogger("lobwife.migrations")


def _script(conn: sqlite3.Connection, sql: str) -> None:
    """Run several statements inside the current transaction.

    (``executescript`` would COMMIT first, breaking the migration's atomicity.
    Our scripts hold no ``;`` inside literals, so splitting is safe.)
    """
    for statement in sql.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v1_legacy_base(conn: sqlite3.Connection) -> None:
    # The old daemon's first schema, verbatim in meaning (column names, types, defaults).
    _script(
        conn,
        """
        CREATE TABLE IF NOT EXISTS tasks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            slug TEXT,
            type TEXT NOT NULL DEFAULT 'swe',
            status TEXT NOT NULL DEFAULT 'queued',
            priority TEXT NOT NULL DEFAULT 'normal',
            model TEXT,
            assigned_to TEXT,
            repos TEXT,
            discord_thread_id TEXT,
            estimate_minutes INTEGER,
            requires_qa INTEGER NOT NULL DEFAULT 0,
            workflow TEXT,
            created_at TEXT NOT NULL DEFAULT (datetime('now')),
            updated_at TEXT NOT NULL DEFAULT (datetime('now')),
            queued_at TEXT NOT NULL DEFAULT (datetime('now')),
            assigned_at TEXT,
            completed_at TEXT
        );
        CREATE INDEX IF NOT EXISTS idx_tasks_status ON tasks(status);
        CREATE INDEX IF NOT EXISTS idx_tasks_type ON tasks(type);
        CREATE TABLE IF NOT EXISTS task_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id INTEGER NOT NULL REFERENCES tasks(id),
            event_type TEXT NOT NULL,
            detail TEXT,
            actor TEXT,
            created_at TEXT NOT NULL DEFAULT (datetime('now'))
        );
        CREATE INDEX IF NOT EXISTS idx_task_events_task_id ON task_events(task_id);
        CREATE TABLE IF NOT EXISTS job_state (
            name TEXT PRIMARY KEY,
            last_run TEXT,
            last_status TEXT,
            last_duration REAL,
            last_output TEXT,
            run_count INTEGER NOT NULL DEFAULT 0,
            fail_count INTEGER NOT NULL DEFAULT 0,
            enabled INTEGER NOT NULL DEFAULT 1
        );
        CREATE TABLE IF NOT EXISTS broker_tasks (
            task_id TEXT PRIMARY KEY,
            repos TEXT NOT NULL,
            lobster_type TEXT NOT NULL DEFAULT 'unknown',
            registered_at TEXT NOT NULL DEFAULT (datetime('now')),
            status TEXT NOT NULL DEFAULT 'active',
            token_count INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE IF NOT EXISTS token_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL,
            repos TEXT,
            action TEXT NOT NULL,
            created_at TEXT NOT NULL DEFAULT (datetime('now'))
        );
        CREATE INDEX IF NOT EXISTS idx_token_audit_task_id ON token_audit(task_id);
        """,
    )


def _v2_legacy_broker_columns(conn: sqlite3.Connection) -> None:
    have = {r[1] for r in conn.execute("PRAGMA table_info(tasks)")}
    for col, decl in (
        ("broker_repos", "TEXT"),
        ("broker_status", "TEXT"),
        ("token_count", "INTEGER NOT NULL DEFAULT 0"),
        ("broker_registered_at", "TEXT"),
    ):
        if col not in have:
            conn.execute(f"ALTER TABLE tasks ADD COLUMN {col} {decl}")


def _json_list(value: object) -> str | None:
    """The old daemon stored lists as JSON text, or a raw string when a client sent one."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = [value]
    else:
        parsed = [str(value)]
    if not isinstance(parsed, list):
        parsed = [parsed]
    items = [str(x) for x in parsed if x is not None and str(x) != ""]
    return json.dumps(items) if items else None


def _v3_typed_schema(conn: sqlite3.Connection) -> None:
    """Rebuild tasks and task_events with integer-microsecond UTC timestamps.

    The old text timestamps mixed three formats and were compared as strings,
    which sorted wrongly across formats. Values that cannot be parsed keep the
    row (a NOT NULL time falls back to the task's creation time, then to now).
    """
    now = now_us()
    conn.create_function("lw_ts", 1, parse_legacy, deterministic=True)
    conn.create_function("lw_list", 1, _json_list, deterministic=True)
    seq_row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'tasks'").fetchone()
    ev_seq_row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'task_events'").fetchone()
    _script(
        conn,
        """
        CREATE TABLE tasks_v3 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            slug TEXT,
            type TEXT NOT NULL DEFAULT 'swe',
            status TEXT NOT NULL DEFAULT 'queued',
            priority TEXT NOT NULL DEFAULT 'normal',
            model TEXT,
            assigned_to TEXT,
            repos TEXT,
            discord_thread_id TEXT,
            estimate_minutes INTEGER,
            requires_qa INTEGER NOT NULL DEFAULT 0,
            workflow TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            queued_at INTEGER,
            assigned_at INTEGER,
            completed_at INTEGER,
            broker_repos TEXT,
            broker_status TEXT,
            token_count INTEGER NOT NULL DEFAULT 0,
            broker_registered_at INTEGER,
            created_by TEXT,
            request_id TEXT
        );
        CREATE TABLE task_events_v3 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id INTEGER NOT NULL REFERENCES tasks(id),
            event_type TEXT NOT NULL,
            detail TEXT,
            actor TEXT,
            created_at INTEGER NOT NULL
        );
        """,
    )
    conn.execute(
        """
        INSERT INTO tasks_v3 (
            id, name, slug, type, status, priority, model, assigned_to, repos, discord_thread_id,
            estimate_minutes, requires_qa, workflow, created_at, updated_at, queued_at, assigned_at,
            completed_at, broker_repos, broker_status, token_count, broker_registered_at)
        SELECT id, COALESCE(name, ''), slug, COALESCE(type, 'swe'), COALESCE(status, 'queued'),
            COALESCE(priority, 'normal'), model, assigned_to, lw_list(repos), discord_thread_id,
            CAST(estimate_minutes AS INTEGER), CASE WHEN requires_qa THEN 1 ELSE 0 END, workflow,
            COALESCE(lw_ts(created_at), :now),
            COALESCE(lw_ts(updated_at), lw_ts(created_at), :now),
            lw_ts(queued_at), lw_ts(assigned_at), lw_ts(completed_at),
            lw_list(broker_repos), broker_status, COALESCE(token_count, 0), lw_ts(broker_registered_at)
        FROM tasks
        """,
        {"now": now},
    )
    conn.execute(
        """
        INSERT INTO task_events_v3 (id, task_id, event_type, detail, actor, created_at)
        SELECT id, task_id, event_type, detail, actor, COALESCE(lw_ts(created_at), :now) FROM task_events
        """,
        {"now": now},
    )
    _script(
        conn,
        """
        DROP TABLE task_events;
        DROP TABLE tasks;
        ALTER TABLE tasks_v3 RENAME TO tasks;
        ALTER TABLE task_events_v3 RENAME TO task_events;
        CREATE INDEX idx_tasks_status ON tasks(status, id, updated_at);
        CREATE INDEX idx_tasks_type ON tasks(type, id, updated_at);
        CREATE INDEX idx_tasks_assigned_to ON tasks(assigned_to, id, updated_at);
        CREATE INDEX idx_tasks_created_at ON tasks(created_at);
        CREATE INDEX idx_tasks_slug ON tasks(slug);
        CREATE UNIQUE INDEX idx_tasks_request_id ON tasks(request_id) WHERE request_id IS NOT NULL;
        CREATE INDEX idx_task_events_task_id ON task_events(task_id, id);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """,
    )
    # Ids are never reused: keep the old AUTOINCREMENT high-water marks.
    for name, row in (("tasks", seq_row), ("task_events", ev_seq_row)):
        if row is not None:
            conn.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?", (row[0], name))
            conn.execute(
                "INSERT INTO sqlite_sequence (name, seq) SELECT ?, ? WHERE NOT EXISTS "
                "(SELECT 1 FROM sqlite_sequence WHERE name = ?)",
                (name, row[0], name),
            )


def _v4_jobs(conn: sqlite3.Connection) -> None:
    """Jobs, their runs, and the legacy per-job counters with typed timestamps.

    ``jobs.definition`` is the serialized ``lobwife.v1.Job`` (the contract is the
    schema of a definition; new optional fields need no migration). ``paused``
    is the API's enable/disable, kept apart from the file's own ``enabled``.
    ``next_fire_at`` is the next slot to record; it advances in the same
    transaction that records a slot, so a restart never runs a slot twice.
    A slot is recorded once: the partial unique index on (job, slot, attempt)
    refuses a second scheduled or caught-up run of the same slot.
    """
    conn.create_function("lw_ts", 1, parse_legacy, deterministic=True)
    _script(
        conn,
        """
        CREATE TABLE jobs (
            name TEXT PRIMARY KEY,
            source TEXT NOT NULL,
            definition BLOB NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0,
            next_fire_at INTEGER,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        );
        CREATE TABLE job_runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_name TEXT NOT NULL,
            trigger TEXT NOT NULL,
            status TEXT NOT NULL,
            scheduled_at INTEGER,
            not_before INTEGER,
            attempt INTEGER NOT NULL DEFAULT 1,
            started_at INTEGER,
            finished_at INTEGER,
            duration REAL,
            exit_code INTEGER,
            pid INTEGER,
            pgid INTEGER,
            boot_id TEXT,
            output TEXT,
            output_truncated INTEGER NOT NULL DEFAULT 0,
            reason TEXT
        );
        CREATE UNIQUE INDEX idx_job_runs_slot ON job_runs(job_name, scheduled_at, attempt)
            WHERE trigger IN ('schedule', 'catch-up');
        CREATE INDEX idx_job_runs_job ON job_runs(job_name, id);
        CREATE INDEX idx_job_runs_open ON job_runs(status) WHERE status IN ('pending', 'running');
        CREATE INDEX idx_job_runs_finished ON job_runs(finished_at);
        CREATE TABLE job_state_v4 (
            name TEXT PRIMARY KEY,
            last_run INTEGER,
            last_status TEXT,
            last_duration REAL,
            last_output TEXT,
            run_count INTEGER NOT NULL DEFAULT 0,
            fail_count INTEGER NOT NULL DEFAULT 0,
            enabled INTEGER NOT NULL DEFAULT 1
        );
        INSERT INTO job_state_v4 (name, last_run, last_status, last_duration, last_output, run_count, fail_count,
                                  enabled)
            SELECT name, lw_ts(last_run), last_status, last_duration, last_output, COALESCE(run_count, 0),
                   COALESCE(fail_count, 0), COALESCE(enabled, 1)
            FROM job_state;
        DROP TABLE job_state;
        ALTER TABLE job_state_v4 RENAME TO job_state
        """,
    )


def _v5_request_fingerprints(conn: sqlite3.Connection) -> None:
    """The fingerprint of the CreateTask request that used a task's request_id.

    A retry with the same request_id and the same request returns the first task; the
    same request_id with a different request is refused (ALREADY_EXISTS). Tasks created
    before this migration have no fingerprint (NULL), and a retry of theirs is taken
    as the same request, as before.
    """
    conn.execute("ALTER TABLE tasks ADD COLUMN request_hash BLOB")


Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "legacy base schema", _v1_legacy_base),
    (2, "legacy broker columns", _v2_legacy_broker_columns),
    (3, "typed timestamps, request ids, meta", _v3_typed_schema),
    (4, "jobs, job runs, typed job state", _v4_jobs),
    (5, "request fingerprints of task creates", _v5_request_fingerprints),
]
LATEST = MIGRATIONS[-1][0]


class MigrationError(RuntimeError):
    """The database cannot be brought to this version (newer than the code, or a step failed): start-up stops."""

    pass


def current_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to LATEST. Returns the number of migrations applied."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER NOT NULL, applied_at TEXT NOT NULL DEFAULT (datetime('now')))"
    )
    version = current_version(conn)
    if version > LATEST:
        raise MigrationError(
            f"database schema version {version} is newer than this lobwife supports ({LATEST}); refusing to start"
        )
    applied = 0
    for number, description, fn in MIGRATIONS:
        if number <= version:
            continue
        # Table rebuilds need foreign keys off, and that pragma is ignored
        # inside a transaction, so it is switched around it.
        conn.execute("PRAGMA foreign_keys = OFF")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                fn(conn)
                problems = conn.execute("PRAGMA foreign_key_check").fetchall()
                if problems:
                    log.warning(
                        "migration %d: %d rows with dangling foreign keys kept as they were", number, len(problems)
                    )
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute("PRAGMA foreign_keys = ON")
        log.info("applied migration %d: %s", number, description)
        applied += 1
    return applied


def import_legacy_json(conn: sqlite3.Connection, state_dir: Path) -> list[str]:
    """Import the oldest daemon's JSON state files, once; each is renamed ``*.json.migrated``.

    Same rules as the old daemon's own import: existing rows win (INSERT OR IGNORE).
    """
    done: list[str] = []
    importers: list[tuple[str, Callable[[object], None]]] = []

    def jobs(data: object) -> None:
        assert isinstance(data, dict)
        for name, st in data.items():
            st = st if isinstance(st, dict) else {}
            conn.execute(
                "INSERT OR IGNORE INTO job_state (name, last_run, last_status, last_duration, last_output,"
                " run_count, fail_count, enabled) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    parse_legacy(st.get("last_run")),
                    st.get("last_status"),
                    st.get("last_duration"),
                    st.get("last_output"),
                    int(st.get("run_count") or 0),
                    int(st.get("fail_count") or 0),
                    0 if st.get("enabled") is False else 1,
                ),
            )

    def broker(data: object) -> None:
        assert isinstance(data, dict)
        for ref, reg in data.items():
            reg = reg if isinstance(reg, dict) else {}
            conn.execute(
                "INSERT OR IGNORE INTO broker_tasks (task_id, repos, lobster_type, registered_at, status, token_count)"
                " VALUES (?, ?, ?, COALESCE(?, datetime('now')), ?, ?)",
                (
                    ref,
                    json.dumps(list(reg.get("repos") or [])),
                    reg.get("lobster_type") or "unknown",
                    reg.get("registered_at"),
                    reg.get("status") or "active",
                    int(reg.get("token_count") or 0),
                ),
            )

    def audit(data: object) -> None:
        assert isinstance(data, list)
        for entry in data:
            entry = entry if isinstance(entry, dict) else {}
            conn.execute(
                "INSERT INTO token_audit (task_id, repos, action, created_at) VALUES (?, ?, ?,"
                " COALESCE(?, datetime('now')))",
                (
                    entry.get("task_id") or "",
                    json.dumps(list(entry.get("repos") or [])),
                    entry.get("action") or "",
                    entry.get("timestamp"),
                ),
            )

    importers = [("jobs.json", jobs), ("tasks.json", broker), ("token-audit.json", audit)]
    for filename, importer in importers:
        path = state_dir / filename
        if not path.exists():
            continue
        try:
            data = json.loads(path.read_text())
            conn.execute("BEGIN IMMEDIATE")
            try:
                importer(data)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except (ValueError, AssertionError, TypeError, sqlite3.Error) as e:
            # Keep the file where it is so nothing is lost; say why once per start.
            log.error("could not import %s (left in place): %s", path, e)
            continue
        path.rename(path.with_name(filename + ".migrated"))
        log.info("imported %s", path)
        done.append(filename)
    return done
