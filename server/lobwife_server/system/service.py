"""SystemService: the legacy /health document."""

from __future__ import annotations

import time
from collections.abc import Callable

from lobwife.v1 import broker_pb2, system_pb2
from lobwife_server import __version__
from lobwife_server.api.rpc import CallContext
from lobwife_server.core.errors import ApiError
from lobwife_server.storage import broker_store, task_store
from lobwife_server.storage.database import Database


def broker_summary(counts: broker_store.BrokerCounts | None, app_id: str | None = None) -> broker_pb2.BrokerSummary:
    """The legacy broker summary: the figures from the database (zeros only when it cannot be read).

    ``enabled`` and ``app_id``: whether the broker has a GitHub App configured, and its id.
    """
    s = broker_pb2.BrokerSummary(enabled=app_id is not None)
    if app_id is not None:
        s.app_id = app_id
    if counts is not None:
        s.active_tasks = counts.active_tasks
        s.total_tokens_issued = counts.total_tokens_issued
        s.audit_entries = counts.audit_entries
    return s


class SystemService:
    """SystemService: the legacy /health document (503 "starting" until the server is ready)."""

    def __init__(
        self,
        db: Database,
        started: float,
        jobs_running: Callable[[], int] = lambda: 0,
        ready: Callable[[], bool] = lambda: True,
        broker_app_id: str | None = None,
    ) -> None:
        self.db = db
        #: The token broker's GitHub App id; None: the broker is not configured.
        self.broker_app_id = broker_app_id
        self.started = started
        self.jobs_running = jobs_running
        #: True once gRPC health says SERVING (recovery and catch-up done): the one readiness
        #: both transports report.
        self.ready = ready

    async def broker_summary(self) -> broker_pb2.BrokerSummary:
        """The legacy broker summary from the database (GET /api/status's; GET /health builds its own)."""
        try:
            return broker_summary(await self.db.read(broker_store.summary), self.broker_app_id)
        except ApiError:
            return broker_summary(None, self.broker_app_id)

    async def GetHealth(self, req: system_pb2.GetHealthRequest, ctx: CallContext) -> system_pb2.GetHealthResponse:
        resp = system_pb2.GetHealthResponse(
            status="ok",
            uptime=round(time.monotonic() - self.started, 3),
            jobs_running=self.jobs_running(),
            version=__version__,
        )
        counts: broker_store.BrokerCounts | None = None
        try:
            count = await self.db.read(task_store.task_count)
            counts = await self.db.read(broker_store.summary)
            problem = await self.db.check()
        except ApiError as e:
            count, problem = 0, e.message
        resp.broker.CopyFrom(broker_summary(counts, self.broker_app_id))
        resp.db.size_bytes = self.db.size_bytes()
        if not self.ready():
            # Not ready yet (recovering runs, catching up): the legacy document with status
            # "starting" and HTTP 503, so an HTTP probe or script waits as a gRPC probe would.
            resp.status = "starting"
            ctx.http_status = 503
        if problem is None:
            resp.db.ok = True
            resp.db.task_count = count
        else:
            resp.status = "degraded"
            resp.db.ok = False
            resp.db.error = problem
        return resp
