"""SQL for audit findings: ``audit_findings``, their events, and the request ids of reports.

One row per fingerprint (a unique index): a report of a known finding updates that row, so
"the same finding" is decided by the database, not by a read followed by an insert that two
writers could race past (there is one writer here; PostgreSQL would lean on the same index with
``INSERT ... ON CONFLICT``). Times are integer microseconds, UTC. Migration 9 made the tables.
Read functions run on a reader thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: The words stored for a finding's status (the contract's enum, short and lowercase).
STATUSES = ("open", "resolved", "wont_fix")

_COLUMNS = (
    "id, fingerprint, category, severity, title, detail, subject, task_number, source, status,"
    " resolution, note, resolved_by, report_count, created_at, updated_at, last_seen_at, resolved_at"
)


@dataclass(frozen=True, slots=True)
class FindingRow:
    """A finding as stored."""

    id: int
    fingerprint: str
    category: str
    severity: int
    title: str
    detail: str
    subject: str
    task_number: int | None
    source: str
    status: str
    resolution: str
    note: str
    resolved_by: str | None
    count: int
    created_at: int
    updated_at: int
    last_seen_at: int
    resolved_at: int | None


@dataclass(frozen=True, slots=True)
class FindingEventRow:
    id: int
    finding_id: int
    kind: str
    actor: str
    detail: str
    created_at: int


@dataclass(frozen=True, slots=True)
class NewFinding:
    """What a report says, validated: everything a new row needs but its times and counts."""

    fingerprint: str
    category: str
    severity: int
    title: str
    detail: str
    subject: str
    task_number: int | None
    source: str


@dataclass(frozen=True, slots=True)
class FindingFilter:
    """ListFindings' filters; None is no filter."""

    status: str | None = None
    min_severity: int | None = None
    task_number: int | None = None
    category: str | None = None
    subject: str | None = None
    seen_since: int | None = None


def _row(r: Sequence[Any]) -> FindingRow:
    return FindingRow(
        id=int(r[0]),
        fingerprint=r[1],
        category=r[2],
        severity=int(r[3]),
        title=r[4],
        detail=r[5],
        subject=r[6],
        task_number=r[7],
        source=r[8],
        status=r[9],
        resolution=r[10],
        note=r[11],
        resolved_by=r[12],
        count=int(r[13]),
        created_at=int(r[14]),
        updated_at=int(r[15]),
        last_seen_at=int(r[16]),
        resolved_at=r[17],
    )


def get_finding(conn: sqlite3.Connection, finding_id: int) -> FindingRow | None:
    r = conn.execute(f"SELECT {_COLUMNS} FROM audit_findings WHERE id = ?", (finding_id,)).fetchone()
    return _row(r) if r is not None else None


def find_by_fingerprint(conn: sqlite3.Connection, fingerprint: str) -> FindingRow | None:
    r = conn.execute(f"SELECT {_COLUMNS} FROM audit_findings WHERE fingerprint = ?", (fingerprint,)).fetchone()
    return _row(r) if r is not None else None


def insert_finding(conn: sqlite3.Connection, new: NewFinding, now: int) -> FindingRow:
    cur = conn.execute(
        "INSERT INTO audit_findings (fingerprint, category, severity, title, detail, subject, task_number, source,"
        " status, resolution, note, report_count, created_at, updated_at, last_seen_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', '', '', 1, ?, ?, ?)"
        f" RETURNING {_COLUMNS}",
        (
            new.fingerprint,
            new.category,
            new.severity,
            new.title,
            new.detail,
            new.subject,
            new.task_number,
            new.source,
            now,
            now,
            now,
        ),
    )
    return _row(cur.fetchone())


def count_report(conn: sqlite3.Connection, finding_id: int, now: int, *, reopen: bool) -> FindingRow:
    """One more report of a finding: its count and ``last_seen_at``; ``reopen`` also sets it open again
    (its resolution cleared: the events keep what it was)."""
    if reopen:
        sql = (
            "UPDATE audit_findings SET report_count = report_count + 1, last_seen_at = MAX(last_seen_at, :now),"
            " status = 'open', resolution = '', note = '', resolved_by = NULL, resolved_at = NULL,"
            " updated_at = MAX(updated_at + 1, :now)"
        )
    else:
        sql = "UPDATE audit_findings SET report_count = report_count + 1, last_seen_at = MAX(last_seen_at, :now)"
    cur = conn.execute(f"{sql} WHERE id = :id RETURNING {_COLUMNS}", {"now": now, "id": finding_id})
    return _row(cur.fetchone())


#: The columns UpdateFinding may set (the contract's field names).
UPDATABLE = ("severity", "title", "detail", "subject", "source")


