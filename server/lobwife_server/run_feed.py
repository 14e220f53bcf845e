"""Live run state and output for WatchRuns: in-process, bounded, lossy only for output.

Run state changes are also in the database (ListJobRuns / GetJobRun); this feed
is for watching them happen. A subscriber's queue is bounded: when it is full,
further output chunks for it are dropped and counted (the stored output of the
finished run stays complete up to its cap), and state changes are still
delivered by replacing the oldest queued output chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from lobwife.v1 import jobs_pb2


@dataclass(frozen=True, slots=True)
class RunUpdate:
    run: jobs_pb2.JobRun
    output_chunk: str = ""


_END = object()


class RunSubscription:
    def __init__(self, feed: RunFeed, job: str | None, include_output: bool, size: int) -> None:
        self.feed = feed
        self.job = job
        self.include_output = include_output
        self.queue: asyncio.Queue[RunUpdate | object] = asyncio.Queue(maxsize=size)
        self.dropped = 0

    def offer(self, update: RunUpdate) -> None:
        if self.job is not None and update.run.job_name != self.job:
            return
        if update.output_chunk and not self.include_output:
            return
        try:
            self.queue.put_nowait(update)
        except asyncio.QueueFull:
            if update.output_chunk:
                self.dropped += 1
                return
            # A state change must get through: make room by dropping the oldest item.
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
                self.dropped += 1
            self.queue.put_nowait(update)

    async def get(self) -> RunUpdate | None:
        item = await self.queue.get()
        return item if isinstance(item, RunUpdate) else None

    def close(self) -> None:
        self.feed._subs.discard(self)


class RunFeed:
    def __init__(self, queue_size: int = 1024) -> None:
        self._subs: set[RunSubscription] = set()
        self._size = queue_size

    def subscribe(self, job: str | None, include_output: bool) -> RunSubscription:
        sub = RunSubscription(self, job, include_output, self._size)
        self._subs.add(sub)
        return sub

    def publish(self, update: RunUpdate) -> None:
        for sub in self._subs:
            sub.offer(update)

    def close(self) -> None:
        for sub in list(self._subs):
            if sub.queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    sub.queue.get_nowait()
            sub.queue.put_nowait(_END)
