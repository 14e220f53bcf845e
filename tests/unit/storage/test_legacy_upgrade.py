"""The upgrade from the old daemon's state folder loses nothing (issue 10, item 3).

Each test builds the folder as the old daemon left it (tests/legacy_state.py):
``lobmob.db`` with its own schema (version 2), its text timestamps as its writers
and clients stored them, and the older JSON state files beside it. The upgrade is the
one the server runs at start (copy, migrate, import the JSON files) on a real SQLite file.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from lobwife.v1 import jobs_pb2
from lobwife_server.core.timeutil import parse_legacy
from lobwife_server.storage import broker_store, job_store, migrations, task_store
from lobwife_server.storage.database import connect
from lobwife_server.storage.files import adopt_legacy_database
from tests.legacy_state import old_daemon_db, old_task

FEB16_17H = 1771261200 * 1_000_000  # 2026-02-16T17:00:00Z in microseconds


def upgrade(state: Path) -> sqlite3.Connection:
    """What the server does at start: copy lobmob.db, migrate, import the JSON files. Returns the connection."""
    db_path = state / "lobwife.db"
    adopt_legacy_database(state, db_path)
    conn = connect(db_path)
    migrations.migrate(conn)
    migrations.import_legacy_json(conn, state)
    return conn


def job(name: str) -> jobs_pb2.Job:
    return jobs_pb2.Job(name=name, command=["true"], cron="*/5 * * * *", enabled=True)


def paused(conn: sqlite3.Connection, name: str) -> bool:
    row = job_store.get_job(conn, name)
    assert row is not None
    return row.paused


# --------------------------------------------------------------------------- paused jobs stay paused


def test_a_job_paused_in_the_old_database_stays_paused_through_restarts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old_daemon_db(
        state,
        ("INSERT INTO job_state (name, last_status, run_count, enabled) VALUES ('task-manager', 'success', 12, 0)", ()),
        ("INSERT INTO job_state (name, run_count, enabled) VALUES ('review-prs', 3, 1)", ()),
    )
    conn = upgrade(state)
    # The first start defines the jobs (jobs file): the operator's pause is taken over.
    job_store.upsert_job(conn, job("task-manager"), "file", 1)
    job_store.upsert_job(conn, job("review-prs"), "file", 1)
    assert paused(conn, "task-manager") and not paused(conn, "review-prs")
    # A later start, with the definition changed in the file: still paused (and the counters kept).
    changed = job("task-manager")
    changed.cron = "*/10 * * * *"
    job_store.upsert_job(conn, changed, "file", 2)
    assert paused(conn, "task-manager")
    assert job_store.job_state(conn)["task-manager"][4] == 12
    # Once the operator resumes it, that holds: the old pause was taken over once, not re-applied.
    job_store.set_paused(conn, "task-manager", False, 3)
    job_store.delete_job(conn, "task-manager")
    job_store.upsert_job(conn, job("task-manager"), "file", 4)
    assert not paused(conn, "task-manager")


@pytest.mark.parametrize("enabled", [False, 0])
def test_a_job_disabled_in_jobs_json_stays_paused(tmp_path: Path, enabled: object) -> None:
    state = tmp_path / "state"
    old_daemon_db(state)
    (state / "jobs.json").write_text(
        json.dumps(
            {
                "flush-logs": {"enabled": enabled, "run_count": 4, "last_run": "2026-02-16T17:00:00+00:00"},
                "status-reporter": {"run_count": 1},
            }
        )
    )
    conn = upgrade(state)
    job_store.upsert_job(conn, job("flush-logs"), "file", 1)
    job_store.upsert_job(conn, job("status-reporter"), "file", 1)
    assert paused(conn, "flush-logs") and not paused(conn, "status-reporter")
    assert job_store.job_state(conn)["flush-logs"][0] == FEB16_17H


# --------------------------------------------------------------------------- fractional estimates


def test_a_fractional_estimate_stays_fractional(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old_daemon_db(
        state,
        old_task(1, estimate_minutes=12.5),
        old_task(2, estimate_minutes="7.25"),  # a client sent text; INTEGER affinity made it 7.25
        old_task(3, estimate_minutes=45),
        old_task(4),
    )
    conn = upgrade(state)
    assert conn.execute("SELECT type FROM pragma_table_info('tasks') WHERE name = 'estimate_minutes'").fetchone() == (
        "REAL",
    )
    t1, t2, t3, t4 = (task_store.get_task(conn, n) for n in (1, 2, 3, 4))
    assert t1 is not None and t2 is not None and t3 is not None and t4 is not None
    assert t1.estimate_minutes_exact == 12.5 and t1.estimate_minutes == 12  # the deprecated int32: truncated
    assert t2.estimate_minutes_exact == 7.25
    assert t3.estimate_minutes_exact == 45 and t3.estimate_minutes == 45
    assert not t4.HasField("estimate_minutes_exact") and not t4.HasField("estimate_minutes")
    assert migrations.kept_values(conn) == []


def test_a_database_past_migration_3_gets_a_real_estimate_column(tmp_path: Path) -> None:
    # A lobwife database at version 5 (estimate_minutes INTEGER): migration 6 keeps every value.
    conn = sqlite3.connect(tmp_path / "lobwife.db", isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT)")
    for number, _, fn in migrations.MIGRATIONS[:5]:
        fn(conn)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
    conn.execute("INSERT INTO tasks (name, estimate_minutes, created_at, updated_at) VALUES ('a', 30, 1, 1)")
    conn.execute("INSERT INTO tasks (name, created_at, updated_at) VALUES ('b', 1, 1)")
    assert migrations.migrate(conn) == len(migrations.MIGRATIONS) - 5
    a, b = task_store.get_task(conn, 1), task_store.get_task(conn, 2)
    assert a is not None and a.estimate_minutes_exact == 30 and a.estimate_minutes == 30
    assert b is not None and not b.HasField("estimate_minutes_exact")
    assert conn.execute("SELECT typeof(estimate_minutes) FROM tasks WHERE id = 1").fetchone() == ("real",)


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("2026-02-16 17:00:00", FEB16_17H),  # SQLite datetime('now')
        ("2026-02-16T17:00:00.123456+00:00", FEB16_17H + 123456),  # isoformat()
        ("2026-02-16T17:00:00.000Z", FEB16_17H),  # toISOString()
        ("Mon, 16 Feb 2026 17:00:00 GMT", FEB16_17H),  # RFC 1123: HTTP dates, toUTCString()
        ("Mon, 16 Feb 2026 18:00:00 +0100", FEB16_17H),  # RFC 2822: date -R
        ("Mon Feb 16 17:00:00 UTC 2026", FEB16_17H),  # date
        ("2026-02-16 17:00:00 UTC", FEB16_17H),
        ("1771261200", FEB16_17H),  # epoch seconds as text (a JSON number in a TEXT column)
        ("1771261200.5", FEB16_17H + 500_000),
        ("1771261200000", FEB16_17H),  # epoch milliseconds as text
        (1771261200, FEB16_17H),
    ],
)
def test_every_timestamp_format_the_old_daemon_stored_is_parsed(tmp_path: Path, stored: object, expected: int) -> None:
    assert parse_legacy(stored) == expected
    state = tmp_path / "state"
    old_daemon_db(
        state,
        old_task(1, created_at=stored, updated_at=stored, queued_at=stored, assigned_at=stored, completed_at=stored),
        ("INSERT INTO task_events (task_id, event_type, created_at) VALUES (1, 'created', ?)", (stored,)),
        ("INSERT INTO job_state (name, last_run) VALUES ('task-manager', ?)", (stored,)),
    )
    conn = upgrade(state)
    t = task_store.get_task(conn, 1)
    assert t is not None
    for field in ("created_at", "updated_at", "queued_at", "assigned_at", "completed_at"):
        ts = getattr(t, field)
        assert ts.seconds * 1_000_000 + ts.nanos // 1000 == expected, field
    assert conn.execute("SELECT created_at FROM task_events").fetchone() == (expected,)
    assert job_store.job_state(conn)["task-manager"][0] == expected
    assert migrations.kept_values(conn) == []


@pytest.mark.parametrize("stored", ["soon", "Tue Feb 16 17:00:00 CET 2026", "2026-02-30 12:00:00", "-"])
def test_an_unreadable_timestamp_is_kept_verbatim_and_reported(
    tmp_path: Path, stored: str, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    old_daemon_db(
        state,
        old_task(7, created_at="2026-02-16 17:00:00", assigned_at=stored, completed_at="2026-02-16 18:00:00"),
        old_task(8, created_at=stored, updated_at=stored),
        ("INSERT INTO task_events (id, task_id, event_type, created_at) VALUES (3, 7, 'note', ?)", (stored,)),
        ("INSERT INTO job_state (name, last_run) VALUES ('review-prs', ?)", (stored,)),
    )
    (state / "jobs.json").write_text(json.dumps({"flush-logs": {"last_run": stored}}))
    with caplog.at_level(logging.WARNING, logger="lobwife.migrations"):
        conn = upgrade(state)
    kept = {(k.table, k.key, k.field): k for k in migrations.kept_values(conn)}
    assert set(kept) == {
        ("tasks", "7", "assigned_at"),
        ("tasks", "8", "created_at"),
        ("tasks", "8", "updated_at"),
        ("task_events", "3", "created_at"),
        ("job_state", "review-prs", "last_run"),
        ("job_state", "flush-logs", "last_run"),
    }
    assert all(k.raw == stored for k in kept.values()), "kept verbatim"
    assert kept[("job_state", "flush-logs", "last_run")].source == "jobs.json"
    assert conn.execute("SELECT typeof(raw_value) FROM legacy_import_issues LIMIT 1").fetchone() == ("text",)
    # The row is kept, with the rest of its values; the unreadable one is empty (or a stated fallback).
    t7 = task_store.get_task(conn, 7)
    assert t7 is not None and not t7.HasField("assigned_at") and t7.completed_at.seconds == 1771264800
    t8 = task_store.get_task(conn, 8)
    assert t8 is not None and t8.created_at.seconds > 1771261200 and t8.updated_at == t8.created_at
    # Reported: on the task's trail, and in the log naming the task and the field.
    events = task_store.list_events(conn, 7, None, 10)
    note = [e for e in events if e.event_type == "legacy_value_kept"]
    assert len(note) == 1 and note[0].detail.startswith("assigned_at: ") and repr(stored) in note[0].detail
    assert note[0].actor == "lobwife-upgrade"
    logged = [r.getMessage() for r in caplog.records]
    assert any("tasks 7 assigned_at" in m and repr(stored) in m for m in logged), logged
    assert any("job_state flush-logs last_run" in m for m in logged), logged


def test_an_estimate_that_is_not_a_number_is_kept_verbatim(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old_daemon_db(state, old_task(5, estimate_minutes="about an hour"))
    conn = upgrade(state)
    t = task_store.get_task(conn, 5)
    assert t is not None and not t.HasField("estimate_minutes_exact")
    (kept,) = migrations.kept_values(conn)
    assert (kept.table, kept.key, kept.field, kept.raw) == ("tasks", "5", "estimate_minutes", "about an hour")


# --------------------------------------------------------------------------- the broker's rows and summary


def test_broker_rows_from_the_database_and_the_json_files_are_carried_over_and_counted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    reg = "INSERT INTO broker_tasks VALUES (?, '[\"o/a\"]', 'swe', '2026-02-16T17:00:00+00:00', ?, ?)"
    registrations = [(reg, ("T1", "active", 5)), (reg, ("lobster-2", "active", 4)), (reg, ("T3", "expired", 3))]
    entry = "INSERT INTO token_audit (task_id, repos, action, created_at) VALUES ('T1', '[\"o/a\"]', ?, ?)"
    audit = [(entry, ("task_registered", "2026-02-16 17:00:00"))] + [
        (entry, ("token_issued", "2026-02-16 17:01:00"))
    ] * 6
    old_daemon_db(state, *registrations, *audit)
    (state / "tasks.json").write_text(
        json.dumps(
            {
                "T9": {"repos": "o/solo", "lobster_type": "qa", "status": "active", "token_count": 2},
                "T1": {"repos": ["o/other"], "status": "active", "token_count": 99},  # the database's row wins
            }
        )
    )
    (state / "token-audit.json").write_text(
        json.dumps(
            [
                {"task_id": "T9", "repos": ["o/solo"], "action": "task_registered", "timestamp": "2026-01-01T00:00Z"},
                {"task_id": "T9", "repos": ["o/solo"], "action": "token_issued", "timestamp": 1767225600},
                {"task_id": "T9", "repos": ["o/solo"], "action": "token_issued"},
            ]
        )
    )
    conn = upgrade(state)
    assert broker_store.summary(conn) == broker_store.BrokerCounts(
        active_tasks=3, total_tokens_issued=14, audit_entries=10
    )
    rows = dict(conn.execute("SELECT task_id, repos FROM broker_tasks").fetchall())
    assert rows == {"T1": '["o/a"]', "lobster-2": '["o/a"]', "T3": '["o/a"]', "T9": '["o/solo"]'}
    assert conn.execute("SELECT registered_at FROM broker_tasks WHERE task_id = 'T1'").fetchone() == (
        "2026-02-16T17:00:00+00:00",
    )
    stamps = [r[0] for r in conn.execute("SELECT created_at FROM token_audit WHERE task_id = 'T9' ORDER BY id")]
    assert stamps[:2] == ["2026-01-01T00:00Z", "1767225600"], "audit times are kept as written"


# --------------------------------------------------------------------------- .json.migrated files


def test_an_existing_migrated_file_is_never_overwritten(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    old_daemon_db(state)
    left_by_old_daemon = json.dumps({"task-manager": {"run_count": 1}})
    (state / "jobs.json.migrated").write_text(left_by_old_daemon)
    (state / "jobs.json.migrated.1").write_text("also taken")
    (state / "jobs.json").write_text(json.dumps({"flush-logs": {"run_count": 2}}))
    (state / "tasks.json").write_text(json.dumps({"T1": {"repos": ["o/r"]}}))
    with caplog.at_level(logging.INFO, logger="lobwife.migrations"):
        conn = upgrade(state)
    assert (state / "jobs.json.migrated").read_text() == left_by_old_daemon
    assert (state / "jobs.json.migrated.1").read_text() == "also taken"
    assert json.loads((state / "jobs.json.migrated.2").read_text()) == {"flush-logs": {"run_count": 2}}
    assert not (state / "jobs.json").exists()
    assert (state / "tasks.json.migrated").exists() and not (state / "tasks.json").exists()
    assert job_store.job_state(conn)["flush-logs"][4] == 2
    assert any(
        "jobs.json.migrated exists already" in r.getMessage() and "jobs.json.migrated.2" in r.getMessage()
        for r in caplog.records
    )
    # Nothing left to import: a restart changes nothing.
    assert migrations.import_legacy_json(conn, state) == []
    assert sorted(p.name for p in state.glob("jobs.json*")) == [
        "jobs.json.migrated",
        "jobs.json.migrated.1",
        "jobs.json.migrated.2",
    ]