def update_finding(conn: sqlite3.Connection, finding_id: int, values: dict[str, Any], now: int) -> FindingRow:
    """Sets ``values`` (UPDATABLE columns, plus ``task_number`` with ``subject``); ``updated_at`` moves."""
    unknown = set(values) - {*UPDATABLE, "task_number"}
    if unknown:
        raise ValueError(f"not updatable: {', '.join(sorted(unknown))}")
    sets = ", ".join(f"{name} = :{name}" for name in values)
    cur = conn.execute(
        f"UPDATE audit_findings SET {sets}, updated_at = MAX(updated_at + 1, :now) WHERE id = :id RETURNING {_COLUMNS}",
        {**values, "now": now, "id": finding_id},
    )
    return _row(cur.fetchone())


def set_status(
    conn: sqlite3.Connection,
    finding_id: int,
    status: str,
    resolution: str,
    note: str,
    actor: str | None,
    now: int,
) -> FindingRow:
    """Resolves (``resolved``, ``wont_fix``: with how, a note and who) or reopens (``open``) a finding."""
    if status not in STATUSES:
        raise ValueError(f"unknown finding status {status!r}")
    ended = status != "open"
    cur = conn.execute(
        "UPDATE audit_findings SET status = :status, resolution = :resolution, note = :note, resolved_by = :actor,"
        " resolved_at = :resolved_at, updated_at = MAX(updated_at + 1, :now)"
        f" WHERE id = :id RETURNING {_COLUMNS}",
        {
            "status": status,
            "resolution": resolution if ended else "",
            "note": note if ended else "",
            "actor": actor if ended else None,
            "resolved_at": now if ended else None,
            "now": now,
            "id": finding_id,
        },
    )
    return _row(cur.fetchone())


def insert_event(conn: sqlite3.Connection, finding_id: int, kind: str, actor: str, detail: str, now: int) -> int:
    cur = conn.execute(
        "INSERT INTO audit_finding_events (finding_id, kind, actor, detail, created_at) VALUES (?, ?, ?, ?, ?)",
        (finding_id, kind, actor, detail, now),
    )
    return int(cur.lastrowid or 0)


def list_events(conn: sqlite3.Connection, finding_id: int, limit: int) -> list[FindingEventRow]:
    """The newest ``limit`` events of a finding, oldest first."""
    rows = conn.execute(
        "SELECT id, finding_id, kind, actor, detail, created_at FROM audit_finding_events"
        " WHERE finding_id = ? ORDER BY id DESC LIMIT ?",
        (finding_id, limit),
    ).fetchall()
    return [FindingEventRow(int(r[0]), int(r[1]), r[2], r[3], r[4], int(r[5])) for r in reversed(rows)]


def list_findings(conn: sqlite3.Connection, flt: FindingFilter, before_id: int | None, limit: int) -> list[FindingRow]:
    """Newest first (by id), matching every filter given, with ids below ``before_id``."""
    where: list[str] = []
    args: list[Any] = []
    for column, op, value in (
        ("status", "=", flt.status),
        ("severity", ">=", flt.min_severity),
        ("task_number", "=", flt.task_number),
        ("category", "=", flt.category),
        ("subject", "=", flt.subject),
        ("last_seen_at", ">=", flt.seen_since),
        ("id", "<", before_id),
    ):
        if value is not None:
            where.append(f"{column} {op} ?")
            args.append(value)
    sql = f"SELECT {_COLUMNS} FROM audit_findings"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return [_row(r) for r in conn.execute(sql, args).fetchall()]


def find_request(conn: sqlite3.Connection, request_id: str) -> tuple[int, bytes, bool, bool] | None:
    """A report's request id: (finding id, request fingerprint, created, reopened), or None."""
    r = conn.execute(
        "SELECT finding_id, request_fp, created, reopened FROM audit_requests WHERE request_id = ?", (request_id,)
    ).fetchone()
    return (int(r[0]), bytes(r[1]), bool(r[2]), bool(r[3])) if r is not None else None


def insert_request(
    conn: sqlite3.Connection,
    request_id: str,
    finding_id: int,
    request_fp: bytes,
    created: bool,
    reopened: bool,
    now: int,
) -> None:
    conn.execute(
        "INSERT INTO audit_requests (request_id, finding_id, request_fp, created, reopened, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (request_id, finding_id, request_fp, int(created), int(reopened), now),
    )


def task_exists(conn: sqlite3.Connection, number: int) -> bool:
    return conn.execute("SELECT 1 FROM tasks WHERE id = ?", (number,)).fetchone() is not None
