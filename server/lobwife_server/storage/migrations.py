"""Versioned, transactional, forward-only schema migrations.

Versions 1 and 2 are the old daemon's schema (``lobmob.db``), so a fresh
database and an upgraded one take the same path from version 2 on. Each
migration runs in one transaction with a row appended to ``schema_version``
(the old daemon read ``MAX(version)``, and so do we). A database newer than
this code is refused rather than guessed at.

The upgrade from the old daemon loses nothing. A value it stored that this
version cannot convert (a timestamp in no format it reads, an estimate that is
not a number) is kept verbatim in ``legacy_import_issues``, next to what the
typed column holds instead, logged as a warning naming the row and field, and
recorded on the task as a ``legacy_value_kept`` event; :func:`kept_values`
lists them. Migrations 3 and 4 keep what they used to drop (and say so); a
database past them never runs them again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


def _json_list_or_empty(value: object) -> str:
    """A list field of the JSON state files as stored: a string is one item (not its characters)."""
    if isinstance(value, list | tuple):
        return json.dumps([str(x) for x in value if x is not None and str(x) != ""])
    return _json_list(json.dumps(value) if value is not None and not isinstance(value, str) else value) or "[]"


_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


def _legacy_number(value: object) -> int | float | None:
    """An estimate as the old daemon stored it (whatever a client sent): a number, or None when it is none.

    Whole numbers stay integers and fractions stay fractions (``12.5``); numeric text is
    read as its number.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if value == value else None
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        x = float(value)
        if x != x or x in (float("inf"), float("-inf")):
            return None
        return int(x) if x.is_integer() and abs(x) < 2**53 else x
    return None


#: Where the upgrade keeps a value it could not convert, verbatim (``raw_value`` has no
#: type, so SQLite stores it exactly as it was: text, number or blob).
ISSUES_TABLE = """
CREATE TABLE IF NOT EXISTS legacy_import_issues (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    table_name TEXT NOT NULL,
    row_key TEXT NOT NULL,
    field TEXT NOT NULL,
    raw_value,
    note TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
)
"""

#: Warnings logged per start; the rest are counted (the table has them all).
MAX_WARNINGS = 50
_warned = 0


@dataclass(frozen=True)
class KeptValue:
    """A value of the old daemon's that the upgrade could not convert, kept verbatim."""

    source: str  # "lobmob.db" or the JSON state file it came from
    table: str
    key: str  # the row: a task number, an event id, a job name
    field: str
    raw: object  # exactly as stored
    note: str  # what the typed column holds instead

    def __str__(self) -> str:
        return f"{self.table} {self.key} {self.field}: kept {_shown(self.raw)} verbatim ({self.note})"


