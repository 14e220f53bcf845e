"""The writer's batches, on a real SQLite file: writes of one kind share statements, and nothing changes meaning.

To put several writes in one batch for certain, the first write queued blocks the
writer thread on an event until the others are queued behind it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from lobwife.v1 import tasks_pb2
from lobwife_server.api.rpc import CallContext
from lobwife_server.core.errors import ApiError
from lobwife_server.storage import task_store
from lobwife_server.storage.database import BatchKind, Database, WriteContext
from lobwife_server.storage.migrations import migrate
from lobwife_server.tasks.service import TaskService


class Recorder:
    """A BatchKind that inserts names into a table and records how it was called."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.kind: BatchKind[str, int] = BatchKind(self.one, self.many)

    def one(self, conn: sqlite3.Connection, wctx: WriteContext, name: str) -> int:
        self.calls.append(("one", 1))
        if name == "bad":
            raise ValueError("bad name")
        return task_store.insert_rows(conn, "t", ("name",), [(name,)])

    def many(self, conn: sqlite3.Connection, items: list[tuple[WriteContext, str]]) -> list[int]:
        self.calls.append(("many", len(items)))
        if any(name == "bad" for _, name in items):
            raise ValueError("bad name")
        first = task_store.insert_rows(conn, "t", ("name",), [(name,) for _, name in items])
        return [first + i for i in range(len(items))]


class OneStatement(Recorder):
    """A single-statement kind: records whether it ran inside a transaction; "late" fails after writing."""

    def __init__(self) -> None:
        super().__init__()
        self.kind = BatchKind(self.one, self.many, single_statement=True)
        self.in_transaction: list[bool] = []

    def many(self, conn: sqlite3.Connection, items: list[tuple[WriteContext, str]]) -> list[int]:
        self.in_transaction.append(conn.in_transaction)
        out = super().many(conn, items)
        if any(name == "late" for _, name in items):
            raise RuntimeError("failed after its statement")
        return out


def _make_table(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL)")


async def _open(tmp_path: Path) -> Database:
    db = Database(tmp_path / "s.db", commit_delay=0)
    await db.open(_make_table)
    return db


async def _in_one_batch(db: Database, *calls: Any) -> list[Any]:
    """Run the calls' writes in one batch, after a write that holds the writer until they are queued.

    A call is a coroutine (it queues its write when first run) or a function that
    queues one when called (``lambda: db.write_as(...)``: Database.write queues at once).
    """
    release = threading.Event()
    holding = threading.Event()

    def hold(conn: sqlite3.Connection, wctx: WriteContext) -> None:
        holding.set()
        release.wait(5)

    first = asyncio.ensure_future(db.write(hold))
    await asyncio.to_thread(holding.wait, 5)
    tasks = [asyncio.ensure_future(c() if callable(c) else c) for c in calls]
    await asyncio.sleep(0)  # every call queues its write before awaiting it
    release.set()
    await first
    return await asyncio.gather(*tasks, return_exceptions=True)


async def _task_service(tmp_path: Path, method: str) -> tuple[Database, TaskService, CallContext]:
    """A TaskService on a fresh database that commits at once, and a context for calling ``method``."""
    db = Database(tmp_path / "tasks.db", commit_delay=0)
    await db.open(migrate)
    return db, await TaskService.create(db), CallContext(f"/lobwife.v1.TaskService/{method}", "grpc", dict)


