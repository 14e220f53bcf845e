"""The in-process change feed behind WatchTasks.

Writes publish (event, task) pairs after their transaction commits, in commit
order (one writer thread). Each stream has a bounded queue: a consumer that
falls behind is not allowed to grow memory; its queue is marked overflowed and
the stream catches up from the database instead, so nothing is missed.
"""

from __future__ import annotations

import asyncio
import contextlib

from lobwife.v1 import tasks_pb2
from lobwife_server import metrics


class Change:
    """A task event and the task as it stood after it; the event's id is the cursor."""

    __slots__ = ("cursor", "event", "task")

    def __init__(self, event: tasks_pb2.TaskEvent, task: tasks_pb2.Task) -> None:
        self.event = event
        self.task = task
        self.cursor: int = event.id


_CLOSED = object()


class Subscription:
    def __init__(self, feed: ChangeFeed, size: int) -> None:
        self._feed = feed
        self.queue: asyncio.Queue[Change | object] = asyncio.Queue(maxsize=size)
        self.overflowed = False
        self.closed = False

    def offer(self, change: Change) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.overflowed = True

    def reset(self) -> None:
        """Drop what is queued; the caller is about to catch up from the database."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.overflowed = False

    async def get(self) -> Change | None:
        """The next change, or None when the feed closed (shutdown)."""
        if self.closed:
            return None
        item = await self.queue.get()
        if item is _CLOSED:
            self.closed = True
            return None
        assert isinstance(item, Change)
        return item

    def close(self) -> None:
        self._feed._subs.discard(self)
        metrics.WATCHERS.set(len(self._feed._subs))

    def _end(self) -> None:
        self.closed = True
        # A full queue still ends the stream: get() checks `closed` first.
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_CLOSED)


class ChangeFeed:
    def __init__(self, last_cursor: int = 0, queue_size: int = 1024) -> None:
        self.last_cursor = last_cursor
        self._queue_size = queue_size
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
        sub = Subscription(self, self._queue_size)
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
