"""SQL for cost events and their hourly rollup.

``cost_events`` keeps each call's raw counts, the caller's cost (if sent), the computed cost and
the price entry it came from. Two rollups hold the sums a summary needs; triggers (migration 10)
update both in the statement that inserts an event or reprices it, so they cannot drift from the
events whichever code writes them:

- ``cost_rollup_hour``, per hour x model x provider: summaries by model, day or hour (optionally
  of one model or provider). 90 days of 8 models is 17,280 rows, however many the calls.
- ``cost_rollup_task_day``, per day x task x task type: summaries by task or type (optionally of
  one task or type). One rollup over every dimension would have about as many rows as events
  for a fleet of many tasks: it would not summarise anything.

A summary with filters from both sides (one task's costs by model) reads the events through
their indexes (a task's, a model's); a range that does not start or end on a rollup boundary
adds its edges from the events.
Times are integer microseconds, UTC. Migration 10 made the tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

# One nested-transaction helper for every store (CostStore.savepoint).
from lobwife_server.storage.job_store import savepoint as savepoint
from lobwife_server.storage.task_store import insert_rows

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US

_COLUMNS = (
    "id, request_id, task_number, task_type, provider, model, input_tokens, output_tokens, cache_read_tokens,"
    " cache_write_tokens, reasoning_tokens, caller_cost_usd, computed_cost_usd, price_id, cost_note, occurred_at"
)
#: A row's cost: the caller's figure, else the computed one, else nothing (0, and counted unpriced).
_EFFECTIVE = "COALESCE(caller_cost_usd, computed_cost_usd, 0)"
_UNPRICED = "(caller_cost_usd IS NULL AND computed_cost_usd IS NULL)"


@dataclass(slots=True)
class NewCost:
    """A validated call: what a row needs but its id. Not changed once made (not frozen: one is made per
    record on the event loop, and a frozen dataclass's constructor costs twice as much)."""

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


def insert_cost(conn: sqlite3.Connection, new: NewCost, now: int) -> CostRow | None:
    """The event, in the caller's transaction, with its task's type as it is now; None (nothing
    written) when ``new`` names a task that does not exist. One statement: the rollups follow in
    it (the trigger cost_events_rollup)."""
    values = (
        new.request_id,
        new.request_fp,
        new.task_number,
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
    )
    # The task's type comes from the task row in the same statement; no row, no insert.
    source = (
        "SELECT ?, ?, ?, COALESCE(type, ''), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM tasks WHERE id = ?"
        if new.task_number is not None
        else "SELECT ?, ?, ?, '', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
    )
    args = (*values, new.task_number) if new.task_number is not None else values
    cur = conn.execute(
        "INSERT INTO cost_events (request_id, request_fp, task_number, task_type, provider, model, input_tokens,"
        " output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, caller_cost_usd,"
        f" computed_cost_usd, price_id, cost_note, occurred_at, recorded_at) {source} RETURNING {_COLUMNS}",
        args,
    )
    r = cur.fetchone()
    return _row(r) if r is not None else None


_INSERT_COLUMNS = (
    "request_id",
    "request_fp",
    "task_number",
    "task_type",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "caller_cost_usd",
    "computed_cost_usd",
    "price_id",
    "cost_note",
    "occurred_at",
    "recorded_at",
)


def insert_costs(conn: sqlite3.Connection, items: Sequence[tuple[NewCost, str]], now: int) -> list[CostRow]:
    """Events (each with its task's type) in one multi-row statement, in order; the rollups follow in it
    (the trigger). The caller has checked that their tasks exist."""
    rows = [
        (
            n.request_id,
            n.request_fp,
            n.task_number,
            task_type,
            n.provider,
            n.model,
            n.input_tokens,
            n.output_tokens,
            n.cache_read_tokens,
            n.cache_write_tokens,
            n.reasoning_tokens,
            n.caller_cost_usd,
            n.computed_cost_usd,
            n.price_id,
            n.cost_note,
            n.occurred_at,
            now,
        )
        for n, task_type in items
    ]
    first = insert_rows(conn, "cost_events", _INSERT_COLUMNS, rows)
    return [
        CostRow(
            id=first + i,
            request_id=n.request_id,
            task_number=n.task_number,
            task_type=task_type,
            provider=n.provider,
            model=n.model,
            input_tokens=n.input_tokens,
            output_tokens=n.output_tokens,
            cache_read_tokens=n.cache_read_tokens,
            cache_write_tokens=n.cache_write_tokens,
            reasoning_tokens=n.reasoning_tokens,
            caller_cost_usd=n.caller_cost_usd,
            computed_cost_usd=n.computed_cost_usd,
            price_id=n.price_id,
            cost_note=n.cost_note,
            occurred_at=n.occurred_at,
        )
        for i, (n, task_type) in enumerate(items)
    ]


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


#: Group-by word -> the events' key expression.
EVENT_KEYS: dict[str, str] = {
    "model": "model",
    "task": "COALESCE(task_number, 0)",
    "type": "task_type",
    "day": f"occurred_at / {DAY_US}",
    "hour": f"occurred_at / {HOUR_US}",
}


@dataclass(frozen=True, slots=True)
class _Rollup:
    table: str
    unit: int  # µs per row of time (an hour, a day)
    time_column: str
    keys: dict[str, str]  # group-by word -> the rollup's key expression
    filters: dict[str, str]  # CostFilter attribute -> the rollup's column


_BY_TIME = _Rollup(
    "cost_rollup_hour",
    HOUR_US,
    "hour",
    {"model": "model", "day": f"hour / {DAY_US // HOUR_US}", "hour": "hour"},
    {"model": "model", "provider": "provider"},
)
_BY_TASK = _Rollup(
    "cost_rollup_task_day",
    DAY_US,
    "day",
    {"task": "task_number", "type": "task_type"},
    {"task_number": "task_number", "task_type": "task_type"},
)

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


def _rollup_for(group_by: str, flt: CostFilter) -> _Rollup | None:
    """The rollup that can answer, or None (filters from both sides: the events answer)."""
    given = {name for name in ("task_number", "model", "provider", "task_type") if getattr(flt, name) is not None}
    for rollup in (_BY_TIME, _BY_TASK):
        if group_by in rollup.keys and given <= set(rollup.filters):
            return rollup
    return None


def _from_events(conn: sqlite3.Connection, group_by: str, flt: CostFilter, out: dict[Any, Sums]) -> None:
    sql, args = _where(flt)
    _add(out, conn.execute(f"SELECT {EVENT_KEYS[group_by]}, {_SUMS} FROM cost_events{sql} GROUP BY 1", args).fetchall())


def summarize(conn: sqlite3.Connection, group_by: str, flt: CostFilter) -> dict[Any, Sums]:
    """Sums by group key (model, task number with 0 for none, task type, day or hour number).

    Whole rollup rows (hours, or days) come from the rollup that has the group and the filters;
    the parts of the range before its first whole row and after its last come from the events
    (an index range on ``occurred_at``), as does everything when no rollup fits.
    """
    out: dict[Any, Sums] = {}
    rollup = _rollup_for(group_by, flt)
    if rollup is None:
        _from_events(conn, group_by, flt, out)
        return out
    unit = rollup.unit
    first = None if flt.start is None else -(-flt.start // unit)  # the first whole row
    last = None if flt.end is None else flt.end // unit  # whole rows end before it
    if first is not None and last is not None and first >= last:
        _from_events(conn, group_by, flt, out)  # no whole row inside the range
        return out
    where: list[str] = []
    args: list[Any] = []
    for name, column in rollup.filters.items():
        value = getattr(flt, name)
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if first is not None:
        where.append(f"{rollup.time_column} >= ?")
        args.append(first)
    if last is not None:
        where.append(f"{rollup.time_column} < ?")
        args.append(last)
    sql = (" WHERE " + " AND ".join(where)) if where else ""
    query = f"SELECT {rollup.keys[group_by]}, {_ROLLUP_SUMS} FROM {rollup.table}{sql} GROUP BY 1"
    _add(out, conn.execute(query, args).fetchall())
    if first is not None and flt.start is not None and flt.start < first * unit:
        _from_events(conn, group_by, replace(flt, end=first * unit), out)
    if last is not None and flt.end is not None and last * unit < flt.end:
        _from_events(conn, group_by, replace(flt, start=last * unit), out)
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
    # The rollups moved with the row (the trigger cost_events_reprice).
    conn.execute(
        "INSERT INTO cost_reprices (event_id, old_cost_usd, new_cost_usd, old_price_id, new_price_id, actor, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (row.id, row.computed_cost_usd, cost, row.price_id, price_id, actor, now),
    )
    return True


def task_exists(conn: sqlite3.Connection, number: int) -> bool:
    return conn.execute("SELECT 1 FROM tasks WHERE id = ?", (number,)).fetchone() is not None


# -- budgets -------------------------------------------------------------------------------------

#: Task numbers per IN (...) list: far below any backend's limit of bound values.
_IN_CHUNK = 500


def _chunks(numbers: Sequence[int]) -> list[Sequence[int]]:
    return [numbers[i : i + _IN_CHUNK] for i in range(0, len(numbers), _IN_CHUNK)]


def task_budgets(conn: sqlite3.Connection, numbers: Sequence[int]) -> dict[int, tuple[str, float | None]]:
    """(type, own budget or None) of each of these tasks that exists."""
    out: dict[int, tuple[str, float | None]] = {}
    for part in _chunks(numbers):
        marks = ",".join("?" * len(part))
        for r in conn.execute(f"SELECT id, COALESCE(type, ''), budget_usd FROM tasks WHERE id IN ({marks})", part):
            out[int(r[0])] = (str(r[1]), None if r[2] is None else float(r[2]))
    return out


def task_spend(conn: sqlite3.Connection, numbers: Sequence[int]) -> dict[int, float]:
    """What each of these tasks has spent over its whole life (from the task rollup, by its index)."""
    out: dict[int, float] = {}
    for part in _chunks(numbers):
        marks = ",".join("?" * len(part))
        rows = conn.execute(
            f"SELECT task_number, SUM(cost_usd) FROM cost_rollup_task_day WHERE task_number IN ({marks})"
            " GROUP BY task_number",
            part,
        )
        out.update((int(r[0]), float(r[1] or 0.0)) for r in rows)
    return out


def fleet_spend_by_day(conn: sqlite3.Connection, first_day: int, end_day: int) -> dict[int, float]:
    """What the whole fleet spent on each UTC day number in [first_day, end_day) (from the hourly rollup)."""
    per = DAY_US // HOUR_US
    rows = conn.execute(
        f"SELECT hour / {per}, SUM(cost_usd) FROM cost_rollup_hour WHERE hour >= ? AND hour < ? GROUP BY 1",
        (first_day * per, end_day * per),
    )
    return {int(r[0]): float(r[1] or 0.0) for r in rows}
