"""SystemService: the legacy /health document."""

from __future__ import annotations

import time
from collections.abc import Callable

from lobwife.v1 import broker_pb2, system_pb2
from lobwife_server import __version__
from lobwife_server.api.rpc import CallContext
from lobwife_server.core.errors import ApiError
from lobwife_server.storage import task_store
from lobwife_server.storage.database import Database


class SystemService:
    """SystemService: the legacy /health document (503 "starting" until the server is ready)."""

    def __init__(
        self,
        db: Database,
        started: float,
        jobs_running: Callable[[], int] = lambda: 0,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.db = db
        self.started = started
        self.jobs_running = jobs_running
        #: True once gRPC health says SERVING (recovery and catch-up done): the one readiness
        #: both transports report.
        self.ready = ready

    async def GetHealth(self, req: system_pb2.GetHealthRequest, ctx: CallContext) -> system_pb2.GetHealthResponse:
        resp = system_pb2.GetHealthResponse(
            status="ok",
            uptime=round(time.monotonic() - self.started, 3),
            jobs_running=self.jobs_running(),
            broker=broker_pb2.BrokerSummary(enabled=False),
            version=__version__,
        )
        try:
            count = await self.db.read(task_store.task_count)
            problem = await self.db.check()
        except ApiError as e:
            count, problem = 0, e.message
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
