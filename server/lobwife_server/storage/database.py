"""SQLite storage: one writer thread with group commit, a pool of reader threads.

Why not one connection per request, or aiosqlite? Durability is
``synchronous=FULL``: every COMMIT waits for an fsync of the WAL. Committing each
request on its own caps writes at the disk's fsync rate. Instead, every write is
a function queued to a single writer thread, which takes everything queued,
runs each function inside its own SAVEPOINT (one failing write does not undo the
others), and COMMITs the batch once. Only after that COMMIT returns are the
callers' futures resolved, so an acknowledged write has reached the disk.

Writes of one kind that meet in a batch can share statements (``BatchKind``):
64 concurrent creates become one multi-row INSERT (a trigger logs their events)
instead of 128 statements, run as its own transaction. Every statement step
releases and re-takes the GIL, and under load the event loop holds it, so each
step costs the writer a wait; fewer steps mean shorter batches and less GIL
traffic for the loop.

Reads run on a few reader threads fed by a queue, each thread with its own
read-only connection; WAL lets them proceed while the writer commits. Nothing
here runs SQLite on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from lobwife_server.core import metrics
from lobwife_server.core.errors import ApiError, unavailable
from lobwife_server.storage import files

log = logging.getLogger("lobwife.storage")

T = TypeVar("T")
A = TypeVar("A")

#: Most writes one transaction takes; bounds the latency a large batch adds.
MAX_BATCH = 256
#: The longest the writer waits for more writes to join a batch, when the previous
#: batch shows other writers are active. A lone writer never waits.
DEFAULT_COMMIT_DELAY = 0.002
#: It waits in slices of this, and stops at the first slice that brings no write.
COMMIT_SLICE = 0.0005


class StorageError(ApiError):
    """The database could not be used (disk full, I/O error, closed)."""

    def __init__(self, message: str) -> None:
        err = unavailable(message)
        super().__init__(err.code, err.message)


@dataclass(frozen=True, eq=False)
class BatchKind(Generic[A, T]):
    """Writes that can be run together when several of them meet in one batch.

    ``one(conn, wctx, arg)`` runs a single write; ``many(conn, [(wctx, arg), ...])``
    runs several in that order and returns their results in that order, with the
    same effects as calling ``one`` for each. ``many`` runs only on the fast path:
    if anything in the batch fails, the batch is run again write by write with
    ``one``, each in its own SAVEPOINT.
    """

    one: Callable[[sqlite3.Connection, WriteContext, A], T]
    many: Callable[[sqlite3.Connection, list[tuple[WriteContext, A]]], list[T]]
    #: ``one`` and ``many`` change the database with a single statement, their last
    #: (reads may come before it). A batch made only of writes of this kind then runs
    #: with no BEGIN and COMMIT: that statement is its own transaction, atomic, and on
    #: disk when it returns. Two statement steps fewer per batch, each a wait for the
    #: GIL under load.
    single_statement: bool = False


class _Write:
    """One queued write: a function, or an argument for a BatchKind; its outcome once run."""

    __slots__ = ("after_commit", "arg", "error", "fn", "future", "kind", "result")

    def __init__(
        self,
        future: asyncio.Future[Any],
        fn: Callable[[sqlite3.Connection, WriteContext], Any] | None = None,
        kind: BatchKind[Any, Any] | None = None,
        arg: Any = None,
    ) -> None:
        self.future = future
        self.fn = fn
        self.kind = kind
        self.arg = arg
        self.result: Any = None
        self.error: BaseException | None = None
        # Callbacks to run on the event loop after the batch commits, before the
        # caller is resumed (used to publish change-feed items in commit order).
        self.after_commit: list[Callable[[], None]] = []

    def run(self, conn: sqlite3.Connection) -> Any:
        """Run it alone (``kind.one`` for a batch kind's write)."""
        if self.kind is not None:
            return self.kind.one(conn, WriteContext(self), self.arg)
        assert self.fn is not None
        return self.fn(conn, WriteContext(self))


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path if not readonly else f"file:{path}?mode=ro",
        uri=readonly,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        check_same_thread=False,
        timeout=30.0,
    )
    # Plain tuples: every query here reads columns by position, and Row objects cost ~25% more.
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA foreign_keys = ON")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a COMMIT returns only once the WAL is fsynced, so acknowledged
        # writes survive power loss, not only a process kill.
        conn.execute("PRAGMA synchronous = FULL")
    else:
        conn.execute("PRAGMA query_only = 1")
    conn.execute("PRAGMA cache_size = -16000")  # 16 MiB per connection
    return conn


class WriteContext:
    """Handed to a write function: register work to run once the batch commits."""

    def __init__(self, write: _Write) -> None:
        self._write = write

    def after_commit(self, fn: Callable[[], None]) -> None:
        self._write.after_commit.append(fn)