def _names(db_path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT id, name FROM t ORDER BY id").fetchall()


async def test_writes_of_one_kind_share_one_call_in_order(tmp_path: Path) -> None:
    db = await _open(tmp_path)
    rec = Recorder()
    try:
        ids = await _in_one_batch(db, *(functools.partial(db.write_as, rec.kind, f"n{i}") for i in range(5)))
    finally:
        await db.close()
    assert rec.calls == [("many", 5)]
    assert ids == [1, 2, 3, 4, 5]
    assert _names(tmp_path / "s.db") == [(i + 1, f"n{i}") for i in range(5)]


async def test_other_writes_split_the_runs_and_keep_their_place(tmp_path: Path) -> None:
    db = await _open(tmp_path)
    rec = Recorder()

    def plain(conn: sqlite3.Connection, wctx: WriteContext) -> int:
        cur = conn.execute("INSERT INTO t (name) VALUES ('plain')")
        assert cur.lastrowid is not None
        return cur.lastrowid

    try:
        out = await _in_one_batch(
            db, db.write_as(rec.kind, "a"), db.write_as(rec.kind, "b"), db.write(plain), db.write_as(rec.kind, "c")
        )
    finally:
        await db.close()
    assert rec.calls == [("many", 2), ("one", 1)]
    assert out == [1, 2, 3, 4]
    assert [n for _, n in _names(tmp_path / "s.db")] == ["a", "b", "plain", "c"]


@pytest.mark.parametrize("kind", [Recorder, OneStatement], ids=["in-a-transaction", "single-statement"])
async def test_a_failing_write_is_undone_alone(tmp_path: Path, kind: type[Recorder]) -> None:
    """The shared call fails before writing anything, so the batch runs again write by write."""
    db = await _open(tmp_path)
    rec = kind()
    try:
        out = await _in_one_batch(
            db, db.write_as(rec.kind, "a"), db.write_as(rec.kind, "bad"), db.write_as(rec.kind, "b")
        )
    finally:
        await db.close()
    assert rec.calls == [("many", 3), ("one", 1), ("one", 1), ("one", 1)]
    assert out[0] == 1 and out[2] == 2
    assert isinstance(out[1], ValueError)
    assert [n for _, n in _names(tmp_path / "s.db")] == ["a", "b"]


async def test_a_batch_of_one_single_statement_kind_runs_outside_a_transaction(tmp_path: Path) -> None:
    db = await _open(tmp_path)
    rec = OneStatement()
    plain_calls = []

    def plain(conn: sqlite3.Connection, wctx: WriteContext) -> None:
        plain_calls.append(conn.in_transaction)

    try:
        ids = await _in_one_batch(db, *(functools.partial(db.write_as, rec.kind, f"n{i}") for i in range(3)))
        # Mixed with another write, the same kind runs inside the batch's transaction.
        mixed = await _in_one_batch(
            db,
            functools.partial(db.write, plain),
            functools.partial(db.write_as, rec.kind, "m1"),
            functools.partial(db.write_as, rec.kind, "m2"),
        )
    finally:
        await db.close()
    assert ids == [1, 2, 3] and mixed[1:] == [4, 5]
    assert rec.in_transaction == [False, True]
    assert plain_calls == [True]


async def test_a_single_statement_write_that_fails_after_committing_is_not_run_again(tmp_path: Path) -> None:
    db = await _open(tmp_path)
    rec = OneStatement()
    try:
        out = await _in_one_batch(
            db, functools.partial(db.write_as, rec.kind, "x"), functools.partial(db.write_as, rec.kind, "late")
        )
        after = await db.write_as(rec.kind, "y")  # the writer goes on
    finally:
        await db.close()
    assert rec.calls == [("many", 2), ("one", 1)]
    assert all(isinstance(r, ApiError) and "committed" in r.message for r in out)
    # Written once, never twice: the rows stand as committed.
    assert [n for _, n in _names(tmp_path / "s.db")] == ["x", "late", "y"]
    assert after == 3


def test_insert_rows_in_chunks_takes_consecutive_ids(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    _make_table(conn)
    conn.execute("INSERT INTO t (name) VALUES ('before')")
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 3)  # three rows a statement
    first = task_store.insert_rows(conn, "t", ("name",), [(f"r{i}",) for i in range(8)])
    assert first == 2
    assert conn.execute("SELECT id, name FROM t WHERE id >= 2 ORDER BY id").fetchall() == [
        (i + 2, f"r{i}") for i in range(8)
    ]
    with pytest.raises(ValueError):
        task_store.insert_rows(conn, "t", ("name",), [])
    conn.close()


@pytest.mark.parametrize(
    "items",
    [
        [],
        ["o/r"],
        ["a", "b/c", ""],
        ['quo"te', "back\\slash", "tab\tnew\nline", "\x00\x1f", "é", "日本", "😀", "\u2028"],
    ],
)
def test_dump_list_writes_what_json_dumps_writes(items: list[str]) -> None:
    assert task_store.dump_list(items) == json.dumps(items)
    assert json.loads(task_store.dump_list(items)) == items


async def test_concurrent_creates_in_one_batch_are_whole_tasks(tmp_path: Path) -> None:
    """Creates that share statements each get their own id, event and fields, exactly as one by one."""
    db, svc, ctx = await _task_service(tmp_path, "CreateTask")
    reqs = [
        tasks_pb2.CreateTaskRequest(name=f"task {i}", repos=[f"o/r{i}"], actor=f"actor{i}", estimate_minutes=i)
        for i in range(6)
    ]
    reqs[2].status = tasks_pb2.TASK_STATUS_ACTIVE
    reqs[4].request_id = "req-4"  # creates with a request_id run on their own
    sub = svc.feed.subscribe()
    try:
        out = await _in_one_batch(db, *(svc.CreateTask(r, ctx) for r in reqs))
        again = await svc.CreateTask(reqs[4], ctx)
        more = await _in_one_batch(db, svc.CreateTask(reqs[0], ctx), svc.CreateTask(reqs[1], ctx))
        # Another change between creates, then creates in a row: the event ids stay right.
        await svc.CreateTaskEvent(tasks_pb2.CreateTaskEventRequest(task_id="T1", event_type="progress"), ctx)
        third = await _in_one_batch(db, svc.CreateTask(reqs[3], ctx), svc.CreateTask(reqs[5], ctx))
        fourth = await _in_one_batch(db, svc.CreateTask(reqs[0], ctx), svc.CreateTask(reqs[1], ctx))
        events = await db.read(lambda c: c.execute("SELECT task_id, event_type, actor FROM task_events").fetchall())
        stored_events = await db.read(
            lambda c: c.execute("SELECT id, task_id, event_type, detail, actor, created_at FROM task_events").fetchall()
        )
        published = []
        while not sub.queue.empty():
            change = await sub.get()
            assert change is not None
            published.append(change)
        stored = {t.id: t for t in (await db.read(lambda c: task_store.get_tasks(c, list(range(1, 13))))).values()}
    finally:
        await db.close()
    tasks = [r.to_message().task for r in out]
    assert [t.id for t in tasks] == [1, 2, 3, 4, 5, 6]
    for i, t in enumerate(tasks):
        assert (t.name, list(t.repos), t.created_by, t.estimate_minutes) == (f"task {i}", [f"o/r{i}"], f"actor{i}", i)
        assert stored[t.id] == t  # what the call returned is what was stored
    assert tasks[2].status == tasks_pb2.TASK_STATUS_ACTIVE and tasks[2].HasField("assigned_at")
    assert not tasks[0].HasField("assigned_at")
    assert again.to_message().task == tasks[4]  # idempotent by request_id
    assert [r.to_message().task.id for r in more if not isinstance(r, ApiError)] == [7, 8]
    # What the feed carried is exactly what was stored: the same event ids (cursors), in order.
    assert [(c.event.id, c.event.task_id, c.event.event_type, c.event.detail, c.event.actor) for c in published] == [
        (e[0], e[1], e[2], e[3] or "", e[4] or "")
        for e in stored_events  # unset is "" in a message
    ]
    assert [c.task.id for c in published] == [e[1] for e in stored_events]
    assert all(
        e[3] == f"Task created with status={'active' if e[1] == 3 else 'queued'}"
        for e in stored_events
        if e[2] == "created"
    )
    assert [r.to_message().task.id for r in third + fourth] == [9, 10, 11, 12]
    assert sorted(events, key=str) == sorted(
        [(i, "created", f"actor{i - 1}") for i in range(1, 7)]
        + [(7, "created", "actor0"), (8, "created", "actor1"), (1, "progress", None)]
        + [(9, "created", "actor3"), (10, "created", "actor5"), (11, "created", "actor0"), (12, "created", "actor1")],
        key=str,
    )
    assert [e[0] for e in stored_events] == list(range(1, 14))


def test_list_task_keys_is_the_plain_query_in_one_step(tmp_path: Path) -> None:
    """The page's keys, read as one aggregated value, are exactly what ORDER BY id DESC LIMIT selects."""
    conn = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    migrate(conn)
    statuses = ["queued", "active", "completed"]
    conn.executemany(
        "INSERT INTO tasks (name, type, status, created_at, updated_at, queued_at) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (f"t{i}", "swe" if i % 2 else "qa", statuses[i % 3], 1000 + i, 5_000_000 + (i * 7919) % 1000, 1000 + i)
            for i in range(300)
        ],
    )
    cases = [
        (task_store.TaskFilter(), None, 101),
        (task_store.TaskFilter(status="active"), None, 50),
        (task_store.TaskFilter(type="qa", status="queued"), 200, 20),
        (task_store.TaskFilter(created_after_us=1100, created_before_us=1150), None, 500),
        (task_store.TaskFilter(status="failed"), None, 10),  # no match: empty
    ]
    # The oracle is every row, filtered and ordered here in Python: independent of the SQL under test.
    every = conn.execute("SELECT id, updated_at, status, type, created_at FROM tasks").fetchall()
    for f, before, limit in cases:
        expected = [
            (i, updated)
            for i, updated, status, kind, created in sorted(every, reverse=True)
            if (f.status is None or status == f.status)
            and (f.type is None or kind == f.type)
            and (f.created_after_us is None or created >= f.created_after_us)
            and (f.created_before_us is None or created < f.created_before_us)
            and (before is None or i < before)
        ][:limit]
        assert expected or f.status == "failed"  # every case but the last selects something
        assert task_store.list_task_keys(conn, f, before, limit) == expected
    assert task_store.list_task_keys(conn, task_store.TaskFilter(status="failed"), None, 10) == []
    conn.close()


