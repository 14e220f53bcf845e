"""The vault sync in the server: the built-in job ``lobwife-vault-sync``, a debounced sync after a task
finishes, and what GetSyncStatus / TriggerSync answer.

Each cycle writes the tasks that changed since the durable cursor (``storage.vault_store``: a
``task_events`` id kept in ``meta``), and moves the cursor only when the cycle succeeded, so a
failed cycle (a conflict, a refused push, a full disk) is tried again with the same tasks and
more. The first cycle, and one asked with ``full``, rebuilds from every task. Every cycle also
rewrites the summary pages (``vault.pages``: costs, open audit findings), which change only when
their data did.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import duration_pb2

from lobwife.v1 import jobs_pb2
from lobwife_server.storage import vault_store
from lobwife_server.storage.interfaces import Storage
from lobwife_server.vault import pages
from lobwife_server.vault.render import TablePage
from lobwife_server.vault.sync import SyncResult, VaultSync

log = logging.getLogger("lobwife.vault")

SYNC_JOB = "lobwife-vault-sync"
DEFAULT_INTERVAL = 300.0
#: After a task completes, fails or is cancelled, the vault is synced within this (the checks of
#: the change feed are this far apart; several finishes in that time make one cycle).
DEBOUNCE = 10.0


@dataclass(frozen=True, slots=True)
class VaultSettings:
    """Off unless ``path`` is set (``--vault`` / ``VAULT_PATH``, the old daemon's variable)."""

    path: Path | None = None
    interval: float = DEFAULT_INTERVAL
    #: The git remote pushed to; None keeps the vault local (commits only).
    remote: str | None = "origin"
    debounce: float = DEBOUNCE


class VaultRunner:
    """Runs sync cycles for the server: on the job's schedule, on request, soon after a task finishes."""

    def __init__(
        self,
        db: Storage,
        settings: VaultSettings,
        token: Callable[[], Awaitable[str | None]] | None = None,
        token_refused: Callable[[str], None] | None = None,
    ) -> None:
        assert settings.path is not None
        self.db = db
        self.settings = settings
        self.sync = VaultSync(settings.path, remote=settings.remote, token=token, token_refused=token_refused)
        self.last_sync: float | None = None  # epoch seconds of the last cycle that succeeded
        self.last: SyncResult | None = None
        self.last_attempt: float | None = None  # epoch seconds the last cycle ended, ok or not
        self.last_full = False  # whether the last cycle was a full rebuild
        # A full rebuild asked for (TriggerSync `full`) and not yet done: kept until a full cycle
        # succeeds, so one asked while a cycle runs, or one whose cycle failed, is not lost.
        self._full_pending = False
        # One cycle at a time (the job's and the watch's): a cycle's cursor read, sync and cursor
        # write must not interleave with another's.
        self._cycle = asyncio.Lock()
        self._running = False
        self._requested = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._running

    @property
    def full_pending(self) -> bool:
        return self._full_pending

    async def check(self) -> None:
        """VaultError when the path is not a usable git work tree (the server says so at start)."""
        await self.sync.check()

    async def run_once(self, *, full: bool = False) -> SyncResult:
        """One cycle (after the one under way, if any); the cursor moves when it succeeds.

        ``full``, or a full rebuild asked for earlier and not yet done, rewrites every task file.
        """
        async with self._cycle:
            self._running = True
            # Taken now: a full request from here on is for the next cycle.
            asked = full = full or self._full_pending
            self._full_pending = False
            done = False
            try:
                start = await self.db.read(vault_store.cursor)
                summaries = await self._pages()
                known: Container[int] | None = None
                if full or start is None:
                    full = True
                    tasks, newest = await self.db.read(vault_store.all_tasks)
                else:
                    # With the numbers of the tasks there are (one snapshot): the overview then counts
                    # the files of those only, as a full rebuild does.
                    tasks, newest, known = await self.db.read(
                        lambda c: (*vault_store.changed_since(c, start), vault_store.task_numbers(c))
                    )
                result = await self.sync.sync(tasks, full=full, pages=summaries, known=known)
                self.last, self.last_full, self.last_attempt = result, full, time.time()
                if result.ok:
                    self.last_sync = self.last_attempt
                    if newest != start:
                        await self.db.write(lambda c, w: vault_store.set_cursor(c, newest))
                    done = True
                return result
            finally:
                if asked and not done:
                    self._full_pending = True
                self._running = False

    async def _pages(self) -> list[TablePage]:
        """The summary pages, from one read snapshot (off the loop, like every read)."""
        read = functools.partial(
            vault_store.summaries, now=int(time.time() * 1_000_000), days=pages.COST_DAYS, limit=pages.AUDIT_ROWS
        )
        window, found = await self.db.read(read)
        return [pages.cost_page(window), pages.audit_page(found)]

    async def job_run(self) -> str:
        """The built-in job's run: a failed cycle fails the run, saying why."""
        result = await self.run_once()
        if not result.ok:
            raise RuntimeError(f"vault sync failed: {result.error}")
        return (
            f"{len(result.written)} written, {len(result.moved)} moved, {len(result.removed)} removed,"
            f" {len(result.skipped)} skipped; commit {result.commit or 'none'}, pushed {result.pushed}"
        )

    def job(self) -> tuple[jobs_pb2.Job, Callable[[], Awaitable[str]]]:
        """The built-in job, listed and run like the maintenance jobs."""
        job = jobs_pb2.Job(
            name=SYNC_JOB,
            description=f"Write the tasks that changed into the vault at {self.settings.path} and push it",
            command=[f"builtin:{SYNC_JOB}"],
            enabled=True,
            concurrency=jobs_pb2.CONCURRENCY_POLICY_FORBID,
            catch_up=jobs_pb2.CATCH_UP_POLICY_ONCE,
            source=jobs_pb2.JOB_SOURCE_BUILTIN,
        )
        job.timeout.CopyFrom(duration_pb2.Duration(seconds=600))
        job.interval.FromNanoseconds(int(self.settings.interval * 1e9))
        return job, self.job_run

    def request(self, full: bool = False) -> None:
        """TriggerSync: a cycle as soon as the one under way (if any) ends; ``full``: a full rebuild."""
        if full:
            self._full_pending = True
        self._requested.set()

    def start(self) -> None:
        if self._watch is None:
            self._watch = asyncio.create_task(self._loop(), name="vault-watch")

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    async def _loop(self) -> None:
        """Runs a cycle when one is requested, or when a task finished since the cursor (debounced)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.debounce):
                    await self._requested.wait()
            try:
                wanted = self._requested.is_set()
                # After a failed cycle the debounce does not retry every few seconds: the job does,
                # at its interval (or a TriggerSync).
                if not wanted and (self.last is None or self.last.ok):
                    start = await self.db.read(vault_store.cursor)
                    wanted = start is not None and await self.db.read(
                        functools.partial(vault_store.finished_since, after=start)
                    )
                if wanted:
                    # Cleared before waiting for a cycle under way to end: a request from now on
                    # asks for the cycle after this one. (Left set while a cycle ran, the event
                    # made this loop spin without yielding.)
                    self._requested.clear()
                    await self.run_once()
            except Exception as e:  # a database refusal; the next look tries again
                log.warning("vault sync not run: %s", e)
