"""SQL for tasks and their events, and the row <-> message conversions.

Write functions here run in the storage writer thread inside the batch
transaction (see storage.py); read functions run on a reader thread. Queries
stay portable (no SQLite-only syntax beyond AUTOINCREMENT) so a PostgreSQL
backend can take the same shape.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _encode_str
from typing import Any

from lobwife.v1 import tasks_pb2
from lobwife_server.core.timeutil import now_us, set_ts

TaskStatus = tasks_pb2.TaskStatus

#: Stored status text <-> enum. The text is the legacy word (the HTTP name).
STATUS_TEXT: dict[int, str] = {
    v.number: v.name.removeprefix("TASK_STATUS_").lower()
    for v in tasks_pb2.TaskStatus.DESCRIPTOR.values
    if v.number != 0
}
STATUS_VALUE: dict[str, int] = {text: number for number, text in STATUS_TEXT.items()}
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})

COLUMNS = (
    "id, name, slug, type, status, priority, model, assigned_to, repos, discord_thread_id, estimate_minutes, "
    "requires_qa, workflow, created_at, updated_at, queued_at, assigned_at, completed_at, broker_repos, "
    "broker_status, token_count, broker_registered_at, created_by, budget_usd"
)
COLUMN_NAMES = tuple(c.strip() for c in COLUMNS.split(","))
EVENT_COLUMNS = "id, task_id, event_type, detail, actor, created_at"

# Columns of the tasks table that UpdateTask may set, with the value that
# clearing them (naming them in the mask with no value) stores.
UPDATABLE: dict[str, Any] = {
    "name": None,
    "slug": None,
    "type": "swe",
    "status": None,
    "priority": "normal",
    "model": None,
    "assigned_to": None,
    "repos": None,
    "discord_thread_id": None,
    "estimate_minutes": None,
    "requires_qa": 0,
    "workflow": None,
    "queued_at": None,
    "assigned_at": None,
    "completed_at": None,
    # The broker's fields (the old daemon's PATCH whitelist): UpdateTask applies the broker's rules.
    # `token_count` is not here: the broker keeps it (add_token).
    "broker_repos": None,
    "broker_status": None,
    "broker_registered_at": None,
    # NULL: the task's type's default budget (CostService).
    "budget_usd": None,
}


def row_to_task(r: Sequence[Any]) -> tasks_pb2.Task:
    t = tasks_pb2.Task(
        id=r[0],
        task_id=f"T{r[0]}",
        name=r[1],
        type=r[3],
        status=STATUS_VALUE.get(r[4], 0),  # type: ignore[arg-type]
        priority=r[5],
        requires_qa=bool(r[11]),
        token_count=r[20] or 0,
    )
    if r[2] is not None:
        t.slug = r[2]
    if r[6] is not None:
        t.model = r[6]
    if r[7] is not None:
        t.assigned_to = r[7]
    if r[8]:
        t.repos.extend(json.loads(r[8]))
    if r[9] is not None:
        t.discord_thread_id = r[9]
    if r[10] is not None:
        _set_estimate(t, r[10])
    if r[12] is not None:
        t.workflow = r[12]
    set_ts(t.created_at, r[13])
    set_ts(t.updated_at, r[14])
    if r[15] is not None:
        set_ts(t.queued_at, r[15])
    if r[16] is not None:
        set_ts(t.assigned_at, r[16])
    if r[17] is not None:
        set_ts(t.completed_at, r[17])
    if r[18]:
        t.broker_repos.extend(json.loads(r[18]))
    if r[19] is not None:
        t.broker_status = r[19]
    if r[21] is not None:
        set_ts(t.broker_registered_at, r[21])
    if r[22] is not None:
        t.created_by = r[22]
    if r[23] is not None:
        t.budget_usd = r[23]
    return t


_INT32 = (-(2**31), 2**31 - 1)


def estimate_kw(value: float) -> dict[str, Any]:
    """A stored estimate (a REAL: fractions kept) as Task fields: ``estimate_minutes_exact``, and the
    deprecated int32 ``estimate_minutes`` (whole minutes, truncated) for older typed clients when it fits."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return {}  # not a number (never written by lobwife): shown as no estimate rather than failing the read
    kw: dict[str, Any] = {"estimate_minutes_exact": float(value)}
    if value == value and _INT32[0] <= value <= _INT32[1]:
        kw["estimate_minutes"] = int(value)
    return kw


