"""What the tasks domain asks of the token broker (:class:`BrokerLink`), and the broker words a task holds.

Domains never import each other: the broker implements this Protocol (BrokerService), and app.py
sets ``TaskService.broker``, as the broker reaches the tasks domain through its ``TaskLink``. With
no broker wired (a TaskService on its own, in tests), the broker fields of an update are stored and
nothing else happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from lobwife_server.api.rpc import CallContext
from lobwife_server.storage.database import WriteContext
from lobwife_server.storage.interfaces import Conn

#: A task's ``broker_status`` while it is registered.
BROKER_ACTIVE = "active"
#: The words that say a task's registration has ended: the broker writes ``deregistered`` and
#: ``expired``; an update may give any of them. A task credential of such a task is dead.
BROKER_ENDED = frozenset({"deregistered", "inactive", "expired", "revoked"})
#: Every ``broker_status`` an update may set, in the order error messages list them.
BROKER_STATUSES = (BROKER_ACTIVE, *sorted(BROKER_ENDED))


class BrokerLink(Protocol):
    """The token broker as the tasks domain uses it (BrokerService implements it)."""

    async def check_repos(self, field: str, repos: Sequence[str]) -> tuple[str, ...]:
        """The repositories validated as a registration's (1 to 500 ``owner/name``, deduplicated, on the
        installation's account when configured); INVALID_ARGUMENT naming ``field`` / ``field[i]``."""
        ...

    def identity_of(self, ctx: CallContext) -> str:
        """Who asked, as the token audit records it."""
        ...

    def register_in(
        self, conn: Conn, wctx: WriteContext, number: int, repos: Sequence[str], lobster_type: str, who: str
    ) -> bool:
        """Registers task ``number`` under the reference ``T<number>`` inside the caller's write (audited
        ``task_registered``); False, writing nothing, when that same registration is already active."""
        ...

    def deregister_in(self, conn: Conn, wctx: WriteContext, number: int, who: str, detail: str) -> int:
        """Ends every registration linked to task ``number`` inside the caller's write (audited
        ``task_deregistered``; their unshared cached tokens revoked after the commit); how many. Leaves
        the task row to the caller."""
        ...

    def task_finished(self, number: int, status: str) -> None:
        """After a commit that completed, failed or cancelled task ``number`` (on the event loop): end its
        registrations now (no token from here on) and revoke their tokens."""
        ...
