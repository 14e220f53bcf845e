"""What the tasks domain asks of CostService (:class:`CostLink`): a budget check when a task's budget
or type changes.

Domains never import each other: CostService implements this Protocol, app.py sets
``TaskService.costs``, and CostService reaches back through ``TaskService.log_event_in`` to log
``budget_exceeded``. With no CostService wired (a TaskService on its own, in tests), a budget is
stored and nothing else happens.
"""

from __future__ import annotations

from typing import Protocol

from lobwife_server.storage.database import WriteContext
from lobwife_server.storage.interfaces import Conn


class CostLink(Protocol):
    """CostService as the tasks domain uses it."""

    def budget_changed_in(
        self,
        conn: Conn,
        wctx: WriteContext,
        number: int,
        before: tuple[str, float | None],
        after: tuple[str, float | None],
    ) -> None:
        """Inside the write of an update that changed task ``number``'s (type, budget_usd) from ``before``
        to ``after``: log ``budget_exceeded`` when what the task has spent is over its budget now and
        was not before (a budget lowered below the spend, or a type whose default is lower)."""
        ...