def _set_estimate(t: tasks_pb2.Task, value: float) -> None:
    for name, v in estimate_kw(value).items():
        setattr(t, name, v)


def row_to_event(r: Sequence[Any]) -> tasks_pb2.TaskEvent:
    e = tasks_pb2.TaskEvent(id=r[0], task_id=r[1], event_type=r[2])
    if r[3] is not None:
        e.detail = r[3]
    if r[4] is not None:
        e.actor = r[4]
    set_ts(e.created_at, r[5])
    return e


# -- reads ---------------------------------------------------------------------


def get_task(conn: sqlite3.Connection, number: int) -> tasks_pb2.Task | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM tasks WHERE id = ?", (number,)).fetchone()
    return row_to_task(row) if row is not None else None


@dataclass(frozen=True)
class TaskFilter:
    """ListTasks filters as the SQL sees them (times in microseconds); its key() names a page-token's query."""

    status: str | None = None
    type: str | None = None
    assigned_to: str | None = None
    created_after_us: int | None = None
    created_before_us: int | None = None

    def key(self) -> list[object]:
        return [self.status, self.type, self.assigned_to, self.created_after_us, self.created_before_us]

    def is_empty(self) -> bool:
        return all(v is None for v in self.key())


def get_tasks(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, tasks_pb2.Task]:
    out: dict[int, tasks_pb2.Task] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for r in conn.execute(f"SELECT {COLUMNS} FROM tasks WHERE id IN ({marks})", chunk):
            out[r[0]] = row_to_task(r)
    return out


def list_task_keys(conn: sqlite3.Connection, f: TaskFilter, before_id: int | None, limit: int) -> list[tuple[int, int]]:
    """(id, updated_at) of the matching tasks, newest first (ids are sequential), id < before_id."""
    where: list[str] = []
    args: list[object] = []
    if f.status is not None:
        where.append("status = ?")
        args.append(f.status)
    if f.type is not None:
        where.append("type = ?")
        args.append(f.type)
    if f.assigned_to is not None:
        where.append("assigned_to = ?")
        args.append(f.assigned_to)
    if f.created_after_us is not None:
        where.append("created_at >= ?")
        args.append(f.created_after_us)
    if f.created_before_us is not None:
        where.append("created_at < ?")
        args.append(f.created_before_us)
    if before_id is not None:
        where.append("id < ?")
        args.append(before_id)
    sql = "SELECT id, updated_at FROM tasks"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    # The page's keys come back as one text value, so the read is one statement step
    # instead of one per row: every step releases the GIL and has to take it back
    # from a busy event loop. Measured under 64 concurrent lists of 100: HTTP +25%,
    # gRPC +7%. group_concat's order is not promised, so the keys are sorted here.
    # (PostgreSQL spells it string_agg.)
    row = conn.execute(f"SELECT group_concat(id || ',' || updated_at) FROM ({sql})", args).fetchone()
    if row is None or not row[0]:
        return []
    flat = list(map(int, row[0].split(",")))  # id, updated_at, id, updated_at, ...: parsed in C
    keys = list(zip(flat[::2], flat[1::2], strict=True))
    keys.sort(reverse=True)
    return keys


def task_exists(conn: sqlite3.Connection, number: int) -> bool:
    return conn.execute("SELECT 1 FROM tasks WHERE id = ?", (number,)).fetchone() is not None


def list_events(conn: sqlite3.Connection, number: int, before_id: int | None, limit: int) -> list[tasks_pb2.TaskEvent]:
    if before_id is None:
        rows = conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM task_events WHERE task_id = ? ORDER BY id DESC LIMIT ?", (number, limit)
        )
    else:
        rows = conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM task_events WHERE task_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (number, before_id, limit),
        )
    return [row_to_event(r) for r in rows]


def changes_after(
    conn: sqlite3.Connection, cursor: int, task_number: int | None, limit: int, max_bytes: int | None = None
) -> list[tuple[tasks_pb2.TaskEvent, tasks_pb2.Task]]:
    """Events after ``cursor`` in order, each with its task as it is now.

    At most ``limit`` events, and when ``max_bytes`` is given, no more after their
    details reach it (at least one event): a page a stream may hold while it waits
    on its client. An empty list means there is nothing after ``cursor``.
    """
    if task_number is None:
        found = conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM task_events WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)
        )
    else:
        found = conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM task_events WHERE id > ? AND task_id = ? ORDER BY id LIMIT ?",
            (cursor, task_number, limit),
        )
    if max_bytes is None:
        rows = found.fetchall()
    else:
        rows, total = [], 0
        for r in found:
            rows.append(r)
            total += 64 + (len(r[3]) if r[3] else 0)  # a row's fixed fields, roughly, and its detail
            if total >= max_bytes:
                break
        found.close()
    if not rows:
        return []
    ids = sorted({r[1] for r in rows})
    marks = ",".join("?" * len(ids))
    tasks = {r[0]: row_to_task(r) for r in conn.execute(f"SELECT {COLUMNS} FROM tasks WHERE id IN ({marks})", ids)}
    return [(row_to_event(r), tasks[r[1]]) for r in rows if r[1] in tasks]


