"""SQL for the token broker's tables: ``broker_tasks`` (registrations) and ``token_audit``.

Both keep the old daemon's shape (migration 1), so an upgraded database, and the
JSON state files imported into it, carry their rows over as they were. Read
functions run on a reader thread.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from lobwife_server.core.timeutil import from_us, parse_legacy
from lobwife_server.storage.task_store import insert_rows


@dataclass(frozen=True)
class BrokerCounts:
    """The figures of the legacy broker summary (``GET /health``, ``GET /api/status``)."""

    active_tasks: int
    total_tokens_issued: int
    audit_entries: int


def summary(conn: sqlite3.Connection) -> BrokerCounts:
    """The broker summary's figures, counted as the old daemon counted them.

    - ``active_tasks``: registrations whose status is ``active``;
    - ``total_tokens_issued``: the sum of the registrations' ``token_count`` (each
      task token issued adds one to its registration's count; service tokens belong
      to no registration and are not in it). Not the number of ``token_issued`` audit
      rows: the old daemon kept only its newest 500 audit entries, so an old
      database's audit undercounts;
    - ``audit_entries``: rows of the audit log.

    A deregistered task's registration is deleted, its count with it, as in the old
    daemon: the total is that of the registrations held.
    """
    row = conn.execute(
        "SELECT (SELECT COUNT(*) FROM broker_tasks WHERE status = 'active'),"
        " (SELECT COALESCE(SUM(token_count), 0) FROM broker_tasks),"
        " (SELECT COUNT(*) FROM token_audit)"
    ).fetchone()
    return BrokerCounts(int(row[0]), int(row[1]), int(row[2]))


# -- registrations and the audit log (BrokerService) ----------------------------------------------
#
# The columns of the old daemon keep its meaning and its text timestamps (``registered_at``,
# ``created_at``): rows it wrote, and those the JSON import adds after the migrations, are read as
# they are (``parse_legacy``); rows written here hold ISO 8601 UTC text with microseconds. Order is
# by ``token_audit.id``, never by the text. Migration 7 added the typed columns (``task_number``,
# ``last_used_at``, ``registered_by``; ``identity``, ``token_sha256``, ``reused``, ``detail``).

_TASK_REF = re.compile(r"[Tt]?([0-9]{1,18})")


def stamp_text(us: int) -> str:
    """A stored broker time: ISO 8601 UTC with microseconds (``parse_legacy`` reads it back).

    The same text as ``from_us(us).isoformat()``, with the whole second's part made once per second
    (a batch of audit rows mostly falls in one): this runs for every token handed out.
    """
    global _last_second
    seconds, micro = divmod(us, 1_000_000)
    last = _last_second
    if last[0] != seconds:
        last = _last_second = (seconds, from_us(seconds * 1_000_000).isoformat().removesuffix("+00:00"))
    return f"{last[1]}.{micro:06d}+00:00" if micro else f"{last[1]}+00:00"


#: The whole second stamp_text made last, and its text without the zone.
_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def load_list(value: object) -> list[str]:
    """A repos column as the old daemon left it: JSON text of a list, a bare string, or nothing."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return [value]
        if isinstance(parsed, list):
            return [str(x) for x in parsed if x is not None and str(x) != ""]
        return [str(parsed)]
    return [str(value)]


@dataclass(frozen=True)
class RegistrationRow:
    """One broker registration as stored (legacy ``broker_tasks``, typed where the old text allows)."""

    ref: str
    repos: tuple[str, ...]
    lobster_type: str
    registered_at: int | None  # microseconds; None when the old daemon's text is not a time
    status: str
    token_count: int
    last_used_at: int | None
    task_number: int | None


_REG_COLUMNS = "task_id, repos, lobster_type, registered_at, status, token_count, last_used_at, task_number"


def _registration(r: Sequence[Any]) -> RegistrationRow:
    return RegistrationRow(
        ref=str(r[0]),
        repos=tuple(load_list(r[1])),
        lobster_type=str(r[2] or "unknown"),
        registered_at=parse_legacy(r[3]),
        status=str(r[4] or "active"),
        token_count=int(r[5] or 0),
        last_used_at=int(r[6]) if isinstance(r[6], int) else None,
        task_number=int(r[7]) if isinstance(r[7], int) else None,
    )


def list_registrations(conn: sqlite3.Connection) -> list[RegistrationRow]:
    return [_registration(r) for r in conn.execute(f"SELECT {_REG_COLUMNS} FROM broker_tasks ORDER BY task_id")]


def get_registration(conn: sqlite3.Connection, ref: str) -> RegistrationRow | None:
    r = conn.execute(f"SELECT {_REG_COLUMNS} FROM broker_tasks WHERE task_id = ?", (ref,)).fetchone()
    return _registration(r) if r is not None else None


