"""How a watch rides out a broken stream, shared by both faces: what to ask for on reconnecting,
what not to show twice, how long to wait, and saying so.

A stream breaks when the server restarts or the connection drops (``UNAVAILABLE``), when the
server ends it on shutdown (a clean end: a watch never ends by itself), and when the client read
too slowly (``ABORTED``, reason ``WATCH_FELL_BEHIND``). Each of these is resumed: after a backoff
of 0.1 s doubling to 5 s (back to 0.1 s once a message arrives) the face calls again with
:meth:`Watch.request`. Any other error ends the watch and is raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message

from lobwife.client._errors import LobwifeError
from lobwife.client._rpc import Rpc
from lobwife.v1 import jobs_pb2, tasks_pb2

log = logging.getLogger("lobwife.client")

#: Backoff between reconnect attempts of a watch, in seconds: the first, and the cap.
WATCH_BACKOFF_MIN_S = 0.1
WATCH_BACKOFF_MAX_S = 5.0
#: The ``ABORTED`` reason of a task watch whose client read too slowly: resuming is the remedy.
FELL_BEHIND = "WATCH_FELL_BEHIND"

RespT = TypeVar("RespT", bound=Message)


@dataclass(frozen=True)
class Reconnect:
    """What a watch's ``on_reconnect`` callback is told before each reconnect attempt.

    ``error`` is why the stream broke (``None``: the server ended it, as it does on shutdown).
    ``after_cursor`` is where a task watch resumes: the cursor of the last message it saw, or
    ``None`` while a ``from_now`` watch has not yet been told its position (it then asks for
    "from now on" again). A run watch has no cursor: ``None``, and updates made while it was
    disconnected are not replayed.
    """

    method: str
    attempt: int
    delay: float
    error: LobwifeError | None
    after_cursor: int | None

    @property
    def reason(self) -> str:
        return str(self.error) if self.error is not None else "the server ended the stream"

    def __str__(self) -> str:
        return f"{self.method}: {self.reason}; reconnecting in {self.delay:.1f}s, {self._resume_text()}"

    def _resume_text(self) -> str:
        if self.method == "watch_runs":
            return "run updates made while disconnected are not replayed"
        if self.after_cursor is None:
            return "from now on (no position received yet)"
        return f"resuming after cursor {self.after_cursor}"


class Watch(Generic[RespT]):
    """One watch call's state across its reconnects. A builder makes one per call; the face loops::

    while True: call rpc(watch.request(), timeout=watch.attempt_timeout()); yield what watch.accept()s;
    on a break, wait watch.next_delay(error) (None: the watch is over) and go round again.
    """

    method = ""

    def __init__(
        self,
        rpc: Rpc[Any, Any],
        *,
        timeout: float | None,
        reconnect: bool,
        on_reconnect: Callable[[Reconnect], None] | None,
    ) -> None:
        self.rpc = rpc
        self.reconnect = reconnect
        self.on_reconnect = on_reconnect
        # The timeout bounds the whole watch, reconnects included, not each attempt.
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._delay = WATCH_BACKOFF_MIN_S
        self._attempt = 0

    def request(self) -> Message:
        raise NotImplementedError

    def accept(self, msg: RespT) -> bool:
        """Take note of a message; False when it must not be shown (seen before a reconnect)."""
        self._delay, self._attempt = WATCH_BACKOFF_MIN_S, 0
        return True

    def attempt_timeout(self) -> float | None:
        """The deadline of the next attempt: what is left of the watch's timeout."""
        if self._deadline is None:
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise LobwifeError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        return left

    def resumes(self, error: LobwifeError | None) -> bool:
        if not self.reconnect:
            return False
        if error is None or error.code == grpc.StatusCode.UNAVAILABLE:
            return True
        return error.code == grpc.StatusCode.ABORTED and error.reason == FELL_BEHIND

    def next_delay(self, error: LobwifeError | None) -> float | None:
        """Seconds to wait before reconnecting after ``error`` (None: a clean end), or None when
        the watch is over (the face then raises ``error``, or ends if there is none). Says so."""
        if not self.resumes(error):
            return None
        delay = self._delay
        if self._deadline is not None:
            delay = max(0.0, min(delay, self._deadline - time.monotonic()))
        self._delay = min(self._delay * 2, WATCH_BACKOFF_MAX_S)
        self._attempt += 1
        info = Reconnect(self.method, self._attempt, delay, error, self.resume_cursor())
        log.warning("%s", info, extra={"after_cursor": info.after_cursor, "attempt": info.attempt})
        if self.on_reconnect is not None:
            self.on_reconnect(info)
        return delay

    def resume_cursor(self) -> int | None:
        return None


class TaskWatch(Watch[tasks_pb2.WatchTasksResponse]):
    """``watch_tasks``: resumes after the last cursor seen, so nothing is missed or shown twice."""

    method = "watch_tasks"

    def __init__(
        self,
        rpc: Rpc[Any, Any],
        *,
        after_cursor: int,
        from_now: bool,
        task_id: str,
        timeout: float | None,
        reconnect: bool,
        on_reconnect: Callable[[Reconnect], None] | None,
    ) -> None:
        super().__init__(rpc, timeout=timeout, reconnect=reconnect, on_reconnect=on_reconnect)
        self.task_id = task_id
        # None: "from now on", until the server's first message says where that is.
        self.cursor: int | None = None if from_now else after_cursor
        # The first request is the caller's as given (so the server judges from_now with a cursor).
        self._first: tasks_pb2.WatchTasksRequest | None = tasks_pb2.WatchTasksRequest(
            after_cursor=after_cursor, from_now=from_now, task_id=task_id
        )

    def request(self) -> tasks_pb2.WatchTasksRequest:
        first, self._first = self._first, None
        if first is not None:
            return first
        if self.cursor is None:
            return tasks_pb2.WatchTasksRequest(from_now=True, task_id=self.task_id)
        return tasks_pb2.WatchTasksRequest(after_cursor=self.cursor, task_id=self.task_id)

    def accept(self, msg: tasks_pb2.WatchTasksResponse) -> bool:
        # A change, or the position a from_now stream starts at (no event): either is a resume point.
        if self.cursor is not None and msg.cursor <= self.cursor:
            return False  # the server never resends; this guards the promise anyway
        self.cursor = msg.cursor
        return super().accept(msg)

    def resume_cursor(self) -> int | None:
        return self.cursor


class RunWatch(Watch[jobs_pb2.WatchRunsResponse]):
    """``watch_runs``: the feed is live only (no cursor), so a reconnect asks for the same again."""

    method = "watch_runs"

    def __init__(
        self,
        rpc: Rpc[Any, Any],
        *,
        request: jobs_pb2.WatchRunsRequest,
        timeout: float | None,
        reconnect: bool,
        on_reconnect: Callable[[Reconnect], None] | None,
    ) -> None:
        super().__init__(rpc, timeout=timeout, reconnect=reconnect, on_reconnect=on_reconnect)
        self._request = request

    def request(self) -> jobs_pb2.WatchRunsRequest:
        return self._request
