"""The budget rules on their own: settings parsing (each bad entry named), which budget holds, and when a
spend crosses one (once, at the record that goes over, with float sums' last digits forgiven)."""

from __future__ import annotations

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
