"""SQL for cost events and their hourly rollup.

``cost_events`` keeps each call's raw counts, the caller's cost (if sent), the computed cost and
the price entry it came from. ``cost_rollup`` holds, per hour x model x provider x task x task
type, the sums a summary needs; every insert (and every reprice) updates it in the same
transaction, so a summary reads a few rows per hour instead of every event. A summary over a
range that does not start or end on the hour adds the edge events from ``cost_events`` itself.
Times are integer microseconds, UTC. Migration 10 made the tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# One nested-transaction helper for every store (CostStore.savepoint).
from lobwife_server.storage.job_store import savepoint as savepoint

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US

_COLUMNS = (
    "id, request_id, task_number, task_type, provider, model, input_tokens, output_tokens, cache_read_tokens,"
    " cache_write_tokens, reasoning_tokens, caller_cost_usd, computed_cost_usd, price_id, cost_note, occurred_at"
)
#: A row's cost: the caller's figure, else the computed one, else nothing (0, and counted unpriced).
_EFFECTIVE = "COALESCE(caller_cost_usd, computed_cost_usd, 0)"
_UNPRICED = "(caller_cost_usd IS NULL AND computed_cost_usd IS NULL)"


@dataclass(frozen=True, slots=True)
class NewCost:
    """A validated call: what a row needs but its id."""

    request_id: str | None
    request_fp: bytes | None
    task_number: int | None
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    caller_cost_usd: float | None
    computed_cost_usd: float | None
    price_id: str
    cost_note: str
    occurred_at: int


@dataclass(frozen=True, slots=True)
class CostRow:
    id: int
    request_id: str | None
    task_number: int | None
    task_type: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    caller_cost_usd: float | None
    computed_cost_usd: float | None
    price_id: str
    cost_note: str
    occurred_at: int

    @property
    def cost_usd(self) -> float:
        if self.caller_cost_usd is not None:
            return self.caller_cost_usd
        return self.computed_cost_usd or 0.0


@dataclass(frozen=True, slots=True)
class CostFilter:
    task_number: int | None = None
    model: str | None = None
    provider: str | None = None
    task_type: str | None = None
    start: int | None = None  # occurred_at >= start
    end: int | None = None  # occurred_at < end


@dataclass(slots=True)
class Sums:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0

    def add(self, other: Sums) -> None:
        self.calls += other.calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.cost_usd += other.cost_usd
        self.unpriced_calls += other.unpriced_calls


def _row(r: Sequence[Any]) -> CostRow:
    return CostRow(*r)


def find_request(conn: sqlite3.Connection, request_id: str) -> tuple[CostRow, bytes | None] | None:
    r = conn.execute(f"SELECT {_COLUMNS}, request_fp FROM cost_events WHERE request_id = ?", (request_id,)).fetchone()
    return (_row(r[:-1]), r[-1]) if r is not None else None


def task_type(conn: sqlite3.Connection, number: int) -> str | None:
    """The task's type ('' when it has none), or None when there is no such task."""
    r = conn.execute("SELECT COALESCE(type, '') FROM tasks WHERE id = ?", (number,)).fetchone()
    return str(r[0]) if r is not None else None


def _bump_rollup(conn: sqlite3.Connection, row: CostRow, calls: int, cost: float, unpriced: int) -> None:
    conn.execute(
        "INSERT INTO cost_rollup (hour, model, provider, task_number, task_type, calls, input_tokens, output_tokens,"
        " cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_usd, unpriced_calls)"
        " VALUES (:hour, :model, :provider, :task, :type, :calls, :i, :o, :cr, :cw, :r, :cost, :unpriced)"
        " ON CONFLICT (hour, model, provider, task_number, task_type) DO UPDATE SET"
        " calls = calls + :calls, input_tokens = input_tokens + :i, output_tokens = output_tokens + :o,"
        " cache_read_tokens = cache_read_tokens + :cr, cache_write_tokens = cache_write_tokens + :cw,"
        " reasoning_tokens = reasoning_tokens + :r, cost_usd = cost_usd + :cost,"
        " unpriced_calls = unpriced_calls + :unpriced",
        {
            "hour": row.occurred_at // HOUR_US,
            "model": row.model,
            "provider": row.provider,
            "task": row.task_number or 0,
            "type": row.task_type,
            "calls": calls,
            "i": row.input_tokens * calls,
            "o": row.output_tokens * calls,
            "cr": row.cache_read_tokens * calls,
            "cw": row.cache_write_tokens * calls,
            "r": row.reasoning_tokens * calls,
            "cost": cost,
            "unpriced": unpriced,
        },
    )