class Database:
    """The SQLite database: one writer thread with group commit, a pool of readers; nothing runs SQLite on the
    event loop."""

    def __init__(self, path: Path, *, readers: int = 2, commit_delay: float = DEFAULT_COMMIT_DELAY) -> None:
        self.path = path
        self.commit_delay = commit_delay
        self._readers = readers
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._read_queue: queue.SimpleQueue[_Read | None] = queue.SimpleQueue()
        self._read_threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = True
        self.healthy = True
        self.last_error: str | None = None

    # -- life cycle -----------------------------------------------------------

    async def open(self, migrate: Callable[[sqlite3.Connection], None]) -> None:
        """Open the database, run ``migrate`` on the writer connection, start threads."""
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def setup() -> sqlite3.Connection:
            conn = connect(self.path)
            migrate(conn)
            return conn

        self._writer_conn = await asyncio.to_thread(setup)
        self._closed = False
        self._writer = threading.Thread(target=self._writer_main, name="lobwife-db-writer", daemon=True)
        self._writer.start()
        self._read_threads = [
            threading.Thread(target=self._reader_main, name=f"lobwife-db-read-{i}", daemon=True)
            for i in range(self._readers)
        ]
        for t in self._read_threads:
            t.start()

    async def close(self) -> None:
        """Commit what is queued, then stop the threads and close connections."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._writer is not None:
            await asyncio.to_thread(self._writer.join)
        for _ in self._read_threads:
            self._read_queue.put(None)  # each reader finishes what is queued before it, then closes
        for t in self._read_threads:
            await asyncio.to_thread(t.join)
        self._read_threads = []

    @property
    def closed(self) -> bool:
        return self._closed

    # -- writes -----------------------------------------------------------------

    # write and write_as return the future itself rather than awaiting it in a
    # coroutine of their own: callers await it all the same, with one coroutine
    # frame fewer on every write.

    def write(self, fn: Callable[[sqlite3.Connection, WriteContext], T]) -> asyncio.Future[T]:
        """Run ``fn`` in the writer thread inside a transaction; the future resolves after COMMIT."""
        return self._enqueue(_Write(self._new_future(), fn))

    def write_as(self, kind: BatchKind[A, T], arg: A) -> asyncio.Future[T]:
        """Like :meth:`write` for ``kind.one(conn, wctx, arg)``; may share statements with others of its kind."""
        return self._enqueue(_Write(self._new_future(), kind=kind, arg=arg))

    def _new_future(self) -> asyncio.Future[Any]:
        if self._closed:
            raise StorageError("database is closed")
        assert self._loop is not None  # set by open(): the loop every caller runs on
        return self._loop.create_future()

    def _enqueue(self, item: _Write) -> asyncio.Future[Any]:
        self._queue.put(item)
        return item.future

    def _writer_main(self) -> None:
        conn = self._writer_conn
        assert conn is not None
        stop = False
        last_size = 1
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            # Group commit: with concurrent writers, a short wait lets the
            # writes still on their way share this COMMIT's fsync instead of
            # each paying for one (fewer, larger commits also write each index
            # page once per batch rather than once per write). The wait is in
            # slices, each a sleep and then a drain of the queue: waiting on the
            # queue itself would wake this thread, and make it wait for the GIL,
            # once per arriving write. It ends at the first slice that brings
            # nothing: writes that come in a burst (HTTP clients answered
            # together send together) are all in by then, and writes that trickle
            # in (gRPC streams) keep it going up to commit_delay.
            stop = self._drain(batch)
            waited = 0.0
            if last_size > 1:
                while not stop and waited < self.commit_delay and len(batch) < MAX_BATCH:
                    time.sleep(COMMIT_SLICE)
                    waited += COMMIT_SLICE
                    had = len(batch)
                    stop = self._drain(batch)
                    if len(batch) == had:
                        break
            last_size = len(batch)
            self._run_batch(conn, batch)
        conn.close()

    def _drain(self, batch: list[_Write]) -> bool:
        """Move what is queued into ``batch`` (up to MAX_BATCH); True when the stop sentinel came."""
        while len(batch) < MAX_BATCH:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                return False
            if nxt is None:
                return True
            batch.append(nxt)
        return False

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Write]) -> None:
        try:
            if not self._try_batch(conn, batch, isolate=False):
                # One write failed and the fast path rolled everything back: run
                # the batch again with each write in its own SAVEPOINT, so only
                # the failing write is undone. Write functions touch nothing but
                # the connection and their WriteContext, so re-running is safe.
                self._try_batch(conn, batch, isolate=True)
            self.healthy = True
        except sqlite3.Error as e:
            log.error("commit failed: %s", e)
            self.healthy = False
            self.last_error = str(e)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            for item in batch:
                item.error = StorageError(f"database write failed: {e}")
                item.after_commit.clear()
        metrics.DB_COMMIT_BATCH.observe(len(batch))
        assert self._loop is not None
        # RuntimeError: the loop closed during shutdown, so nobody is waiting.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_deliver, batch)

    @staticmethod
    def _try_batch(conn: sqlite3.Connection, batch: list[_Write], *, isolate: bool) -> bool:
        """Run the batch in one transaction. Without isolation, stop and roll back at the first failure."""
        if not isolate:
            kind = batch[0].kind
            if kind is not None and kind.single_statement and all(w.kind is kind for w in batch):
                return _run_single_statement(conn, batch)
        conn.execute("BEGIN IMMEDIATE")
        if not isolate:
            try:
                _run_fast(conn, batch)
            except Exception:
                conn.execute("ROLLBACK")
                return False
            conn.execute("COMMIT")
            return True
        for item in batch:
            item.error = None
            item.after_commit.clear()
            conn.execute("SAVEPOINT w")
            try:
                item.result = item.run(conn)
            except Exception as e:
                conn.execute("ROLLBACK TO w")
                item.error = e
                item.after_commit.clear()
            conn.execute("RELEASE w")
        conn.execute("COMMIT")
        return True

    # -- reads ------------------------------------------------------------------

    async def backup(self, dest_dir: Path, keep: int) -> str:
        """An online copy into ``dest_dir``, keeping the newest ``keep`` (storage.files.backup_once)."""
        return await asyncio.to_thread(files.backup_once, self.path, dest_dir, keep)

    async def checkpoint(self) -> str:
        """A passive WAL checkpoint (storage.files.checkpoint_once)."""
        return await asyncio.to_thread(files.checkpoint_once, self.path)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` with a read-only connection on a reader thread."""
        if self._closed or not self._read_threads:
            raise StorageError("database is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._read_queue.put((fn, fut))
        try:
            return await fut
        except sqlite3.Error as e:
            raise StorageError(f"database read failed: {e}") from e

    def _reader_main(self) -> None:
        # A queue and a plain future, as for writes: run_in_executor's chain of a
        # concurrent future into an asyncio one cost the loop ~60 µs a read under load.
        conn: sqlite3.Connection | None = None
        loop = self._loop
        assert loop is not None
        while True:
            item = self._read_queue.get()
            if item is None:
                break
            fn, fut = item
            result: Any = None
            error: BaseException | None = None
            try:
                if conn is None:
                    conn = connect(self.path, readonly=True)
                result = fn(conn)
            except BaseException as e:  # handed to the caller, whatever it is
                error = e
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, fut, result, error)
        if conn is not None:
            conn.close()

    async def check(self) -> str | None:
        """None when the database answers a read and the writer is alive; else the problem."""
        if self._writer is None or not self._writer.is_alive():
            return "writer thread is not running"
        try:
            await self.read(lambda c: c.execute("SELECT 1 FROM schema_version LIMIT 1").fetchone())
        except ApiError as e:
            return e.message
        if not self.healthy:
            return self.last_error or "last commit failed"
        return None

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total


