"""The summary pages of a server cycle: ``010-tasks/_costs.md`` and ``010-tasks/_audits.md``.

Pure functions from what ``storage.vault_store`` read to :class:`~lobwife_server.vault.render.TablePage`
(no I/O, no clock), so the same data always gives the same page, and a cycle in which the costs and
findings did not change writes and commits nothing. Every value shown is data from clients (a model
name, a finding's title): it goes into a table cell, which TablePage escapes, and never into a path
(the pages' names are fixed here).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lobwife.v1 import audits_pb2
from lobwife_server.storage.cost_store import Sums
from lobwife_server.storage.vault_store import CostWindow, OpenFindings
from lobwife_server.vault.render import Scalar, Table, TablePage, TaskLink

#: Days of spend the costs page shows.
COST_DAYS = 30
#: Open findings the audits page lists (the most severe first); the page says how many more are open.
AUDIT_ROWS = 200

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def day_text(day: int) -> str:
    """A day number (days since 1970-01-01, UTC) as ``YYYY-MM-DD``."""
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")


def usd(value: float) -> str:
    # A fixed form: `:.6g` would switch to exponents for small sums and drop cents for large ones.
    return f"{value:.4f}"


def cost_page(window: CostWindow | None, days: int = COST_DAYS) -> TablePage:
    """Spend by day (every day of the window, the newest first) and by model over the window."""
    if window is None:
        return TablePage(
            "costs",
            "Costs",
            _DAY_COLUMNS,
            [],
            summary={
                "window_start": None,
                "window_end": None,
                "cost_usd": 0.0,
                "calls": 0,
                "unpriced_calls": 0,
                "models": 0,
            },
            heading="By day (UTC)",
            note="No costs recorded yet.",
            more=[Table("By model", _MODEL_COLUMNS, [])],
        )
    total = Sums()
    day_rows: list[list[Scalar]] = []
    for day in range(window.last_day, window.first_day - 1, -1):
        s = window.by_day.get(day, Sums())
        total.add(s)
        day_rows.append([day_text(day), *_counts(s)])
    models = sorted(window.by_model.items(), key=lambda kv: (-kv[1].cost_usd, kv[0]))
    model_rows: list[list[Scalar]] = [[model, *_counts(s)] for model, s in models]
    start, end = day_text(window.first_day), day_text(window.last_day)
    return TablePage(
        "costs",
        "Costs",
        _DAY_COLUMNS,
        day_rows,
        summary={
            "window_start": start,
            "window_end": end,
            # Rounded: a float sum's last digits are noise, and would show as a change.
            "cost_usd": round(total.cost_usd, 6),
            "calls": total.calls,
            "unpriced_calls": total.unpriced_calls,
            "models": len(models),
        },
        heading="By day (UTC)",
        note=(
            f"The {days} days up to the newest recorded cost, {start} to {end}. USD is the caller's figure, "
            "else the price table's; unpriced calls count as 0."
        ),
        more=[Table(f"By model, {start} to {end}", _MODEL_COLUMNS, model_rows)],
    )


_COUNT_COLUMNS = ("calls", "input tokens", "output tokens", "cache read", "cache write", "unpriced calls", "USD")
_DAY_COLUMNS = ("day", *_COUNT_COLUMNS)
_MODEL_COLUMNS = ("model", *_COUNT_COLUMNS)


def _counts(s: Sums) -> list[Scalar]:
    return [
        s.calls,
        s.input_tokens,
        s.output_tokens,
        s.cache_read_tokens,
        s.cache_write_tokens,
        s.unpriced_calls,
        usd(s.cost_usd),
    ]


def severity_word(value: int) -> str:
    """``SEVERITY_HIGH`` -> ``high``; a number this build does not know stays a number."""
    try:
        return audits_pb2.Severity.Name(value).removeprefix("SEVERITY_").lower()  # type: ignore[arg-type]
    except ValueError:
        return str(value)


#: The audits page's per-severity keys, the most severe first.
_SEVERITIES = (5, 4, 3, 2, 1)


def audit_page(found: OpenFindings) -> TablePage:
    """The open findings, the most severe first, at most as many as were read; the rest counted."""
    rows: list[list[Scalar]] = []
    for f in found.rows:
        # A task subject links to its file (the link is built from the number, not from the text).
        subject: Scalar = TaskLink(f.task_number) if f.task_number is not None else f.subject
        seen = datetime.fromtimestamp(f.last_seen_at // 1_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append([severity_word(f.severity), f.id, f.category, f.title, subject, f.count, seen])
    total = found.total
    summary: dict[str, Scalar] = {"open": total, "not_shown": total - len(rows)}
    for sev in _SEVERITIES:
        summary[severity_word(sev)] = found.by_severity.get(sev, 0)
    if total == 0:
        note = "No open findings."
    elif total > len(rows):
        note = (
            f"{len(rows)} of {total} open findings shown, the most severe first; {total - len(rows)} more "
            "not shown (lobwife audits list --status open)."
        )
    else:
        note = f"All {total} open findings, the most severe first."
    return TablePage(
        "audits",
        "Open audit findings",
        ("severity", "id", "category", "title", "subject", "reports", "last seen"),
        rows,
        summary=summary,
        note=note,
    )