def insert_cost(conn: sqlite3.Connection, new: NewCost, task_type: str, now: int) -> CostRow:
    """The event and its share of the rollup, in the caller's transaction."""
    cur = conn.execute(
        "INSERT INTO cost_events (request_id, request_fp, task_number, task_type, provider, model, input_tokens,"
        " output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, caller_cost_usd,"
        " computed_cost_usd, price_id, cost_note, occurred_at, recorded_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        f" RETURNING {_COLUMNS}",
        (
            new.request_id,
            new.request_fp,
            new.task_number,
            task_type,
            new.provider,
            new.model,
            new.input_tokens,
            new.output_tokens,
            new.cache_read_tokens,
            new.cache_write_tokens,
            new.reasoning_tokens,
            new.caller_cost_usd,
            new.computed_cost_usd,
            new.price_id,
            new.cost_note,
            new.occurred_at,
            now,
        ),
    )
    row = _row(cur.fetchone())
    unpriced = int(row.caller_cost_usd is None and row.computed_cost_usd is None)
    _bump_rollup(conn, row, 1, row.cost_usd, unpriced)
    return row


def _where(flt: CostFilter) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for column, op, value in (
        ("task_number", "=", flt.task_number),
        ("model", "=", flt.model),
        ("provider", "=", flt.provider),
        ("task_type", "=", flt.task_type),
        ("occurred_at", ">=", flt.start),
        ("occurred_at", "<", flt.end),
    ):
        if value is not None:
            where.append(f"{column} {op} ?")
            args.append(value)
    return (" WHERE " + " AND ".join(where)) if where else "", args


def list_costs(conn: sqlite3.Connection, flt: CostFilter, before_id: int | None, limit: int) -> list[CostRow]:
    """Newest first (by id), matching the filters, with ids below ``before_id``."""
    sql, args = _where(flt)
    if before_id is not None:
        sql += (" AND" if sql else " WHERE") + " id < ?"
        args.append(before_id)
    rows = conn.execute(f"SELECT {_COLUMNS} FROM cost_events{sql} ORDER BY id DESC LIMIT ?", [*args, limit])
    return [_row(r) for r in rows.fetchall()]


#: Group-by word -> (the rollup's key expression, the events' key expression).
GROUP_KEYS: dict[str, tuple[str, str]] = {
    "model": ("model", "model"),
    "task": ("task_number", "COALESCE(task_number, 0)"),
    "type": ("task_type", "task_type"),
    "day": (f"hour / {DAY_US // HOUR_US}", f"occurred_at / {DAY_US}"),
    "hour": ("hour", f"occurred_at / {HOUR_US}"),
}

_SUMS = (
    "COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens),"
    f" SUM(reasoning_tokens), SUM({_EFFECTIVE}), SUM({_UNPRICED})"
)
_ROLLUP_SUMS = (
    "SUM(calls), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens),"
    " SUM(reasoning_tokens), SUM(cost_usd), SUM(unpriced_calls)"
)


def _add(out: dict[Any, Sums], rows: Sequence[Sequence[Any]]) -> None:
    for r in rows:
        s = out.setdefault(r[0], Sums())
        s.add(
            Sums(
                calls=int(r[1] or 0),
                input_tokens=int(r[2] or 0),
                output_tokens=int(r[3] or 0),
                cache_read_tokens=int(r[4] or 0),
                cache_write_tokens=int(r[5] or 0),
                reasoning_tokens=int(r[6] or 0),
                cost_usd=float(r[7] or 0.0),
                unpriced_calls=int(r[8] or 0),
            )
        )


