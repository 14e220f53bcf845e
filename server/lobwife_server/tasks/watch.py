"""The in-process change feed behind WatchTasks.

Writes publish (event, task) pairs after their transaction commits, in commit
order (one writer thread). Each stream has a bounded queue: ``queue_size``
changes, of at most ``queue_bytes`` encoded. A stream whose queue is full has
fallen behind: what it holds is dropped at once (a client that never reads must
not pin the changes it was sent) and it is marked overflowed. A stream that is
replaying from the database then keeps replaying (the dropped changes are there
too); one that follows live changes ends with ABORTED and the cursor to resume
from (TaskService.WatchTasks). A stream holds nothing once it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib

from lobwife.v1 import tasks_pb2
from lobwife_server.core import metrics


class Change:
    """A task event and the task as it stood after it; the event's id is the cursor."""

    __slots__ = ("cursor", "event", "size", "task")

    def __init__(self, event: tasks_pb2.TaskEvent, task: tasks_pb2.Task) -> None:
        self.event = event
        self.task = task
        self.cursor: int = event.id
        #: Its encoded size: what it costs a queue holding it (made once a change, for all streams).
        self.size: int = event.ByteSize() + task.ByteSize()


_CLOSED = object()
_OVERFLOWED = object()


class Subscription:
    """One WatchTasks stream's queue, bounded in changes and bytes; ended (resume cursor given) when it falls behind."""

    def __init__(self, feed: ChangeFeed, size: int, max_bytes: int) -> None:
        self._feed = feed
        self.queue: asyncio.Queue[Change | object] = asyncio.Queue(maxsize=size)
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self.overflowed = False
        self.closed = False

    @property
    def size(self) -> int:
        return self.queue.maxsize

    def offer(self, change: Change) -> None:
        if self.overflowed or self.closed:
            return
        if self.queue.full() or self.queued_bytes + change.size > self.max_bytes:
            self.overflowed = True
            self._drain()
            # The marker ends a get() at once, so the stream sees why it stops.
            self.queue.put_nowait(_OVERFLOWED)
            return
        self.queue.put_nowait(change)
        self.queued_bytes += change.size

    def _drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queued_bytes = 0

    def reset(self) -> None:
        """Drop what is queued; the caller is about to catch up from the database."""
        self._drain()
        self.overflowed = False

    async def get(self) -> Change | None:
        """The next change, or None when the feed closed (shutdown) or the queue overflowed (see ``overflowed``)."""
        if self.closed or self.overflowed:
            return None
        item = await self.queue.get()
        if item is _CLOSED:
            self.closed = True
            return None
        if item is _OVERFLOWED:
            return None
        assert isinstance(item, Change)
        self.queued_bytes -= item.size
        return item

    def close(self) -> None:
        """Leave the feed (the stream ended, was cancelled, or its client went away): nothing stays held."""
        self._feed._subs.discard(self)
        self._drain()
        metrics.WATCHERS.set(len(self._feed._subs))

    def _end(self) -> None:
        self.closed = True
        self._drain()  # nothing queued is needed any more; room for the marker
        with contextlib.suppress(asyncio.QueueFull):  # a queue of size 0
            self.queue.put_nowait(_CLOSED)


#: What one stream may have waiting: this many changes, of at most this many encoded bytes in all.
QUEUE_SIZE = 1024
QUEUE_BYTES = 2 * 1024 * 1024


class ChangeFeed:
    """In-process fan-out of committed task changes, in commit order, with the cursor of the last one (a multi-
    process backend would feed it from LISTEN/NOTIFY)."""

    def __init__(self, last_cursor: int = 0, queue_size: int = QUEUE_SIZE, queue_bytes: int = QUEUE_BYTES) -> None:
        self.last_cursor = last_cursor
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        self._subs: set[Subscription] = set()
        self.closed = False

    @property
    def watched(self) -> bool:
        """Whether any stream is open (a writer may skip making changes nobody would get)."""
        return bool(self._subs)

    def skip_to(self, cursor: int) -> None:
        """Changes up to ``cursor`` were committed while no stream was open: only the cursor moves."""
        if cursor > self.last_cursor:
            self.last_cursor = cursor

    def publish(self, change: Change) -> None:
        self.last_cursor = max(self.last_cursor, change.cursor)
        for sub in self._subs:
            sub.offer(change)

    def publish_event(self, event: tasks_pb2.TaskEvent, task: tasks_pb2.Task) -> None:
        """Publish (event, task); with no stream open, only the cursor moves (no Change is made)."""
        if self._subs:
            self.publish(Change(event, task))
        else:
            self.skip_to(event.id)

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._queue_size, self._queue_bytes)
        if self.closed:
            sub._end()
        self._subs.add(sub)
        metrics.WATCHERS.set(len(self._subs))
        return sub

    def close(self) -> None:
        """End every open stream (shutdown)."""
        self.closed = True
        for sub in list(self._subs):
            sub._end()
