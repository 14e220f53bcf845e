"""Migration 5 (request fingerprints), and what CreateTask does with a stored request_id."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import pytest

from lobwife.v1 import tasks_pb2
from lobwife_server.api.rpc import CallContext
from lobwife_server.core.errors import ApiError
from lobwife_server.storage import migrations, task_store
from lobwife_server.storage.database import Database
from lobwife_server.tasks.service import TaskService


def _schema_4(path: Path) -> None:
    """A database as the previous release left it: schema 4, a task created with a request_id."""
    conn = sqlite3.connect(path, isolation_level=None)
    real = migrations.MIGRATIONS
    try:
        migrations.MIGRATIONS = [m for m in real if m[0] <= 4]
        migrations.migrate(conn)
    finally:
        migrations.MIGRATIONS = real
    assert migrations.current_version(conn) == 4
    conn.execute(
        "INSERT INTO tasks (name, type, status, priority, created_at, updated_at, request_id)"
        " VALUES ('from before', 'swe', 'queued', 'normal', 1, 1, 'old-id')"
    )
    conn.close()


async def test_migration_5_adds_fingerprints_and_keeps_old_request_ids_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "lobwife.db"
    _schema_4(path)
    db = Database(path, commit_delay=0)
    await db.open(migrations.migrate)
    try:
        version = await db.read(migrations.current_version)
        assert version == migrations.LATEST >= 5
        assert await db.read(lambda c: c.execute("SELECT request_hash FROM tasks").fetchall()) == [(None,)]
        svc = await TaskService.create(db)
        ctx = CallContext("/lobwife.v1.TaskService/CreateTask", "grpc", dict)
        # A task from before has no fingerprint: its request_id answers with it, as it always did.
        old = (await svc.CreateTask(tasks_pb2.CreateTaskRequest(request_id="old-id", name="other"), ctx)).to_message()
        assert old.task.id == 1 and old.task.name == "from before"  # type: ignore[attr-defined]
        # A new one is stored with its fingerprint and holds it.
        req = tasks_pb2.CreateTaskRequest(request_id="new-id", name="n", repos=["o/r"], actor="me")
        first = (await svc.CreateTask(req, ctx)).to_message().task  # type: ignore[attr-defined]
        same = tasks_pb2.CreateTaskRequest(request_id="new-id", name=" n ", repos=["o/r"], actor="me", type="swe")
        assert (await svc.CreateTask(same, ctx)).to_message().task == first  # type: ignore[attr-defined]
        for differs in (
            tasks_pb2.CreateTaskRequest(request_id="new-id", name="n", repos=["o/r"]),  # no actor
            tasks_pb2.CreateTaskRequest(request_id="new-id", name="n", repos=["o/r"], actor="me", estimate_minutes=0),
            tasks_pb2.CreateTaskRequest(request_id="new-id", name="n", actor="me"),
        ):
            with pytest.raises(ApiError) as info:
                await svc.CreateTask(differs, ctx)
            assert info.value.code == grpc.StatusCode.ALREADY_EXISTS
            assert [v[0] for v in info.value.violations] == ["request_id"]
            assert info.value.reason == "REQUEST_ID_REUSED"
        assert await db.read(task_store.task_count) == 2
        stored = await db.read(lambda c: c.execute("SELECT request_hash FROM tasks WHERE id = 2").fetchone()[0])
        assert isinstance(stored, bytes) and len(stored) == 16
        # No request_id: no fingerprint stored (the fast, batched path).
        await svc.CreateTask(tasks_pb2.CreateTaskRequest(name="plain"), ctx)
        assert await db.read(lambda c: c.execute("SELECT request_hash FROM tasks WHERE id = 3").fetchone()) == (None,)
    finally:
        await db.close()


def test_status_and_values_reads_only_updatable_columns(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    migrations.migrate(conn)
    conn.execute(
        "INSERT INTO tasks (name, type, status, priority, created_at, updated_at, repos)"
        " VALUES ('x', 'swe', 'active', 'normal', 1, 7, '[\"o/r\"]')"
    )
    assert task_store.status_and_values(conn, 1, ["name", "repos"]) == ("active", 7, {"name": "x", "repos": '["o/r"]'})
    assert task_store.status_and_values(conn, 2, ["name"]) is None
    with pytest.raises(ValueError, match="updatable"):
        task_store.status_and_values(conn, 1, ["name; DROP TABLE tasks"])
    conn.close()
