"""The lobwife server: one asyncio process serving gRPC and HTTP/JSON over one database.

Start-up: open (and migrate) the database, build the services, start gRPC
(with grpc.health.v1 and reflection) and the HTTP gateway, then report SERVING.
On SIGTERM or SIGINT: health flips to NOT_SERVING, watch streams end, new calls
are refused, in-flight calls get ``grace`` seconds, the database's queued writes
commit, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Callable

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from lobwife.v1.services import SERVICE_NAMES
from lobwife_server import config as config_mod
from lobwife_server.api import gateway
from lobwife_server.api.rpc import Dispatcher
from lobwife_server.audits.service import AuditService
from lobwife_server.auth import policy as auth_policy
from lobwife_server.auth import settings as auth_settings
from lobwife_server.auth.enforcer import Mode
from lobwife_server.auth.keys import KeyFileError
from lobwife_server.auth.policy import Role
from lobwife_server.auth.tokens import MAX_TTL, LobwifeTokens
from lobwife_server.broker.service import EXPIRE_JOB, BrokerService
from lobwife_server.config import Config, ConfigError
from lobwife_server.core import logs
from lobwife_server.core.errors import ApiError
from lobwife_server.costs.prices import PriceTable, PriceTableError
from lobwife_server.costs.service import CostService
from lobwife_server.jobs import jobs_file, maintenance
from lobwife_server.jobs.scheduler import Scheduler
from lobwife_server.jobs.service import JobService
from lobwife_server.storage import migrations
from lobwife_server.storage.database import Database
from lobwife_server.storage.files import DatabaseError, adopt_legacy_database
from lobwife_server.storage.interfaces import Conn
from lobwife_server.system.service import SystemService
from lobwife_server.tasks.directory import TaskDirectory
from lobwife_server.tasks.service import TaskService
from lobwife_server.vault.runner import SYNC_JOB, VaultRunner
from lobwife_server.vault.sync import VaultError

log = logging.getLogger("lobwife")

#: Allocations (net new container objects) between young-generation collections; Python's default is 700.
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Fewer, cheaper garbage collections once start-up is done.

    Every call allocates a few dozen short-lived containers (futures, closures, write
    records), so at the default threshold the collector ran every ~30 creates, and the
    objects that survive (cache entries) promote older generations, whose collections
    walk the whole heap while holding the GIL. Measured under 64 concurrent creates
    (see bench/README.md): gRPC +7%, HTTP +6-12%; the threshold gives most of it.
    ``freeze`` moves what start-up built (modules, grpc, aiohttp, the scheduler) out of
    every later collection's way. It runs once, before SERVING, so its one full pass
    delays no call.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


#: The RPCs of the contract that are not built yet: each answers UNIMPLEMENTED (HTTP 501). The one
#: list of them (README.md's "What works today" says the same): the dispatcher refuses to start
#: when an RPC is neither implemented nor here, or is here and implemented.
NOT_BUILT: dict[str, str] = {}

#: Largest gRPC message accepted; HTTP bodies have their own bound (Config.max_body_bytes).
MAX_GRPC_MESSAGE = 4 * 1024 * 1024
HEALTH_CHECK_INTERVAL = 2.0


def _run_token_minter(tokens: LobwifeTokens) -> Callable[[str, float], str]:
    """A job run's credential: the service role, subject ``job:NAME``, for the run's lifetime."""

    def mint(job: str, ttl: float) -> str:
        token, _ = tokens.mint(Role.SERVICE, subject=f"job:{job}", ttl=min(ttl, MAX_TTL))
        return token

    return mint


class LobwifeServer:
    """The whole server: database, services, gRPC and HTTP listeners, scheduler, health; start() and stop() are
    its life cycle."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.started = time.monotonic()
        self.db = Database(config.db_path, readers=config.readers, commit_delay=config.commit_delay)
        self.health = health_aio.HealthServicer()
        self.grpc_server: grpc.aio.Server | None = None
        self.http_runner: web.AppRunner | None = None
        self.http_app: web.Application | None = None
        self.tasks: TaskService | None = None
        self.broker: BrokerService | None = None
        self.scheduler: Scheduler | None = None
        self.vault: VaultRunner | None = None
        self.auth: auth_settings.AuthRuntime | None = None
        self.grpc_port = 0
        self.http_port = 0
        self._monitor: asyncio.Task[None] | None = None
        self._stopping = False
        #: Set with gRPC health SERVING at the end of start(); GET /health reads it.
        self.ready = False

    async def start(self) -> None:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(adopt_legacy_database, cfg.state_dir, cfg.db_path)

        def migrate(conn: Conn) -> None:
            applied = migrations.migrate(conn)
            imported = migrations.import_legacy_json(conn, cfg.state_dir)
            log.info(
                "database ready",
                extra={
                    "path": str(cfg.db_path),
                    "schema_version": migrations.LATEST,
                    "migrations_applied": applied,
                    "imported": imported,
                },
            )

        # Before the database: a price file that cannot be used stops the start, saying which entry.
        prices = await asyncio.to_thread(PriceTable.load, cfg.prices_file)
        await self.db.open(migrate)
        self.tasks = await TaskService.create(self.db)
        file_jobs = None
        if cfg.jobs_file is not None:
            try:
                file_jobs = await asyncio.to_thread(jobs_file.load, cfg.jobs_file)
            except jobs_file.JobsFileError as e:
                # Documented policy: keep the last good definitions (in the database) and say why.
                log.error("jobs file not used; keeping the last good job definitions: %s", e)
        builtins = maintenance.builtin_jobs(self.db, cfg.state_dir, maintenance.MaintenanceConfig())
        # The tasks domain is the broker's TaskLink: a registration that names a task sets its fields.
        self.broker = await BrokerService.create(self.db, cfg.broker, self.tasks.tokens, tasks=self.tasks)
        # And the broker is the tasks domain's BrokerLink: broker fields of an update register or
        # deregister the task, and a task that ends ends its registrations.
        self.tasks.broker = self.broker
        builtins[EXPIRE_JOB] = self.broker.expiry_job()
        if cfg.vault.path is not None:
            # A push to an http(s) remote (GitHub) takes a broker service token, so the vault needs no key
            # of its own; without a GitHub App the clone's own credentials are used (SSH, a file remote).
            broker = self.broker

            async def vault_token() -> str | None:
                try:
                    return await broker.service_token_for("lobwife-vault")
                except ApiError as e:
                    # The cycle's reason names only the failure's kind; the broker's message (never a
                    # secret) says why, here.
                    log.warning("vault: no service token from the broker: %s", e.message)
                    raise

            # A path that is not a git work tree stops the start here, saying why (VaultError).
            self.vault = VaultRunner(
                self.db,
                cfg.vault,
                token=vault_token if broker.configured else None,
                token_refused=broker.service_token_refused if broker.configured else None,
            )
            await self.vault.check()
            builtins[SYNC_JOB] = self.vault.job()
        # The URL jobs get is only known once the HTTP port is bound (it may be 0 in tests).
        self.scheduler = Scheduler(self.db, url=cfg.url, builtins=builtins, max_concurrent=cfg.max_concurrent_runs)
        scheduler = self.scheduler
        system = SystemService(
            self.db,
            self.started,
            lambda: sum(len(r) for r in scheduler.running.values()),
            ready=lambda: self.ready,
            broker_app_id=self.broker.app_id,
        )
        self.auth = await auth_settings.build(cfg.auth, cfg.state_dir, TaskDirectory(self.tasks))
        if self.auth.settings.mode is not Mode.OFF:
            scheduler.run_token = _run_token_minter(self.auth.tokens)
        auth_tokens = self.auth.tokens
        self.broker.mint_task_token = lambda number, ttl: auth_tokens.mint(Role.TASK, number, ttl=min(ttl, MAX_TTL))
        costs = CostService(self.db, self.tasks.tokens, prices, budgets=cfg.budgets)
        # Each is the other's link: a crossed budget logs its event on the task, and an update that
        # changes a task's budget or type asks for the budget check.
        costs.tasks = self.tasks
        self.tasks.costs = costs
        dispatcher = Dispatcher(
            {
                "lobwife.v1.AuthService": self.auth.service,
                "lobwife.v1.TaskService": self.tasks,
                "lobwife.v1.JobService": JobService(
                    scheduler, self.tasks.tokens, self.started, broker=self.broker.summary, sync=self.vault
                ),
                "lobwife.v1.BrokerService": self.broker,
                "lobwife.v1.AuditService": AuditService(self.db, self.tasks.tokens),
                "lobwife.v1.CostService": costs,
                "lobwife.v1.SystemService": system,
            },
            authorizer=self.auth.authorizer,
        )
        dispatcher.check_complete(NOT_BUILT)
        # Every RPC has a rule, in every auth mode: a new RPC without one stops the server here.
        auth_policy.check_complete((m.full_name, m.descriptor.input_type) for m in dispatcher.methods.values())
        self.auth.start()

        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE),
                ("grpc.max_send_message_length", MAX_GRPC_MESSAGE),
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers(dispatcher.grpc_handlers())
        # grpc's HealthServicer answers SERVING for "" from the start; lobwife is
        # not ready until recovery and catch-up are done, so say so explicitly.
        await self._set_health(serving=False)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        self.grpc_port = server.add_insecure_port(f"{cfg.host}:{cfg.grpc_port}")
        if self.grpc_port == 0:
            raise OSError(f"cannot bind gRPC to {cfg.host}:{cfg.grpc_port}")
        await server.start()
        self.grpc_server = server

        self.http_app = gateway.build_app(dispatcher, max_body_bytes=cfg.max_body_bytes)
        self.http_runner = gateway.make_runner(self.http_app, cfg.http_limits, shutdown_timeout=cfg.grace)
        await self.http_runner.setup()
        site = gateway.LimitedSite(self.http_runner, cfg.host, cfg.http_port, cfg.http_limits)
        await site.start()
        self.http_port = _bound_port(self.http_runner, cfg.http_port)
        scheduler.url = cfg.url.rsplit(":", 1)[0] + f":{self.http_port}"
        # After the ports listen: jobs (and catch-up runs) may call back over HTTP.
        await scheduler.start(file_jobs)
        if self.vault is not None:
            self.vault.start()  # the debounced sync after a task finishes, and TriggerSync

        tune_gc()
        await self._set_health(serving=True)
        self.ready = True
        self._monitor = asyncio.create_task(self._watch_database())
        log.info(
            "lobwife serving",
            extra={
                "grpc": f"{cfg.host}:{self.grpc_port}",
                "http": f"{cfg.host}:{self.http_port}",
                "state_dir": str(cfg.state_dir),
                "startup_seconds": round(time.monotonic() - self.started, 3),
            },
        )

    async def _set_health(self, *, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def _watch_database(self) -> None:
        """Report NOT_SERVING while the database cannot be used, SERVING once it recovers."""
        serving = True
        while not self._stopping:
            await asyncio.sleep(HEALTH_CHECK_INTERVAL)
            problem = await self.db.check()
            if (problem is None) != serving and not self._stopping:
                serving = problem is None
                await self._set_health(serving=serving)
                if problem:
                    log.error("database unusable; health is NOT_SERVING", extra={"problem": problem})
                else:
                    log.info("database usable again; health is SERVING")

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        t0 = time.monotonic()
        log.info("shutting down", extra={"grace_seconds": self.config.grace})
        await self.health.enter_graceful_shutdown()
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        if self.http_app is not None:
            gateway.set_draining(self.http_app)
        if self.tasks is not None:
            self.tasks.feed.close()  # end watch streams now; they would otherwise hold the whole grace
        if self.vault is not None:
            await self.vault.close()  # a cycle under way ends with the scheduler's grace below
        waits = []
        if self.scheduler is not None:
            # Stop firing; running jobs get the same grace as calls, then are ended and recorded.
            waits.append(self.scheduler.stop(self.config.grace))
        if self.grpc_server is not None:
            waits.append(self.grpc_server.stop(self.config.grace))
        if self.http_runner is not None:
            waits.append(self.http_runner.cleanup())
        await asyncio.gather(*waits, return_exceptions=True)
        if self.auth is not None:
            await self.auth.close()
        if self.broker is not None:
            await self.broker.close()  # revocations under way get a moment; then its GitHub client closes
        await self.db.close()
        log.info("stopped", extra={"shutdown_seconds": round(time.monotonic() - t0, 3)})


def _bound_port(runner: web.AppRunner, fallback: int) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return fallback


async def serve(cfg: Config) -> int:
    server = LobwifeServer(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except (
        OSError,
        migrations.MigrationError,
        DatabaseError,
        ApiError,
        KeyFileError,
        auth_policy.PolicyError,
        PriceTableError,
        VaultError,
    ) as e:
        # One line that says why (a full disk, a port in use, a database newer than the code), no
        # traceback: these are the operator's to fix, not bugs.
        log.error("cannot start: %s", e.message if isinstance(e, ApiError) else e)
        with contextlib.suppress(Exception):
            await server.stop()
        return 1
    await stop.wait()
    await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = config_mod.build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_mod.from_args(args)
    except ConfigError as e:
        parser.error(str(e))
    logs.setup(cfg.log_level, cfg.log_format)
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio works too
        return asyncio.run(serve(cfg))
    return uvloop.run(serve(cfg))


if __name__ == "__main__":
    sys.exit(main())