def upsert_registration(
    conn: sqlite3.Connection,
    ref: str,
    repos: Sequence[str],
    lobster_type: str,
    task_number: int | None,
    registered_by: str | None,
    now: int,
) -> None:
    """Registers ``ref`` (again): active, these repos, idle from now. A re-registration keeps its
    token count (the legacy summary's total is the sum of the counts held)."""
    conn.execute(
        "INSERT INTO broker_tasks (task_id, repos, lobster_type, registered_at, status, token_count, last_used_at,"
        " task_number, registered_by) VALUES (?, ?, ?, ?, 'active', 0, ?, ?, ?)"
        " ON CONFLICT (task_id) DO UPDATE SET repos = excluded.repos, lobster_type = excluded.lobster_type,"
        " registered_at = excluded.registered_at, status = 'active', last_used_at = excluded.last_used_at,"
        " task_number = excluded.task_number, registered_by = excluded.registered_by",
        (ref, json.dumps(list(repos)), lobster_type, stamp_text(now), now, task_number, registered_by),
    )


def delete_registration(conn: sqlite3.Connection, ref: str) -> bool:
    return conn.execute("DELETE FROM broker_tasks WHERE task_id = ?", (ref,)).rowcount > 0


def linked_refs(conn: sqlite3.Connection, number: int) -> list[str]:
    """The references of the registrations linked to task ``number`` (any status), in order."""
    rows = conn.execute("SELECT task_id FROM broker_tasks WHERE task_number = ? ORDER BY task_id", (number,))
    return [str(r[0]) for r in rows]


def active_links(conn: sqlite3.Connection, number: int) -> int:
    """How many active registrations are linked to task ``number``."""
    row = conn.execute(
        "SELECT COUNT(*) FROM broker_tasks WHERE task_number = ? AND status = 'active'", (number,)
    ).fetchone()
    return int(row[0])


def count_token(conn: sqlite3.Connection, ref: str, now: int) -> bool:
    """One more token for an active registration; False when it is no longer active (the token is not
    to be handed out)."""
    cur = conn.execute(
        "UPDATE broker_tasks SET token_count = token_count + 1, last_used_at = ?"
        " WHERE task_id = ? AND status = 'active'",
        (now, ref),
    )
    return cur.rowcount > 0


#: count_tokens' statement by the number of registrations it counts for.
_count_sql: dict[int, str] = {}


def count_tokens(conn: sqlite3.Connection, counts: Sequence[tuple[str, int, int]]) -> set[str]:
    """``count_token`` for several registrations at once: each ``(ref, n, at)`` adds ``n`` tokens to ``ref``
    and makes it used at ``at``, as ``n`` calls of ``count_token`` of which the last was at ``at``. Returns
    the references counted; the others are no longer active (their tokens are not to be handed out).

    One statement for them all (a second, a read, only when some are not active): a batch of
    token requests shares it. The references must be distinct.
    """
    if not counts:
        return set()
    sql = _count_sql.get(len(counts))
    if sql is None:
        rows = ", ".join(["(?, ?, ?)"] * len(counts))
        sql = _count_sql[len(counts)] = (
            f"WITH counted(ref, n, at) AS (VALUES {rows})"
            " UPDATE broker_tasks SET token_count = token_count + counted.n, last_used_at = counted.at"
            " FROM counted WHERE broker_tasks.task_id = counted.ref AND broker_tasks.status = 'active'"
        )
    cur = conn.execute(sql, [v for c in counts for v in c])
    refs = {ref for ref, _, _ in counts}
    if cur.rowcount == len(counts):
        return refs
    marks = ", ".join("?" * len(counts))
    found = conn.execute(
        f"SELECT task_id FROM broker_tasks WHERE status = 'active' AND task_id IN ({marks})", [c[0] for c in counts]
    )
    return refs & {str(r[0]) for r in found}


def expire_idle(conn: sqlite3.Connection, cutoff: int, now: int) -> list[tuple[str, list[str]]]:
    """Marks ``expired`` the active registrations idle since before ``cutoff``; returns their references
    and repositories.

    Idle since the last token, else since registering. A row with neither as a readable time (the
    old daemon's unreadable text) is stamped ``now``: it gets a whole idle period from here, rather
    than being expired on a time nobody can read.
    """
    expired: list[tuple[str, list[str]]] = []
    rows = conn.execute(
        "SELECT task_id, registered_at, last_used_at, repos FROM broker_tasks WHERE status = 'active'"
    ).fetchall()
    for ref, registered, used, repos in rows:
        since = used if isinstance(used, int) else parse_legacy(registered)
        if since is None:
            conn.execute("UPDATE broker_tasks SET last_used_at = ? WHERE task_id = ?", (now, ref))
        elif since < cutoff:
            conn.execute("UPDATE broker_tasks SET status = 'expired' WHERE task_id = ?", (ref,))
            expired.append((str(ref), load_list(repos)))
    return expired