def _run_fast(conn: sqlite3.Connection, batch: list[_Write]) -> None:
    """Run every write of the batch in order; consecutive writes of one kind run as one ``many`` call."""
    i, n = 0, len(batch)
    while i < n:
        item = batch[i]
        item.error = None
        item.after_commit.clear()
        kind = item.kind
        j = i + 1
        if kind is not None:
            while j < n and batch[j].kind is kind:
                j += 1
        if j - i == 1:
            item.result = item.run(conn)
        else:
            group = batch[i:j]
            for w in group[1:]:
                w.error = None
                w.after_commit.clear()
            assert kind is not None
            results = kind.many(conn, [(WriteContext(w), w.arg) for w in group])
            if len(results) != len(group):
                raise RuntimeError(f"{kind.many!r} returned {len(results)} results for {len(group)} writes")
            for w, r in zip(group, results, strict=True):
                w.result = r
        i = j


def _run_single_statement(conn: sqlite3.Connection, batch: list[_Write]) -> bool:
    """Run a batch of one single-statement kind outside a transaction (see BatchKind.single_statement)."""
    before = conn.total_changes
    try:
        _run_fast(conn, batch)
    except Exception as e:
        if conn.total_changes == before:
            return False  # nothing was written: the caller retries write by write
        # The statement committed and something after it failed: it must not run again.
        log.exception("write failed after its statement committed")
        for item in batch:
            item.error = StorageError(f"write committed, then failed: {e}")
            item.after_commit.clear()
    return True


_Read = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():  # the caller was cancelled
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


def _deliver(batch: list[_Write]) -> None:
    for item in batch:
        for cb in item.after_commit:
            try:
                cb()
            except Exception:
                log.exception("after-commit callback failed")
        if item.future.done():  # the caller was cancelled; the write stands
            continue
        if item.error is not None:
            item.future.set_exception(item.error)
        else:
            item.future.set_result(item.result)