def max_task_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(id) FROM tasks").fetchone()
    return int(row[0] or 0)


def max_event_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(id) FROM task_events").fetchone()
    return int(row[0] or 0)


def task_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])


# -- writes (run in the writer thread) -----------------------------------------


def insert_event(
    conn: sqlite3.Connection, number: int, event_type: str, detail: str | None, actor: str | None, at: int
) -> tasks_pb2.TaskEvent:
    cur = conn.execute(
        "INSERT INTO task_events (task_id, event_type, detail, actor, created_at) VALUES (?, ?, ?, ?, ?)",
        (number, event_type, detail, actor, at),
    )
    assert cur.lastrowid is not None
    return row_to_event((cur.lastrowid, number, event_type, detail, actor, at))


def find_by_request_id(conn: sqlite3.Connection, request_id: str) -> tuple[tasks_pb2.Task, bytes | None] | None:
    """The task created with ``request_id`` and the fingerprint of the request that created it.

    The fingerprint is None for a task created before fingerprints were stored (schema 5).
    """
    row = conn.execute(f"SELECT {COLUMNS}, request_hash FROM tasks WHERE request_id = ?", (request_id,)).fetchone()
    return (row_to_task(row), row[-1]) if row is not None else None


_insert_sql: dict[tuple[Any, ...], str] = {}


#: The columns CreateTask inserts, in row order: COLUMN_NAMES from name to completed_at,
#: then created_by, request_id and request_hash, the fingerprint of the request that
#: used the request_id, and budget_usd (the broker columns start empty).
CREATE_COLUMNS = (*COLUMN_NAMES[1:18], "created_by", "request_id", "request_hash", "budget_usd")


#: The detail of the event that records a task's creation, followed by its status.
CREATED_DETAIL = "Task created with status="

#: Every task the writer inserts logs its "created" event in the same statement. A TEMP
#: trigger lives on the connection that made it (the writer's), so tasks inserted by
#: other means (migrations, tools) log nothing. PostgreSQL would spell the same single
#: statement as INSERT ... RETURNING inside a WITH, feeding the events insert.
CREATED_TRIGGER = f"""
CREATE TEMP TRIGGER IF NOT EXISTS log_task_created AFTER INSERT ON main.tasks
BEGIN
    INSERT INTO task_events (task_id, event_type, detail, actor, created_at)
    VALUES (NEW.id, 'created', '{CREATED_DETAIL}' || NEW.status, NEW.created_by, NEW.created_at);
END
"""

_NEXT_EVENT_ID = """
SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'task_events'), 0),
           COALESCE((SELECT MAX(id) FROM task_events), 0)) + 1
"""


def insert_created(
    conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], next_event: int | None = None
) -> tuple[int, int]:
    """Insert tasks (CREATE_COLUMNS rows) with one statement; (first task id, first event id).

    Needs CREATED_TRIGGER on the connection: each row's "created" event is inserted
    by that same statement, so it can run as its own transaction. The ids of both
    tables are consecutive and in row order (see insert_rows); the events' first id
    is read before the insert (``next_event`` when the caller knows it), which is
    safe because only the writer writes. The statement's change count confirms that
    every row logged its event.
    """
    first_event = int(conn.execute(_NEXT_EVENT_ID).fetchone()[0]) if next_event is None else next_event
    before = conn.total_changes
    if len(rows) * len(CREATE_COLUMNS) > conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER):
        raise ValueError("too many rows for one statement")
    first = insert_rows(conn, "tasks", CREATE_COLUMNS, rows)
    if conn.total_changes - before != 2 * len(rows):
        raise sqlite3.IntegrityError("a created task did not log its event (is CREATED_TRIGGER installed?)")
    return first, first_event


