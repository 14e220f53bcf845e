"""The budget rules on their own: settings parsing (each bad entry named), which budget holds, and when a
spend crosses one (once, at the record that goes over, with float sums' last digits forgiven)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lobwife_server.costs.budgets import (
    BudgetSettings,
    BudgetSettingsError,
    crossed,
    money,
    parse_fleet_budget,
    parse_type_budgets,
)


def test_type_budgets_parse_from_repeats_and_commas() -> None:
    assert parse_type_budgets(["swe=5", "qa=2.5, review=0", ""], "--task-budget") == {
        "swe": 5.0,
        "qa": 2.5,
        "review": 0.0,
    }
    assert parse_type_budgets([""], "LOBWIFE_TASK_BUDGETS") == {}


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ("swe", "X: 'swe' is not TYPE=USD"),
        ("=5", "X: '=5' is not TYPE=USD"),
        ("swe=lots", "X swe: 'lots' is not a number of US dollars"),
        ("swe=-1", "X swe: must be 0 to 1,000,000 US dollars"),
        ("swe=nan", "X swe: must be 0 to 1,000,000"),
        ("swe=inf", "X swe: must be 0 to 1,000,000"),
        ("swe=2e6", "X swe: must be 0 to 1,000,000"),
    ],
)
def test_a_bad_entry_is_named(entry: str, said: str) -> None:
    with pytest.raises(BudgetSettingsError, match=said.replace("(", r"\(")):
        parse_type_budgets([entry], "X")


def test_fleet_budget() -> None:
    assert parse_fleet_budget(None, "X") is None and parse_fleet_budget("  ", "X") is None
    assert parse_fleet_budget("100", "X") == 100.0
    with pytest.raises(BudgetSettingsError, match="X: 'a lot' is not a number"):
        parse_fleet_budget("a lot", "X")


def test_the_task_s_own_budget_wins_over_its_type_s_default() -> None:
    b = BudgetSettings({"swe": 5.0})
    assert b.for_task(1.0, "swe") == (1.0, "its own budget")
    assert b.for_task(0.0, "swe") == (0.0, "its own budget")  # 0 is a budget, not none
    assert b.for_task(None, "swe") == (5.0, "the default budget of type 'swe'")
    assert b.for_task(None, "qa") is None


def test_crossing_happens_once_at_the_record_that_goes_over() -> None:
    assert crossed(spent_after=1.2, added=0.4, budget=1.0)  # 0.8 -> 1.2
    assert not crossed(spent_after=0.8, added=0.4, budget=1.0)  # still within
    assert not crossed(spent_after=1.6, added=0.4, budget=1.0)  # already over before
    assert crossed(spent_after=1.2, added=0.2, budget=1.0)  # exactly at the budget before: this one goes over
    assert not crossed(spent_after=1.0, added=0.2, budget=1.0)  # at the budget is not over it
    # 0.1 * 3 is 0.30000000000000004: at a $0.30 budget, not over it.
    assert not crossed(spent_after=0.1 + 0.1 + 0.1, added=0.1, budget=0.3)


def test_money() -> None:
    assert [money(v) for v in (0, 5, 0.6, 1234.5, 0.0042, 0.00001)] == [
        "$0.00",
        "$5.00",
        "$0.60",
        "$1,234.50",
        "$0.0042",
        "$0.00",
    ]


async def test_a_batch_with_a_budgeted_task_that_spent_nothing_stays_on_the_fast_path(tmp_path: Path) -> None:
    """RecordCost calls met in one write: T2's call is of a model with no price (it costs nothing), T1's
    crosses its budget. The batch's one multi-row insert stands (no fallback to call by call), and T1's
    crossing is logged once."""
    from lobwife.v1 import costs_pb2
    from lobwife_server.core.timeutil import now_us
    from lobwife_server.core.validation import PageTokens
    from lobwife_server.costs.prices import PriceTable
    from lobwife_server.costs.service import CostService
    from lobwife_server.storage import migrations
    from lobwife_server.storage.database import Database

    db = Database(tmp_path / "lobwife.db", commit_delay=0)
    await db.open(migrations.migrate)
    try:
        await db.write(
            lambda c, w: c.execute(
                "INSERT INTO tasks (id, name, type, status, priority, requires_qa, created_at, updated_at)"
                " VALUES (1, 'a', 'swe', 'queued', 'normal', 0, 1, 1), (2, 'b', 'swe', 'queued', 'normal', 0, 1, 1)"
            )
        )
        svc = CostService(db, PageTokens(b"k" * 32), PriceTable.load(None), budgets=BudgetSettings({"swe": 0.25}))
        logged: list[tuple[int, str]] = []

        class Tasks:
            def log_event_in(
                self, conn: object, wctx: object, number: int, kind: str, detail: str, actor: object
            ) -> bool:
                logged.append((number, kind))
                return True

        svc.tasks = Tasks()
        now = now_us()
        items = [
            svc._new(costs_pb2.RecordCostRequest(task_id="T1", model="claude-haiku-4-5", cost_usd=0.5)),
            svc._new(costs_pb2.RecordCostRequest(task_id="T2", model="no-such-model", input_tokens=10)),
        ]
        answers = await db.write(lambda c, w: svc._record_many(c, [(w, (new, now)) for new in items]))
        assert len(answers) == 2  # _record_many itself answered: it did not raise to fall back
        assert logged == [(1, "budget_exceeded")]
    finally:
        await db.close()
