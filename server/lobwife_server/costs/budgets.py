"""Budgets: a task's (its own ``budget_usd``, else its type's default) and the fleet's daily one.

Crossing a budget logs ``budget_exceeded`` on the task, once per crossing: the record that takes
a task's spend from at most its budget to over it, or the fleet's spend on a UTC day from at most
the daily budget to over it (the event goes on the task of that record; a record of no task is
logged and counted only). The check runs in the transaction that stores the records, so a crossing
is logged if and only if the records are stored. WatchTasks shows the event (lobboss stops the
worker); summaries flag the rows over budget (CostService.SummarizeCosts).

Nothing here is a hard stop: a record over budget is stored like any other, since the spend has
happened and the numbers must stay true.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from lobwife_server.core.validation import MAX_USD

#: Float sums drift in the last digits; a spend within this of the budget is at the budget.
EPSILON_USD = 1e-9


class BudgetSettingsError(ValueError):
    """A budget setting that cannot be used (the message names the entry)."""


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """The server's budgets: default per task type (``--task-budget swe=5``) and the fleet's per day."""

    per_type: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    fleet_daily_usd: float | None = None

    def for_task(self, own: float | None, task_type: str) -> tuple[float, str] | None:
        """The budget that holds for a task and where it comes from; None when it has none."""
        if own is not None:
            return own, "its own budget"
        default = self.per_type.get(task_type)
        if default is not None:
            return default, f"the default budget of type {task_type!r}"
        return None

    @property
    def any(self) -> bool:
        return bool(self.per_type) or self.fleet_daily_usd is not None


def _usd(where: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BudgetSettingsError(f"{where}: {text.strip()[:40]!r} is not a number of US dollars") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_USD:
        raise BudgetSettingsError(f"{where}: must be 0 to {MAX_USD:,.0f} US dollars, not {text.strip()[:40]!r}")
    return value


def parse_type_budgets(entries: list[str], where: str) -> dict[str, float]:
    """``TYPE=USD`` entries (each may hold several, comma-separated: ``swe=5,qa=2.5``) as a mapping."""
    out: dict[str, float] = {}
    for entry in entries:
        for part in entry.split(","):
            if not part.strip():
                continue
            name, sep, amount = part.partition("=")
            if not sep or not name.strip():
                raise BudgetSettingsError(f"{where}: {part.strip()[:60]!r} is not TYPE=USD (e.g. swe=5)")
            out[name.strip()] = _usd(f"{where} {name.strip()[:40]}", amount)
    return out


def parse_fleet_budget(text: str | None, where: str) -> float | None:
    if text is None or not text.strip():
        return None
    return _usd(where, text)


def crossed(spent_after: float, added: float, budget: float) -> bool:
    """Whether adding ``added`` took the spend from at most ``budget`` to over it."""
    return spent_after > budget + EPSILON_USD and spent_after - added <= budget + EPSILON_USD


def money(value: float) -> str:
    """``$5.00``, ``$0.0042``: cents, or the four decimals a model call's cost needs."""
    whole, frac = f"{value:,.4f}".split(".")
    return f"${whole}.{frac.rstrip('0').ljust(2, '0')}"
