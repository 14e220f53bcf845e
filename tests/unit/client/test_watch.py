"""How a watch resumes (lobwife.client._watch), the rules both faces share: which request comes next,
what is not shown twice, which breaks are resumed, the backoff, the overall timeout, and saying so."""

from __future__ import annotations

import logging
import time

import grpc
import pytest

from lobwife.client import LobwifeError, Reconnect
from lobwife.client import _builders as b
from lobwife.client._watch import WATCH_BACKOFF_MAX_S, WATCH_BACKOFF_MIN_S, RunWatch, TaskWatch
from lobwife.v1 import tasks_pb2

GONE = LobwifeError(grpc.StatusCode.UNAVAILABLE, "Socket closed")
BEHIND = LobwifeError(grpc.StatusCode.ABORTED, "watch fell behind", reason="WATCH_FELL_BEHIND")


def change(cursor: int) -> tasks_pb2.WatchTasksResponse:
    return tasks_pb2.WatchTasksResponse(cursor=cursor, event=tasks_pb2.TaskEvent(id=cursor, event_type="updated"))


def position(cursor: int) -> tasks_pb2.WatchTasksResponse:
    return tasks_pb2.WatchTasksResponse(cursor=cursor)


def test_resumes_after_the_last_cursor_seen_and_drops_repeats() -> None:
    w = b.watch_tasks(after_cursor=5, task_id=7)
    first = w.request()
    assert (first.after_cursor, first.from_now, first.task_id) == (5, False, "7")
    assert [w.accept(change(c)) for c in (6, 7)] == [True, True]
    assert w.next_delay(GONE) == WATCH_BACKOFF_MIN_S
    req = w.request()
    assert (req.after_cursor, req.from_now, req.task_id) == (7, False, "7")
    assert [w.accept(change(c)) for c in (7, 6, 8)] == [False, False, True]  # a repeat is never shown


def test_no_cursor_replays_from_the_start_and_resumes_from_what_it_saw() -> None:
    w = b.watch_tasks()
    first = w.request()
    assert (first.after_cursor, first.from_now) == (0, False)
    w.next_delay(GONE)
    assert w.request().after_cursor == 0  # nothing seen yet: still from the start, not "from now"
    w.accept(change(3))
    w.next_delay(None)
    assert w.request().after_cursor == 3


def test_from_now_keeps_its_position_and_asks_again_only_without_one() -> None:
    w = b.watch_tasks(from_now=True)
    assert w.request().from_now
    w.next_delay(GONE)  # broke before the server said where "now" is
    again = w.request()
    assert (again.from_now, again.after_cursor) == (True, 0)
    assert w.accept(position(40))  # yielded: a resume point for the caller
    w.next_delay(GONE)
    resumed = w.request()
    assert (resumed.from_now, resumed.after_cursor) == (False, 40)


def test_from_now_with_a_cursor_is_sent_as_given_for_the_server_to_refuse() -> None:
    req = b.watch_tasks(after_cursor=3, from_now=True).request()
    assert (req.after_cursor, req.from_now) == (3, True)


@pytest.mark.parametrize(
    ("error", "resumed"),
    [
        (None, True),  # the server ended the stream (shutdown)
        (GONE, True),
        (BEHIND, True),
        (LobwifeError(grpc.StatusCode.ABORTED, "other"), False),
        (LobwifeError(grpc.StatusCode.PERMISSION_DENIED, "no"), False),
        (LobwifeError(grpc.StatusCode.INVALID_ARGUMENT, "from_now"), False),
        (LobwifeError(grpc.StatusCode.CANCELLED, "closed"), False),
        (LobwifeError(grpc.StatusCode.DEADLINE_EXCEEDED, "late"), False),
    ],
)
def test_which_breaks_are_resumed(error: LobwifeError | None, resumed: bool) -> None:
    assert (b.watch_tasks().next_delay(error) is not None) is resumed
    assert (b.watch_runs().next_delay(error) is not None) is resumed


def test_reconnect_false_resumes_nothing() -> None:
    w = b.watch_tasks(reconnect=False)
    assert w.next_delay(GONE) is None and w.next_delay(None) is None


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_message() -> None:
    w = b.watch_tasks()
    delays = [w.next_delay(GONE) for _ in range(8)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, WATCH_BACKOFF_MAX_S, WATCH_BACKOFF_MAX_S]
    w.accept(change(1))
    assert w.next_delay(GONE) == WATCH_BACKOFF_MIN_S


def test_the_timeout_bounds_the_whole_watch() -> None:
    w = b.watch_tasks(timeout=0.3)
    first = w.attempt_timeout()
    assert first is not None and 0 < first <= 0.3
    for _ in range(4):
        delay = w.next_delay(GONE)
        assert delay is not None and delay <= 0.3  # never waits past the end
    time.sleep(0.35)
    with pytest.raises(LobwifeError) as info:
        w.attempt_timeout()
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert b.watch_tasks().attempt_timeout() is None  # no timeout: no deadline


def test_each_reconnect_is_logged_and_told(caplog: pytest.LogCaptureFixture) -> None:
    told: list[Reconnect] = []
    w = b.watch_tasks(after_cursor=9, on_reconnect=told.append)
    w.accept(change(12))
    with caplog.at_level(logging.WARNING, logger="lobwife.client"):
        w.next_delay(GONE)
        w.next_delay(None)
    assert [(r.attempt, r.delay, r.error, r.after_cursor) for r in told] == [(1, 0.1, GONE, 12), (2, 0.2, None, 12)]
    assert [r.name for r in caplog.records] == ["lobwife.client", "lobwife.client"]
    assert caplog.messages == [
        "watch_tasks: UNAVAILABLE: Socket closed; reconnecting in 0.1s, resuming after cursor 12",
        "watch_tasks: the server ended the stream; reconnecting in 0.2s, resuming after cursor 12",
    ]


def test_a_run_watch_asks_for_the_same_again_and_says_what_is_lost(caplog: pytest.LogCaptureFixture) -> None:
    w = b.watch_runs(name="tick", include_output=True)
    assert isinstance(w, RunWatch) and not isinstance(w, TaskWatch)
    with caplog.at_level(logging.WARNING, logger="lobwife.client"):
        w.next_delay(GONE)
    req = w.request()
    assert (req.name, req.include_output) == ("tick", True)
    assert caplog.messages == [
        "watch_runs: UNAVAILABLE: Socket closed; reconnecting in 0.1s, run updates made while disconnected"
        " are not replayed"
    ]