async def test_unfiltered_pages_from_the_cache_equal_the_query(tmp_path: Path) -> None:
    """The newest pages, served from the cache when it holds them, are the pages the query gives."""
    db, svc, ctx = await _task_service(tmp_path, "ListTasks")

    async def pages(service: TaskService, size: int) -> list[tuple[list[int], str]]:
        out, token = [], ""
        while True:
            resp = (
                await service.ListTasks(tasks_pb2.ListTasksRequest(page_size=size, page_token=token), ctx)
            ).to_message()
            out.append(([t.id for t in resp.tasks], resp.next_page_token))
            token = resp.next_page_token
            if not token:
                return out

    try:
        for i in range(0, 250, 50):
            await asyncio.gather(
                *(svc.CreateTask(tasks_pb2.CreateTaskRequest(name=f"t{i + j}"), ctx) for j in range(50))
            )
        await svc.UpdateTask(tasks_pb2.UpdateTaskRequest(task_id="T240", status=tasks_pb2.TASK_STATUS_ACTIVE), ctx)
        cold = await TaskService.create(db)  # an empty cache: every page comes from the query
        warm_pages = await pages(svc, 100)
        cold_pages = await pages(cold, 100)
        assert [ids for ids, _ in warm_pages] == [
            list(range(250, 150, -1)),
            list(range(150, 50, -1)),
            list(range(50, 0, -1)),
        ]
        assert warm_pages == cold_pages  # the same ids and the same page tokens
        # The cached bytes are the current versions: the update shows.
        first = (await svc.ListTasks(tasks_pb2.ListTasksRequest(page_size=20), ctx)).to_message()
        assert first.tasks[10].id == 240 and first.tasks[10].status == tasks_pb2.TASK_STATUS_ACTIVE
        # A task missing from the cache sends the page to the query, with the same answer.
        svc.cache._items.pop(200)
        assert await pages(svc, 100) == cold_pages
        # With a filter, the query answers.
        active = (
            await svc.ListTasks(tasks_pb2.ListTasksRequest(status=tasks_pb2.TASK_STATUS_ACTIVE), ctx)
        ).to_message()
        assert [t.id for t in active.tasks] == [240]
        assert (await svc.ListTasks(tasks_pb2.ListTasksRequest(page_size=5), ctx)).to_message().tasks[0].id == 250
    finally:
        await db.close()
    # A server that has no task yet lists none.
    db2 = Database(tmp_path / "empty.db", commit_delay=0)
    await db2.open(migrate)
    try:
        empty = await TaskService.create(db2)
        resp = (await empty.ListTasks(tasks_pb2.ListTasksRequest(), ctx)).to_message()
        assert list(resp.tasks) == [] and resp.next_page_token == ""
    finally:
        await db2.close()


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "plain"},
        {
            "name": "full",
            "slug": "s",
            "type": "t",
            "status": "active",
            "priority": "high",
            "model": "m",
            "assigned_to": "bob",
            "repos": ["a/b", "c/d"],
            "discord_thread_id": "d",
            "estimate_minutes": 5,
            "requires_qa": 1,
            "workflow": "w",
            "created_by": "me",
            "budget_usd": 2.5,
        },
        {"name": "done", "status": "completed", "estimate_minutes": 0, "repos": []},
        {"name": "zero time", "at": 0},
        {"name": "old time", "at": -1_234_567},
    ],
)
def test_created_task_is_what_reading_the_stored_row_gives(tmp_path: Path, fields: dict[str, Any]) -> None:
    """The snapshot a create answers with, built from its row, equals the task read back from SQLite."""
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    migrate(conn)
    conn.execute(task_store.CREATED_TRIGGER)
    at = fields.get("at", task_store.now())
    status = fields.get("status", "queued")
    repos = fields.get("repos")
    values = {
        **{c: None for c in task_store.CREATE_COLUMNS},
        "type": "swe",
        "status": status,
        "priority": "normal",
        "requires_qa": 0,
        **{k: v for k, v in fields.items() if k not in ("at", "repos")},
        "repos": task_store.dump_list(repos) if repos else None,
        "created_at": at,
        "updated_at": at,
        "queued_at": at,
        "assigned_at": at if status == "active" else None,
        "completed_at": at if status in task_store.FINAL_STATUSES else None,
    }
    row = tuple(values[c] for c in task_store.CREATE_COLUMNS)
    first, _ = task_store.insert_created(conn, [row])
    stored = task_store.get_task(conn, first)
    assert stored is not None
    for given in (None, repos):  # from the row's JSON text, or from the list it was made from
        made = task_store.created_task(first, row, given)
        assert made == stored
        assert made.SerializeToString() == stored.SerializeToString()
    conn.close()


async def test_creates_with_no_stream_open_still_move_the_feed_cursor(tmp_path: Path) -> None:
    """With nobody watching no change is made, but the cursor a new stream starts from is the last event."""
    db, svc, ctx = await _task_service(tmp_path, "CreateTask")
    try:
        reqs = [tasks_pb2.CreateTaskRequest(name=f"task {i}") for i in range(3)]
        await _in_one_batch(db, *(svc.CreateTask(r, ctx) for r in reqs))
        last = await db.read(task_store.max_event_id)
        assert not svc.feed.watched
        assert svc.feed.last_cursor == last
        sub = svc.feed.subscribe()
        assert svc.feed.watched
        await svc.CreateTask(tasks_pb2.CreateTaskRequest(name="watched"), ctx)
        change = await asyncio.wait_for(sub.get(), 5)
        assert change is not None
        assert (change.cursor, change.task.name, change.event.event_type) == (last + 1, "watched", "created")
        sub.close()
    finally:
        await db.close()