def _shown(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 80 else text[:77] + "..."


def _keep(conn: sqlite3.Connection, kept: KeptValue, now: int) -> int:
    """Record a value kept verbatim, and say so once in the log (up to MAX_WARNINGS per start)."""
    global _warned
    conn.execute(ISSUES_TABLE)
    cur = conn.execute(
        "INSERT INTO legacy_import_issues (source, table_name, row_key, field, raw_value, note, recorded_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (kept.source, kept.table, kept.key, kept.field, kept.raw, kept.note, now),
    )
    _warned += 1
    if _warned <= MAX_WARNINGS:
        log.warning("upgrade from the old daemon (%s): %s", kept.source, kept)
    elif _warned == MAX_WARNINGS + 1:
        log.warning("upgrade from the old daemon: more values kept verbatim; all are in legacy_import_issues")
    assert cur.lastrowid is not None
    return cur.lastrowid


def _unreadable(
    conn: sqlite3.Connection, table: str, key: str, checks: Iterable[tuple[str, str, str]]
) -> list[tuple[str, str, object, str]]:
    """(row key, field, raw value, note) of each value that ``check(field)`` (a SQL function) cannot convert."""
    found: list[tuple[str, str, object, str]] = []
    for field, fn, note in checks:
        rows = conn.execute(
            f"SELECT {key}, {field} FROM {table} WHERE {field} IS NOT NULL AND {fn}({field}) IS NULL ORDER BY {key}"
        )
        found.extend((str(k), field, raw, note) for k, raw in rows)
    return found


def kept_values(conn: sqlite3.Connection) -> list[KeptValue]:
    """Every value the upgrade kept verbatim, oldest first (empty when nothing was)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'legacy_import_issues'"
    ).fetchone()
    if not exists:
        return []
    rows = conn.execute(
        "SELECT source, table_name, row_key, field, raw_value, note FROM legacy_import_issues ORDER BY id"
    )
    return [KeptValue(*r) for r in rows]


_NOT_A_TIME = "not a time lobwife can read"
_TASK_TIME_CHECKS = (
    ("created_at", "lw_ts", f"{_NOT_A_TIME}; created_at shows the time of the upgrade"),
    ("updated_at", "lw_ts", f"{_NOT_A_TIME}; updated_at shows created_at"),
    ("queued_at", "lw_ts", f"{_NOT_A_TIME}; queued_at is empty"),
    ("assigned_at", "lw_ts", f"{_NOT_A_TIME}; assigned_at is empty"),
    ("completed_at", "lw_ts", f"{_NOT_A_TIME}; completed_at is empty"),
    ("broker_registered_at", "lw_ts", f"{_NOT_A_TIME}; broker_registered_at is empty"),
    ("estimate_minutes", "lw_number", "not a number; estimate_minutes is empty"),
)


def _v3_typed_schema(conn: sqlite3.Connection) -> None:
    """Rebuild tasks and task_events with integer-microsecond UTC timestamps.

    The old text timestamps mixed formats and were compared as strings, which
    sorted wrongly across formats. A value that cannot be converted keeps its row
    (a NOT NULL time falls back to the task's creation time, then to now) and is
    kept verbatim (see the module doc). Estimates keep their fractions.
    """
    now = now_us()
    conn.create_function("lw_ts", 1, parse_legacy, deterministic=True)
    conn.create_function("lw_list", 1, _json_list, deterministic=True)
    conn.create_function("lw_number", 1, _legacy_number, deterministic=True)
    task_issues = _unreadable(conn, "tasks", "id", _TASK_TIME_CHECKS)
    event_issues = _unreadable(
        conn, "task_events", "id", [("created_at", "lw_ts", f"{_NOT_A_TIME}; created_at shows the time of the upgrade")]
    )
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
            lw_number(estimate_minutes), CASE WHEN requires_qa THEN 1 ELSE 0 END, workflow,
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
    for key, field, raw, note in task_issues:
        issue = _keep(conn, KeptValue("lobmob.db", "tasks", key, field, raw, note), now)
        conn.execute(
            "INSERT INTO task_events (task_id, event_type, detail, actor, created_at)"
            " VALUES (?, 'legacy_value_kept', ?, 'lobwife-upgrade', ?)",
            (
                int(key),
                f"{field}: the old daemon's value {_shown(raw)} is kept verbatim (legacy_import_issues "
                f"{issue}): {note}",
                now,
            ),
        )
    for key, field, raw, note in event_issues:
        _keep(conn, KeptValue("lobmob.db", "task_events", key, field, raw, note), now)


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
    now = now_us()
    for key, field, raw, note in _unreadable(
        conn, "job_state", "name", [("last_run", "lw_ts", f"{_NOT_A_TIME}; last_run is empty")]
    ):
        _keep(conn, KeptValue("lobmob.db", "job_state", key, field, raw, note), now)
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


def _v6_fractional_estimates(conn: sqlite3.Connection) -> None:
    """``tasks.estimate_minutes`` as REAL: the legacy contract's estimate is a JSON number (``12.5``).

    The column was declared INTEGER, and migration 3 used to truncate the old
    daemon's fractions. The column is replaced by a REAL one holding the same
    values (SQLite rewrites the table once). Also the table of values the upgrade
    kept verbatim, for databases that passed migration 3 before it had one.
    """
    conn.execute(ISSUES_TABLE)
    _script(
        conn,
        """
        ALTER TABLE tasks ADD COLUMN estimate_minutes_real REAL;
        UPDATE tasks SET estimate_minutes_real = estimate_minutes WHERE estimate_minutes IS NOT NULL;
        ALTER TABLE tasks DROP COLUMN estimate_minutes;
        ALTER TABLE tasks RENAME COLUMN estimate_minutes_real TO estimate_minutes
        """,
    )


def _v7_broker_audit(conn: sqlite3.Connection) -> None:
    """The broker's typed columns, beside the old daemon's (every existing row is kept as it is).

    ``broker_tasks``: ``task_number`` (the task the reference matched when it registered),
    ``last_used_at`` (microseconds; the idle expiry's clock), ``registered_by``. ``token_audit``:
    ``identity`` (who asked), ``token_sha256`` (a prefix of the token's SHA-256, never the token),
    ``reused`` (handed out from the cache), ``detail`` (why, for a refusal or revocation). The old
    daemon's text timestamps stay text: its rows, and those the JSON import adds after the
    migrations, are read as they are.
    """
    _script(
        conn,
        """
        ALTER TABLE broker_tasks ADD COLUMN task_number INTEGER;
        ALTER TABLE broker_tasks ADD COLUMN last_used_at INTEGER;
        ALTER TABLE broker_tasks ADD COLUMN registered_by TEXT;
        ALTER TABLE token_audit ADD COLUMN identity TEXT;
        ALTER TABLE token_audit ADD COLUMN token_sha256 TEXT;
        ALTER TABLE token_audit ADD COLUMN reused INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE token_audit ADD COLUMN detail TEXT
        """,
    )


def _v8_broker_task_index(conn: sqlite3.Connection) -> None:
    """An index on ``broker_tasks.task_number``: a task's end finds its registrations by it (and the
    auth directory counts a task's active ones on every task-token call)."""
    _script(conn, "CREATE INDEX IF NOT EXISTS broker_tasks_task_number ON broker_tasks(task_number)")


def _v9_audit_findings(conn: sqlite3.Connection) -> None:
    """Audit findings (audit_store): one row per fingerprint, their events, the request ids of reports."""
    _script(
        conn,
        """
        CREATE TABLE audit_findings (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            fingerprint TEXT NOT NULL,
            category TEXT NOT NULL,
            severity INTEGER NOT NULL,
            title TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            subject TEXT NOT NULL DEFAULT '',
            task_number INTEGER,
            source TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved', 'wont_fix')),
            resolution TEXT NOT NULL DEFAULT '',
            note TEXT NOT NULL DEFAULT '',
            resolved_by TEXT,
            report_count INTEGER NOT NULL DEFAULT 1,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            last_seen_at INTEGER NOT NULL,
            resolved_at INTEGER
        );
        CREATE UNIQUE INDEX audit_findings_fingerprint ON audit_findings(fingerprint);
        CREATE INDEX audit_findings_status ON audit_findings(status, id);
        CREATE INDEX audit_findings_category ON audit_findings(category, id);
        CREATE INDEX audit_findings_subject ON audit_findings(subject, id);
        CREATE INDEX audit_findings_task ON audit_findings(task_number, id) WHERE task_number IS NOT NULL;
        CREATE INDEX audit_findings_seen ON audit_findings(last_seen_at);
        CREATE TABLE audit_finding_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            finding_id INTEGER NOT NULL REFERENCES audit_findings(id),
            kind TEXT NOT NULL,
            actor TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT '',
            created_at INTEGER NOT NULL
        );
        CREATE INDEX audit_finding_events_finding ON audit_finding_events(finding_id, id);
        CREATE TABLE audit_requests (
            request_id TEXT PRIMARY KEY,
            finding_id INTEGER NOT NULL REFERENCES audit_findings(id),
            request_fp BLOB NOT NULL,
            created INTEGER NOT NULL,
            reopened INTEGER NOT NULL,
            created_at INTEGER NOT NULL
        )
        """,
    )


def _v10_cost_events(conn: sqlite3.Connection) -> None:
    """Cost events (cost_store), their two rollups (per hour x model; per day x task), and the record of
    reprices."""
    _script(
        conn,
        """
        CREATE TABLE cost_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id TEXT,
            request_fp BLOB,
            task_number INTEGER,
            task_type TEXT NOT NULL DEFAULT '',
            provider TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cache_read_tokens INTEGER NOT NULL,
            cache_write_tokens INTEGER NOT NULL,
            reasoning_tokens INTEGER NOT NULL,
            caller_cost_usd REAL,
            computed_cost_usd REAL,
            price_id TEXT NOT NULL DEFAULT '',
            cost_note TEXT NOT NULL DEFAULT '',
            occurred_at INTEGER NOT NULL,
            recorded_at INTEGER NOT NULL
        );
        CREATE UNIQUE INDEX cost_events_request ON cost_events(request_id) WHERE request_id IS NOT NULL;
        CREATE INDEX cost_events_occurred ON cost_events(occurred_at);
        CREATE INDEX cost_events_task ON cost_events(task_number, id) WHERE task_number IS NOT NULL;
        CREATE INDEX cost_events_model ON cost_events(model, id);
        CREATE TABLE cost_rollup_hour (
            hour INTEGER NOT NULL,
            model TEXT NOT NULL,
            provider TEXT NOT NULL,
            calls INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cache_read_tokens INTEGER NOT NULL,
            cache_write_tokens INTEGER NOT NULL,
            reasoning_tokens INTEGER NOT NULL,
            cost_usd REAL NOT NULL,
            unpriced_calls INTEGER NOT NULL,
            PRIMARY KEY (hour, model, provider)
        ) WITHOUT ROWID;
        CREATE TABLE cost_rollup_task_day (
            day INTEGER NOT NULL,
            task_number INTEGER NOT NULL,
            task_type TEXT NOT NULL,
            calls INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cache_read_tokens INTEGER NOT NULL,
            cache_write_tokens INTEGER NOT NULL,
            reasoning_tokens INTEGER NOT NULL,
            cost_usd REAL NOT NULL,
            unpriced_calls INTEGER NOT NULL,
            PRIMARY KEY (day, task_number, task_type)
        ) WITHOUT ROWID;
        CREATE TABLE cost_reprices (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id INTEGER NOT NULL REFERENCES cost_events(id),
            old_cost_usd REAL,
            new_cost_usd REAL,
            old_price_id TEXT NOT NULL,
            new_price_id TEXT NOT NULL,
            actor TEXT NOT NULL,
            at INTEGER NOT NULL
        )
        """,
    )
    # The rollups move with the events, inside the statement that writes the event: a record is one
    # statement, and no code path can forget them. Times are after 2000 (the service refuses earlier
    # ones), so integer division is the floor. A trigger holds `;`, so each runs on its own.
    sums = "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens"
    news = ", ".join(f"NEW.{c}" for c in sums.split(", "))
    adds = ", ".join(f"{c} = {c} + excluded.{c}" for c in [*sums.split(", "), "cost_usd", "unpriced_calls"])
    cost = "COALESCE(NEW.caller_cost_usd, NEW.computed_cost_usd, 0)"
    unpriced = "(NEW.caller_cost_usd IS NULL AND NEW.computed_cost_usd IS NULL)"
    old_cost = "COALESCE(OLD.caller_cost_usd, OLD.computed_cost_usd, 0)"
    old_unpriced = "(OLD.caller_cost_usd IS NULL AND OLD.computed_cost_usd IS NULL)"
    hour_key = "NEW.occurred_at / 3600000000, NEW.model, NEW.provider"
    day_key = "NEW.occurred_at / 86400000000, COALESCE(NEW.task_number, 0), NEW.task_type"
    conn.execute(
        f"""
        CREATE TRIGGER cost_events_rollup AFTER INSERT ON cost_events BEGIN
            INSERT INTO cost_rollup_hour (hour, model, provider, calls, {sums}, cost_usd, unpriced_calls)
            VALUES ({hour_key}, 1, {news}, {cost}, {unpriced})
            ON CONFLICT (hour, model, provider) DO UPDATE SET calls = calls + 1, {adds};
            INSERT INTO cost_rollup_task_day (day, task_number, task_type, calls, {sums}, cost_usd, unpriced_calls)
            VALUES ({day_key}, 1, {news}, {cost}, {unpriced})
            ON CONFLICT (day, task_number, task_type) DO UPDATE SET calls = calls + 1, {adds};
        END
        """
    )
    change = (
        f"cost_usd = cost_usd + ({cost} - {old_cost}), unpriced_calls = unpriced_calls + ({unpriced} - {old_unpriced})"
    )
    conn.execute(
        f"""
        CREATE TRIGGER cost_events_reprice AFTER UPDATE OF computed_cost_usd ON cost_events BEGIN
            UPDATE cost_rollup_hour SET {change}
            WHERE hour = NEW.occurred_at / 3600000000 AND model = NEW.model AND provider = NEW.provider;
            UPDATE cost_rollup_task_day SET {change}
            WHERE day = NEW.occurred_at / 86400000000 AND task_number = COALESCE(NEW.task_number, 0)
            AND task_type = NEW.task_type;
        END
        """
    )


def _v11_budgets(conn: sqlite3.Connection) -> None:
    """``tasks.budget_usd`` (a task's own budget; NULL: its type's default), and the task rollup by task:
    a record's budget check sums one task's days (``cost_rollup_task_day``'s key starts with the day)."""
    conn.execute("ALTER TABLE tasks ADD COLUMN budget_usd REAL")
    conn.execute("CREATE INDEX cost_rollup_task_day_by_task ON cost_rollup_task_day (task_number)")


Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "legacy base schema", _v1_legacy_base),
    (2, "legacy broker columns", _v2_legacy_broker_columns),
    (3, "typed timestamps, request ids, meta", _v3_typed_schema),
    (4, "jobs, job runs, typed job state", _v4_jobs),
    (5, "request fingerprints of task creates", _v5_request_fingerprints),
    (6, "fractional estimates, values kept verbatim", _v6_fractional_estimates),
    (7, "broker: typed registration and audit columns", _v7_broker_audit),
    (8, "broker: registrations by task", _v8_broker_task_index),
    (9, "audit findings", _v9_audit_findings),
    (10, "cost events and their rollups", _v10_cost_events),
    (11, "task budgets", _v11_budgets),
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


def _set_aside(path: Path) -> Path:
    """Rename an imported ``X.json`` to ``X.json.migrated``, or ``.migrated.1``, ``.2``... when that is taken.

    The old daemon left its own ``X.json.migrated`` files; one is never overwritten.
    A hard link is the no-clobber rename (it fails if the name exists); where the
    file system has none, a checked rename.
    """
    for n in range(10_000):
        target = path.with_name(path.name + ".migrated" + (f".{n}" if n else ""))
        if target.exists() or target.is_symlink():
            continue
        try:
            os.link(path, target)
        except FileExistsError:
            continue
        except OSError:
            if target.exists():
                continue
            path.rename(target)
            return target
        path.unlink()
        return target
    raise OSError(f"no free name to set {path} aside")


def import_legacy_json(conn: sqlite3.Connection, state_dir: Path) -> list[str]:
    """Import the oldest daemon's JSON state files, once; returns the names of the files imported.

    Same rules as the old daemon's own import: rows already in the database win
    (INSERT OR IGNORE), a job is paused when its ``enabled`` is false-ish (as the old
    daemon read it), lists are JSON text. A ``last_run`` that is not a time is kept
    verbatim (see :func:`kept_values`). Each file imported is set aside as
    ``X.json.migrated`` (``X.json.migrated.1`` ... when the old daemon left one of
    that name already: it is never overwritten).
    """
    done: list[str] = []
    now = now_us()

    def jobs(data: object) -> None:
        assert isinstance(data, dict)
        for name, st in data.items():
            st = st if isinstance(st, dict) else {}
            raw_last = st.get("last_run")
            last = parse_legacy(raw_last)
            cur = conn.execute(
                "INSERT OR IGNORE INTO job_state (name, last_run, last_status, last_duration, last_output,"
                " run_count, fail_count, enabled) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    last,
                    st.get("last_status"),
                    st.get("last_duration"),
                    st.get("last_output"),
                    int(st.get("run_count") or 0),
                    int(st.get("fail_count") or 0),
                    # The old daemon's own reading: `1 if state.get("enabled", True) else 0`.
                    1 if st.get("enabled", True) else 0,
                ),
            )
            if cur.rowcount and last is None and raw_last is not None:
                raw = raw_last if isinstance(raw_last, str | int | float) else json.dumps(raw_last)
                _keep(conn, KeptValue("jobs.json", "job_state", str(name), "last_run", raw, _NOT_A_TIME), now)

    def broker(data: object) -> None:
        assert isinstance(data, dict)
        for ref, reg in data.items():
            reg = reg if isinstance(reg, dict) else {}
            registered = reg.get("registered_at")
            conn.execute(
                "INSERT OR IGNORE INTO broker_tasks (task_id, repos, lobster_type, registered_at, status, token_count)"
                " VALUES (?, ?, ?, COALESCE(?, datetime('now')), ?, ?)",
                (
                    ref,
                    _json_list_or_empty(reg.get("repos")),
                    reg.get("lobster_type") or "unknown",
                    # Kept as written: the column is the old daemon's text (the broker reads it).
                    registered if registered is None or isinstance(registered, str) else json.dumps(registered),
                    reg.get("status") or "active",
                    int(reg.get("token_count") or 0),
                ),
            )

    def audit(data: object) -> None:
        assert isinstance(data, list)
        for entry in data:
            entry = entry if isinstance(entry, dict) else {}
            at = entry.get("timestamp")
            conn.execute(
                "INSERT INTO token_audit (task_id, repos, action, created_at) VALUES (?, ?, ?,"
                " COALESCE(?, datetime('now')))",
                (
                    entry.get("task_id") or "",
                    _json_list_or_empty(entry.get("repos")),
                    entry.get("action") or "",
                    at if at is None or isinstance(at, str) else json.dumps(at),
                ),
            )

    importers: list[tuple[str, Callable[[object], None]]] = [
        ("jobs.json", jobs),
        ("tasks.json", broker),
        ("token-audit.json", audit),
    ]
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
        try:
            target = _set_aside(path)
        except OSError as e:
            # Imported, but still in place: the next start imports it again (rows already in win).
            log.error("imported %s but could not set it aside: %s", path, e)
        else:
            if target.name != filename + ".migrated":
                log.warning("imported %s; %s.migrated exists already, so it is now %s", path, filename, target.name)
            else:
                log.info("imported %s; it is now %s", path, target.name)
        done.append(filename)
    return done