def summarize(conn: sqlite3.Connection, group_by: str, flt: CostFilter) -> dict[Any, Sums]:
    """Sums by group key (model, task number with 0 for none, task type, day or hour number).

    Whole hours come from the rollup; the parts of the range before its first whole hour and
    after its last come from the events (an index range on ``occurred_at``).
    """
    rollup_key, event_key = GROUP_KEYS[group_by]
    first = None if flt.start is None else -(-flt.start // HOUR_US)  # the first whole hour
    last = None if flt.end is None else flt.end // HOUR_US  # whole hours end before it
    out: dict[Any, Sums] = {}
    if first is not None and last is not None and first >= last:
        # No whole hour inside: all from the events.
        all_sql, all_args = _where(flt)
        _add(
            out, conn.execute(f"SELECT {event_key}, {_SUMS} FROM cost_events{all_sql} GROUP BY 1", all_args).fetchall()
        )
        return out
    where: list[str] = []
    args: list[Any] = []
    if flt.task_number is not None:
        where.append("task_number = ?")
        args.append(flt.task_number)
    for column, value in (("model", flt.model), ("provider", flt.provider), ("task_type", flt.task_type)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if first is not None:
        where.append("hour >= ?")
        args.append(first)
    if last is not None:
        where.append("hour < ?")
        args.append(last)
    sql = (" WHERE " + " AND ".join(where)) if where else ""
    _add(out, conn.execute(f"SELECT {rollup_key}, {_ROLLUP_SUMS} FROM cost_rollup{sql} GROUP BY 1", args).fetchall())
    edges = []
    if first is not None and flt.start is not None and flt.start < first * HOUR_US:
        edges.append((flt.start, first * HOUR_US))
    if last is not None and flt.end is not None and last * HOUR_US < flt.end:
        edges.append((last * HOUR_US, flt.end))
    for start, end in edges:
        part = CostFilter(flt.task_number, flt.model, flt.provider, flt.task_type, start, end)
        edge_sql, edge_args = _where(part)
        query = f"SELECT {event_key}, {_SUMS} FROM cost_events{edge_sql} GROUP BY 1"
        _add(out, conn.execute(query, edge_args).fetchall())
    return out


def repriceable(conn: sqlite3.Connection, start: int, end: int, after_id: int, limit: int) -> list[CostRow]:
    """Calls in [start, end) with no cost of the caller's, by id after ``after_id``."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM cost_events WHERE occurred_at >= ? AND occurred_at < ? AND caller_cost_usd IS NULL"
        " AND id > ? ORDER BY id LIMIT ?",
        (start, end, after_id, limit),
    )
    return [_row(r) for r in rows.fetchall()]


def set_computed(
    conn: sqlite3.Connection, row: CostRow, cost: float | None, price_id: str, note: str, actor: str, now: int
) -> bool:
    """A new computed cost for a call without a caller's cost: the row, the rollup, and a record of the
    change. False (nothing written) when the row changed since ``row`` was read (another reprice)."""
    cur = conn.execute(
        "UPDATE cost_events SET computed_cost_usd = ?, price_id = ?, cost_note = ?"
        " WHERE id = ? AND price_id = ? AND computed_cost_usd IS ? AND caller_cost_usd IS NULL",
        (cost, price_id, note, row.id, row.price_id, row.computed_cost_usd),
    )
    if cur.rowcount != 1:
        return False
    was_unpriced = row.computed_cost_usd is None
    now_unpriced = cost is None
    _bump_rollup_delta(conn, row, (cost or 0.0) - (row.computed_cost_usd or 0.0), int(now_unpriced) - int(was_unpriced))
    conn.execute(
        "INSERT INTO cost_reprices (event_id, old_cost_usd, new_cost_usd, old_price_id, new_price_id, actor, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (row.id, row.computed_cost_usd, cost, row.price_id, price_id, actor, now),
    )
    return True


def _bump_rollup_delta(conn: sqlite3.Connection, row: CostRow, cost_delta: float, unpriced_delta: int) -> None:
    conn.execute(
        "UPDATE cost_rollup SET cost_usd = cost_usd + ?, unpriced_calls = unpriced_calls + ?"
        " WHERE hour = ? AND model = ? AND provider = ? AND task_number = ? AND task_type = ?",
        (
            cost_delta,
            unpriced_delta,
            row.occurred_at // HOUR_US,
            row.model,
            row.provider,
            row.task_number or 0,
            row.task_type,
        ),
    )


def task_exists(conn: sqlite3.Connection, number: int) -> bool:
    return conn.execute("SELECT 1 FROM tasks WHERE id = ?", (number,)).fetchone() is not None
