"""Watch streams whose clients do not read: bounded while they stay, ended when too far behind, released on leaving."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.request

import grpc
import pytest

from lobwife.v1 import jobs_pb2, tasks_pb2, tasks_pb2_grpc
from lobwife_server.core.errors import ApiError
from lobwife_server.jobs.run_feed import RunFeed, RunUpdate
from lobwife_server.tasks.watch import Change, ChangeFeed
from tests.conftest import ServerProcess

QUEUE = 1024  # the server's per-stream queue (watch.ChangeFeed's default)
_BEHIND = re.compile(
    r"watch fell behind: more than 1024 changes or 2048 KiB were waiting to be sent; resume with after_cursor=(\d+)"
)


def watchers(server: ServerProcess) -> int:
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=5) as r:
        m = re.search(rb"^lobwife_watch_streams ([0-9.]+)$", r.read(), re.M)
    return int(float(m.group(1))) if m else 0


def wait_watchers(server: ServerProcess, n: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while watchers(server) != n:
        assert time.monotonic() < deadline, f"{watchers(server)} watch streams open, expected {n}"
        time.sleep(0.05)


def changes(stub: tasks_pb2_grpc.TaskServiceStub, task_id: str, n: int, detail: int = 2048) -> None:
    text = "x" * detail
    for start in range(0, n, 100):
        futures = [
            stub.CreateTaskEvent.future(
                tasks_pb2.CreateTaskEventRequest(task_id=task_id, event_type="progress", detail=text), timeout=30
            )
            for _ in range(min(100, n - start))
        ]
        for f in futures:
            f.result()


def last_cursor(stub: tasks_pb2_grpc.TaskServiceStub, task_id: str) -> int:
    req = tasks_pb2.ListTaskEventsRequest(task_id=task_id, page_size=1)
    return stub.ListTaskEvents(req, timeout=5).events[0].id


def raw_watch(server: ServerProcess, query: str = "") -> socket.socket:
    """A task watch over HTTP on a socket with a tiny receive buffer, past its headers; the caller does not read."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: no autotuning
    s.settimeout(10)
    s.connect(("127.0.0.1", server.http_port))
    s.sendall(b"GET /api/v1/tasks:watch%s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % query.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return s


def read_chunked(s: socket.socket, timeout: float = 30) -> list[dict[str, object]]:
    """The rest of a chunked NDJSON body, to the end, as objects."""
    s.settimeout(timeout)
    data = b""
    while True:
        got = s.recv(1 << 20)
        if not got:
            break
        data += got
    body, pos = b"", 0
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol], 16)
        if size == 0:
            break
        body += data[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2
    return [json.loads(line) for line in body.splitlines() if line]


@pytest.fixture
def stub(channel: grpc.Channel) -> tasks_pb2_grpc.TaskServiceStub:
    return tasks_pb2_grpc.TaskServiceStub(channel)


def test_grpc_watch_that_falls_behind_is_aborted_with_its_resume_cursor(
    server: ServerProcess, stub: tasks_pb2_grpc.TaskServiceStub
) -> None:
    task = stub.CreateTask(tasks_pb2.CreateTaskRequest(name="busy"), timeout=5).task
    # No BDP probing: the client's receive window stays small, so unread messages back up into the server.
    with grpc.insecure_channel(server.grpc_addr, options=[("grpc.http2.bdp_probe", 0)]) as ch:
        call = tasks_pb2_grpc.TaskServiceStub(ch).WatchTasks(tasks_pb2.WatchTasksRequest(), timeout=60)
        wait_watchers(server, 1)
        changes(stub, task.task_id, 3 * QUEUE)
        got: list[int] = []
        with pytest.raises(grpc.RpcError) as info:
            for msg in call:
                got.append(msg.cursor)
        err = info.value
    assert err.code() == grpc.StatusCode.ABORTED, err
    m = _BEHIND.fullmatch(err.details() or "")
    assert m is not None, err.details()
    resume = int(m.group(1))
    # Everything up to the resume cursor arrived, in order and without gaps; then the stream ended.
    assert got and got[-1] == resume and got == list(range(got[0], resume + 1))
    assert resume < last_cursor(stub, task.task_id)
    wait_watchers(server, 0)
    # Resuming from that cursor gets the rest, from the database, without a gap.
    rest: list[int] = []
    end = last_cursor(stub, task.task_id)
    for msg in stub.WatchTasks(tasks_pb2.WatchTasksRequest(after_cursor=resume), timeout=30):
        rest.append(msg.cursor)
        if msg.cursor == end:
            break
    assert rest == list(range(resume + 1, end + 1))


def test_http_watch_that_falls_behind_ends_with_an_error_object(
    server: ServerProcess, stub: tasks_pb2_grpc.TaskServiceStub
) -> None:
    task = stub.CreateTask(tasks_pb2.CreateTaskRequest(name="busy"), timeout=5).task
    s = raw_watch(server)
    try:
        wait_watchers(server, 1)
        changes(stub, task.task_id, 3 * QUEUE)
        objs = read_chunked(s)
    finally:
        s.close()
    *frames, last = objs
    assert last["code"] == grpc.StatusCode.ABORTED.value[0], last
    m = _BEHIND.fullmatch(str(last["error"]))
    assert m is not None, last
    cursors = [int(str(f["cursor"])) for f in frames]
    assert cursors and cursors[-1] == int(m.group(1)) and cursors == list(range(cursors[0], cursors[-1] + 1))
    wait_watchers(server, 0)


def test_streams_are_released_when_clients_leave(server: ServerProcess, stub: tasks_pb2_grpc.TaskServiceStub) -> None:
    """Cancelled gRPC calls, closed HTTP sockets, and one blocked writing to a client that never read."""
    task = stub.CreateTask(tasks_pb2.CreateTaskRequest(name="watched"), timeout=5).task
    channels = [grpc.insecure_channel(server.grpc_addr) for _ in range(5)]
    calls = [tasks_pb2_grpc.TaskServiceStub(ch).WatchTasks(tasks_pb2.WatchTasksRequest()) for ch in channels]
    sockets = [raw_watch(server) for _ in range(5)]
    stuck = raw_watch(server, "?after_cursor=1")  # replays from the start, and is never read
    try:
        wait_watchers(server, 11)
        changes(stub, task.task_id, 300)
        for c in calls:
            c.cancel()  # type: ignore[no-untyped-call]
        for s in sockets:
            s.close()
        wait_watchers(server, 1)
        stuck.close()
        wait_watchers(server, 0)
    finally:
        for ch in channels:
            ch.close()
        for s in [*sockets, stuck]:
            s.close()
    # The server is still fine, and a new watch works.
    assert stub.GetTask(tasks_pb2.GetTaskRequest(task_id=task.task_id), timeout=5).task.name == "watched"


def _run(name: str = "j") -> jobs_pb2.JobRun:
    return jobs_pb2.JobRun(job_name=name)


def test_run_feed_bounds_output_and_ends_a_subscriber_too_far_behind() -> None:
    async def main() -> None:
        feed = RunFeed(queue_size=8, max_output_bytes=100)
        sub = feed.subscribe(None, include_output=True)
        for _ in range(5):
            feed.publish(RunUpdate(_run(), "x" * 40))  # two fit in 100 characters; three are dropped
        assert (sub.queued, sub.dropped) == (2, 3)
        feed.publish(RunUpdate(_run()))  # a state change always fits while there is room
        got = [await sub.get() for _ in range(3)]
        assert [len(u.output_chunk) if u else -1 for u in got] == [40, 40, 0]
        for _ in range(8):
            feed.publish(RunUpdate(_run()))
        assert sub.queued == 8
        feed.publish(RunUpdate(_run()))  # one state change too many: it fell behind
        assert sub.queued == 0  # what it held is let go at once
        with pytest.raises(ApiError) as info:
            await sub.get()
        assert info.value.code == grpc.StatusCode.ABORTED and "fell behind" in info.value.message
        sub.close()
        assert feed.subscribers == 0
        # Shutdown ends a waiting subscriber cleanly.
        other = feed.subscribe("j", include_output=False)
        waiting = asyncio.ensure_future(other.get())
        await asyncio.sleep(0)
        feed.close()
        assert await asyncio.wait_for(waiting, 5) is None

    asyncio.run(main())


def test_change_feed_bounds_each_queue_by_count_and_bytes() -> None:
    async def main() -> None:
        def ev(i: int) -> tasks_pb2.TaskEvent:
            return tasks_pb2.TaskEvent(id=i, task_id=1, event_type="progress", detail="x" * 1000)

        task = tasks_pb2.Task(id=1, task_id="T1", name="t")
        size = Change(ev(1), task).size
        feed = ChangeFeed(queue_size=100, queue_bytes=3 * size)
        sub = feed.subscribe()
        for i in range(1, 4):
            feed.publish(Change(ev(i), task))
        assert (sub.queue.qsize(), sub.queued_bytes, sub.overflowed) == (3, 3 * size, False)
        got = await sub.get()
        assert got is not None and got.cursor == 1 and sub.queued_bytes == 2 * size
        feed.publish(Change(ev(4), task))
        feed.publish(Change(ev(5), task))  # over the bytes
        assert sub.overflowed and sub.queued_bytes == 0
        assert await asyncio.wait_for(sub.get(), 5) is None  # and the stream is told at once
        sub.close()
        assert not feed.watched
        # By count too.
        feed = ChangeFeed(queue_size=2)
        sub = feed.subscribe()
        for i in range(1, 4):
            feed.publish(Change(tasks_pb2.TaskEvent(id=i, task_id=1), task))
        assert sub.overflowed and sub.queue.qsize() == 1  # only the marker
        sub.close()

    asyncio.run(main())
