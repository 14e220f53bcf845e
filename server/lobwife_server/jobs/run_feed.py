"""Live run state and output for WatchRuns: in-process, bounded, lossy only for output.

Run state changes are also in the database (ListJobRuns / GetJobRun); this feed
is for watching them happen. Each subscriber's queue is bounded twice: at most
``queue_size`` updates, and at most ``max_output_bytes`` characters of output
in them. Output that does not fit is dropped for that subscriber and counted
(the stored output of the finished run stays complete up to its cap). A state
change that does not fit means the subscriber fell too far behind: what it holds
is dropped at once and its stream ends with ABORTED (it can read the runs it
missed with ListJobRuns, and watch again). A subscriber holds nothing once closed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import grpc

from lobwife.v1 import jobs_pb2
from lobwife_server.core.errors import ApiError

#: Characters of output a subscriber may have waiting; beyond it, chunks are dropped for it.
MAX_OUTPUT_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RunUpdate:
    """One WatchRuns item: a run's state, and the output it printed since the previous item (if any)."""

    run: jobs_pb2.JobRun
    output_chunk: str = ""


class RunSubscription:
    """One WatchRuns stream's queue: filtered by job, bounded in items and output, ended when it falls behind."""

    def __init__(self, feed: RunFeed, job: str | None, include_output: bool, size: int, max_output: int) -> None:
        self.feed = feed
        self.job = job
        self.include_output = include_output
        self.size = size
        self.max_output = max_output
        self._items: deque[RunUpdate] = deque()
        self._output = 0  # characters of output in _items
        self._wakeup: asyncio.Event = asyncio.Event()
        #: Output chunks not delivered to this subscriber (its queue had no room).
        self.dropped = 0
        self.overflowed = False
        self.ended = False

    @property
    def queued(self) -> int:
        return len(self._items)

    def offer(self, update: RunUpdate) -> None:
        if self.ended or self.overflowed:
            return
        if self.job is not None and update.run.job_name != self.job:
            return
        chunk = len(update.output_chunk)
        if chunk and not self.include_output:
            return
        if chunk:
            if len(self._items) >= self.size or self._output + chunk > self.max_output:
                self.dropped += 1
                return
            self._output += chunk
        elif len(self._items) >= self.size:
            # A state change must get through, or the stream must end: it fell too far behind.
            self.overflowed = True
            self._drop()
            self._wakeup.set()
            return
        self._items.append(update)
        self._wakeup.set()

    def _drop(self) -> None:
        self._items.clear()
        self._output = 0

    async def get(self) -> RunUpdate | None:
        """The next update; None when the feed closed (shutdown); ABORTED when this subscriber fell behind."""
        while not self._items:
            if self.overflowed:
                raise ApiError(
                    grpc.StatusCode.ABORTED,
                    f"watch fell behind: more than {self.size} run updates were waiting to be sent;"
                    " read the runs missed with ListJobRuns and watch again",
                    reason="WATCH_FELL_BEHIND",
                )
            if self.ended:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        update = self._items.popleft()
        self._output -= len(update.output_chunk)
        return update

    def close(self) -> None:
        """Leave the feed (the stream ended, was cancelled, or its client went away): nothing stays held."""
        self.feed._subs.discard(self)
        self._drop()

    def _end(self) -> None:
        self.ended = True
        self._drop()
        self._wakeup.set()


class RunFeed:
    """In-process fan-out of run updates to WatchRuns streams (a multi-process backend would feed it from its
    change feed)."""

    def __init__(self, queue_size: int = 1024, max_output_bytes: int = MAX_OUTPUT_BYTES) -> None:
        self._subs: set[RunSubscription] = set()
        self._size = queue_size
        self._max_output = max_output_bytes
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def subscribe(self, job: str | None, include_output: bool) -> RunSubscription:
        sub = RunSubscription(self, job, include_output, self._size, self._max_output)
        if self.closed:
            sub._end()
        self._subs.add(sub)
        return sub

    def publish(self, update: RunUpdate) -> None:
        for sub in self._subs:
            sub.offer(update)

    def close(self) -> None:
        """End every open stream (shutdown)."""
        self.closed = True
        for sub in list(self._subs):
            sub._end()