def link_unlinked(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    """Links the old daemon's active registrations to the tasks they name (by ``find_task``), once;
    returns the (reference, task) pairs it linked.

    The old daemon kept no task link, so its rows are those lobwife did not register
    (``registered_by`` empty). Each is looked at once and then marked ``registered_by =
    'lobwife-upgrade'``, linked or not: a task created later under the same name does not pick up a
    stranger's registration at some restart (lobwife's own registrations never link late either).
    """
    linked: list[tuple[str, int]] = []
    refs = conn.execute(
        "SELECT task_id FROM broker_tasks WHERE registered_by IS NULL AND task_number IS NULL AND status = 'active'"
    ).fetchall()
    for (ref,) in refs:
        number = find_task(conn, ref)
        conn.execute(
            "UPDATE broker_tasks SET task_number = ?, registered_by = ? WHERE task_id = ?",
            (number, UPGRADE_ACTOR, ref),
        )
        if number is not None:
            linked.append((ref, number))
    return linked


#: Who registered the old daemon's registrations, as far as lobwife can tell.
UPGRADE_ACTOR = "lobwife-upgrade"


def find_task(conn: sqlite3.Connection, ref: str) -> int | None:
    """The task a broker reference names: ``T42`` / ``42`` (whatever its status), else the newest
    unfinished task whose slug, name or ``assigned_to`` it is (slug first, then name). None: no task;
    the registration is kept on its own. A finished task matched by name is not linked: a new worker
    may reuse an old one's name."""
    m = _TASK_REF.fullmatch(ref)
    if m is not None:
        row = conn.execute("SELECT id FROM tasks WHERE id = ?", (int(m.group(1)),)).fetchone()
        if row is not None:
            return int(row[0])
    row = conn.execute(
        "SELECT id FROM tasks WHERE (slug = :r OR name = :r OR assigned_to = :r)"
        " AND status NOT IN ('completed', 'failed', 'cancelled')"
        " ORDER BY slug = :r DESC, name = :r DESC, id DESC LIMIT 1",
        {"r": ref},
    ).fetchone()
    return int(row[0]) if row is not None else None


@dataclass(frozen=True)
class AuditRow:
    """One line of the token audit log as stored (never the token: a prefix of its SHA-256)."""

    id: int
    at: int | None  # microseconds; None when the old daemon's text is not a time
    task_id: str
    repos: tuple[str, ...]
    action: str
    identity: str
    token_sha256: str
    reused: bool
    detail: str


def insert_audit(
    conn: sqlite3.Connection,
    task_id: str,
    repos: Sequence[str] | None,
    action: str,
    now: int,
    *,
    identity: str | None = None,
    token_sha256: str | None = None,
    reused: bool = False,
    detail: str | None = None,
) -> int:
    cur = conn.execute(
        "INSERT INTO token_audit (task_id, repos, action, created_at, identity, token_sha256, reused, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            task_id,
            json.dumps(list(repos)) if repos is not None else None,
            action,
            stamp_text(now),
            identity,
            token_sha256,
            1 if reused else 0,
            detail,
        ),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


class NewAudit(NamedTuple):
    """An audit row to insert, as :func:`insert_audit`'s arguments."""

    task_id: str
    repos: Sequence[str] | None
    action: str
    now: int
    identity: str | None = None
    token_sha256: str | None = None
    reused: bool = False
    detail: str | None = None


_AUDIT_COLUMNS = ("task_id", "repos", "action", "created_at", "identity", "token_sha256", "reused", "detail")


def insert_audits(conn: sqlite3.Connection, rows: Sequence[NewAudit]) -> int:
    """``insert_audit`` for each row, in order, with one statement (a chunk per SQLite's bound on variables);
    the first row's id (the others follow it)."""
    texts: dict[tuple[str, ...], str] = {}  # the rows of a batch mostly share a few repository lists
    stamps: dict[int, str] = {}
    values = []
    for r in rows:
        repos = None
        if r.repos is not None:
            key = tuple(r.repos)
            repos = texts.get(key)
            if repos is None:
                repos = texts[key] = json.dumps(list(key))
        stamp = stamps.get(r.now)
        if stamp is None:
            stamp = stamps[r.now] = stamp_text(r.now)
        values.append((r.task_id, repos, r.action, stamp, r.identity, r.token_sha256, 1 if r.reused else 0, r.detail))
    return insert_rows(conn, "token_audit", _AUDIT_COLUMNS, values)


def list_audit(conn: sqlite3.Connection, task_id: str | None, before_id: int | None, limit: int) -> list[AuditRow]:
    """Newest first (by id), optionally one reference's, below ``before_id``."""
    sql = "SELECT id, created_at, task_id, repos, action, identity, token_sha256, reused, detail FROM token_audit"
    where: list[str] = []
    args: list[Any] = []
    if task_id is not None:
        where.append("task_id = ?")
        args.append(task_id)
    if before_id is not None:
        where.append("id < ?")
        args.append(before_id)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return [
        AuditRow(
            id=int(r[0]),
            at=parse_legacy(r[1]),
            task_id=str(r[2] or ""),
            repos=tuple(load_list(r[3])),
            action=str(r[4] or ""),
            identity=str(r[5] or ""),
            token_sha256=str(r[6] or ""),
            reused=bool(r[7]),
            detail=str(r[8] or ""),
        )
        for r in conn.execute(sql, args)
    ]