def created_task(number: int, row: Sequence[Any], repos: Sequence[str] | None = None) -> tasks_pb2.Task:
    """The Task that inserting ``row`` (CREATE_COLUMNS order) as task ``number`` made, without reading it back.

    Equal to what :func:`row_to_task` makes of the stored row (a test holds the two
    together), built with one constructor call: it runs in the writer thread for
    every create, where field-by-field assignment cost twice as much. ``repos`` is
    the list the row's JSON text was made from, when the caller still has it.
    """
    at = row[12]
    created = {"seconds": at // 1_000_000, "nanos": at % 1_000_000 * 1000}
    kw: dict[str, Any] = {
        "id": number,
        "task_id": f"T{number}",
        "name": row[0],
        "type": row[2],
        "status": STATUS_VALUE.get(row[3], 0),
        "priority": row[4],
        "requires_qa": bool(row[10]),
        "created_at": created,
        "updated_at": created if row[13] == at else _ts_dict(row[13]),
    }
    # Spelled out, not looped over a table: this is the writer's hottest code.
    if row[1] is not None:
        kw["slug"] = row[1]
    if row[5] is not None:
        kw["model"] = row[5]
    if row[6] is not None:
        kw["assigned_to"] = row[6]
    if row[7]:
        kw["repos"] = json.loads(row[7]) if repos is None else repos
    if row[8] is not None:
        kw["discord_thread_id"] = row[8]
    if row[9] is not None:
        kw.update(estimate_kw(row[9]))
    if row[11] is not None:
        kw["workflow"] = row[11]
    if row[14] is not None:
        kw["queued_at"] = created if row[14] == at else _ts_dict(row[14])
    if row[15] is not None:
        kw["assigned_at"] = created if row[15] == at else _ts_dict(row[15])
    if row[16] is not None:
        kw["completed_at"] = created if row[16] == at else _ts_dict(row[16])
    if row[17] is not None:
        kw["created_by"] = row[17]
    if row[20] is not None:
        kw["budget_usd"] = row[20]
    return tasks_pb2.Task(**kw)


def _ts_dict(us: int) -> dict[str, int]:
    return {"seconds": us // 1_000_000, "nanos": us % 1_000_000 * 1000}


def dump_list(items: Sequence[str]) -> str:
    """A list of strings as stored: JSON text, exactly as ``json.dumps`` writes it (the old daemon's form).

    Spelled out with the C string encoder because json.dumps builds an encoder per
    call, about 2 µs for a short list on the event loop, against 0.5 µs here.
    """
    return "[" + ", ".join(map(_encode_str, items)) + "]"


def insert_rows(conn: sqlite3.Connection, table: str, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """Insert rows with multi-row INSERTs (one statement step per chunk, not per row); returns the first new id.

    The ids are consecutive and in row order: the table's INTEGER PRIMARY KEY takes
    max + 1 for each row of a VALUES list, in order, and nothing else writes inside
    the writer's transaction. The id count is checked all the same.
    """
    if not rows:
        raise ValueError("no rows")
    width = len(cols)
    per_chunk = max(1, min(len(rows), conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))
    first = last = 0
    for start in range(0, len(rows), per_chunk):
        chunk = rows[start : start + per_chunk]
        key = (table, tuple(cols), len(chunk))
        sql = _insert_sql.get(key)
        if sql is None:
            one = f"({', '.join('?' * width)})"
            sql = _insert_sql[key] = f"INSERT INTO {table} ({', '.join(cols)}) VALUES {', '.join([one] * len(chunk))}"
        cur = conn.execute(sql, [v for row in chunk for v in row])
        assert cur.lastrowid is not None
        if cur.rowcount != len(chunk) or (start and cur.lastrowid != last + len(chunk)):
            raise sqlite3.IntegrityError(f"multi-row insert into {table} did not take consecutive ids")
        last = cur.lastrowid
        if not start:
            first = last - len(chunk) + 1
    return first


def update_task(conn: sqlite3.Connection, number: int, values: dict[str, Any]) -> None:
    sets = ", ".join(f"{c} = ?" for c in values)
    conn.execute(f"UPDATE tasks SET {sets} WHERE id = ?", [*values.values(), number])


def add_token(conn: sqlite3.Connection, number: int, at: int) -> tasks_pb2.Task | None:
    """One more token issued for task ``number`` (its ``token_count``); the task as it now stands, or None.

    Stamped ``at``, or just after the task's last version if that is later (as ``next_stamp``). One
    statement (``RETURNING``, which PostgreSQL has too): a token is issued per git call, so its
    write is kept short.
    """
    rows = conn.execute(  # fetchall: the statement is run to its end (not left pending)
        "UPDATE tasks SET token_count = COALESCE(token_count, 0) + 1, updated_at = MAX(updated_at + 1, ?)"
        f" WHERE id = ? RETURNING {COLUMNS}",
        (at, number),
    ).fetchall()
    return row_to_task(rows[0]) if rows else None


#: add_tokens' statement by the number of tasks it counts for.
_add_tokens_sql: dict[int, str] = {}


def add_tokens(conn: sqlite3.Connection, counts: Sequence[tuple[int, int]], at: int) -> list[tuple[int, int, int]]:
    """``add_token`` ``n`` times at ``at`` for each ``(number, n)`` (distinct tasks), with one statement;
    ``(number, token_count, updated_at)`` of each task counted, as it now stands (no such task: not there).

    Only the two changed columns come back, not the whole row: the caller makes the new snapshot
    from the one it has (see ``TaskService.count_tokens_in``). ``n`` calls stamp the task
    ``MAX(updated_at + 1, at)`` each in turn, that is ``MAX(updated_at + n, at + n - 1)`` in all.
    """
    if not counts:
        return []
    sql = _add_tokens_sql.get(len(counts))
    if sql is None:
        rows = ", ".join(["(?, ?)"] * len(counts))
        sql = _add_tokens_sql[len(counts)] = (
            f"WITH counted(id, n) AS (VALUES {rows})"
            " UPDATE tasks SET token_count = COALESCE(tasks.token_count, 0) + counted.n,"
            " updated_at = MAX(tasks.updated_at + counted.n, ? + counted.n - 1)"
            " FROM counted WHERE tasks.id = counted.id RETURNING tasks.id, tasks.token_count, tasks.updated_at"
        )
    args: list[int] = [v for c in counts for v in c]
    args.append(at)
    # fetchall: the statement is run to its end (not left pending)
    return [(int(r[0]), int(r[1]), int(r[2])) for r in conn.execute(sql, args).fetchall()]


def status_of(conn: sqlite3.Connection, number: int) -> tuple[str, int] | None:
    """(status, updated_at) of a task, or None."""
    row = conn.execute("SELECT status, updated_at FROM tasks WHERE id = ?", (number,)).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def status_and_values(
    conn: sqlite3.Connection, number: int, columns: Sequence[str]
) -> tuple[str, int, dict[str, Any]] | None:
    """(status, updated_at, the stored value of each of ``columns``) of a task, or None.

    ``columns`` are names from UPDATABLE (never client text), so they may go into the SQL.
    """
    unknown = [c for c in columns if c not in UPDATABLE]
    if unknown:
        raise ValueError(f"not an updatable column: {unknown[0]!r}")
    picked = "".join(f", {c}" for c in columns)
    row = conn.execute(f"SELECT status, updated_at{picked} FROM tasks WHERE id = ?", (number,)).fetchone()
    if row is None:
        return None
    return str(row[0]), int(row[1]), dict(zip(columns, row[2:], strict=True))


def next_stamp(previous: int) -> int:
    """Now, but strictly after ``previous``: a task's updated_at orders its versions."""
    return max(now_us(), previous + 1)


def get_or_create_secret(conn: sqlite3.Connection, key: str, make: bytes) -> bytes:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is not None:
        return bytes.fromhex(row[0])
    conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, make.hex()))
    return make


def now() -> int:
    return now_us()


def prepare_writer(conn: sqlite3.Connection) -> None:
    """Ready the writer's connection for creates: the TEMP trigger that logs each one's event (CREATED_TRIGGER)."""
    conn.execute(CREATED_TRIGGER)


class CreateInserter:
    """``insert_created`` that knows the next event id without a query when it can (writer thread only).

    The next event id is known without a query (one statement step fewer, each a
    wait for the GIL) when the last create committed on its own and nothing has
    changed the database since: every change on the writer's connection, and every
    rolled-back one, moves its ``total_changes``. It is only remembered from outside
    a transaction, since what a transaction inserted may still roll back.
    """

    def __init__(self) -> None:
        # (the writer connection's total_changes, the next event id) as of the last create that committed alone.
        self._known: tuple[int, int] | None = None

    def __call__(self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> tuple[int, int]:
        known = self._known
        hint = known[1] if known is not None and known[0] == conn.total_changes else None
        first, first_event = insert_created(conn, rows, hint)
        self._known = None if conn.in_transaction else (conn.total_changes, first_event + len(rows))
        return first, first_event
