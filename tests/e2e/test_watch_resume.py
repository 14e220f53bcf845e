"""Task watches resume across a server restart (same port, same state folder) and say so: the typed
client's (sync and async) and the CLI's. A change made while the watch is away, after the restart and
before it reconnects, is shown exactly once; nothing seen before is shown again. Also ``from_now``:
its first message is the position, and with an ``after_cursor`` it is refused, over gRPC and HTTP.

The gap is made on purpose: the client's watch is held in its ``on_reconnect`` callback, the CLI's
process is stopped (SIGSTOP) until the change is made.
"""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from lobwife.client import AsyncClient, Client, LobwifeError, Reconnect
from lobwife.v1 import tasks_pb2, tasks_pb2_grpc
from tests.conftest import ROOT, ServerProcess, start_server, subprocess_env
from tests.e2e.test_cli import start_watch, stop_watch
from tests.grpc_util import error_of, violations
from tests.http_util import curl

WAIT = 20.0  # seconds any one step may take (a loaded 2-core machine, a server start)


def restart(srv: ServerProcess) -> ServerProcess:
    """Stop the server (SIGTERM, as a rollout does) and start it again on the same ports and state."""
    assert srv.terminate() == 0, srv.log()
    log_path = srv.state_dir.parent / f"server-{srv.grpc_port}-again.log"
    args = ["--state-dir", str(srv.state_dir), "--grpc-port", str(srv.grpc_port), "--http-port", str(srv.http_port)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lobwife_server", *args, "--grace", "5", "--jobs", ""],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=subprocess_env(),
            cwd=ROOT,
        )
    again = ServerProcess(srv.state_dir, srv.grpc_port, srv.http_port, proc, log_path)
    again.wait_ready()
    return again


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """The server, as a list whose last item is the one running (a test restarts it)."""
    running = [start_server(tmp_path / "state")]
    yield running
    if running[-1].proc.poll() is None:
        running[-1].terminate()


class HeldWatch:
    """A typed-client watch read by a thread; at each reconnect it waits until :meth:`release`."""

    def __init__(self, addr: str, face: str, **kw: Any) -> None:
        self.got: queue.Queue[tasks_pb2.WatchTasksResponse | BaseException] = queue.Queue()
        self.reconnects: list[Reconnect] = []
        self._go = threading.Event()
        self._stop = threading.Event()
        kw |= {"on_reconnect": self._held, "timeout": 3 * WAIT}
        run: Callable[[str, dict[str, Any]], None] = self._sync if face == "sync" else self._async
        self._thread = threading.Thread(target=run, args=(addr, kw), daemon=True)
        self._thread.start()

    def _held(self, info: Reconnect) -> None:
        # Blocking here blocks the watch (for the async face, its own event loop in this thread).
        self.reconnects.append(info)
        self._go.wait(WAIT)

    def _sync(self, addr: str, kw: dict[str, Any]) -> None:
        try:
            with Client(addr) as c:
                for msg in c.watch_tasks(**kw):
                    self.got.put(msg)
                    if self._stop.is_set():
                        return
        except BaseException as e:
            self.got.put(e)

    def _async(self, addr: str, kw: dict[str, Any]) -> None:
        async def run() -> None:
            async with AsyncClient(addr) as c:
                async for msg in c.watch_tasks(**kw):
                    self.got.put(msg)
                    if self._stop.is_set():
                        return

        try:
            asyncio.run(run())
        except BaseException as e:
            self.got.put(e)

    def next(self) -> tasks_pb2.WatchTasksResponse:
        item = self.got.get(timeout=WAIT)
        if isinstance(item, BaseException):
            raise item
        return item

    def wait_reconnecting(self) -> Reconnect:
        deadline = time.monotonic() + WAIT
        while not self.reconnects:
            assert time.monotonic() < deadline, "the watch never noticed the restart"
            time.sleep(0.02)
        return self.reconnects[0]

    def release(self) -> None:
        self._go.set()

    def stop(self) -> None:
        """The reader ends at its next message."""
        self._stop.set()
        self._go.set()

    def finish(self, addr: str) -> list[int]:
        """End the reader (a change wakes it) and return the cursors it got that were not read."""
        self.stop()
        woke = note(addr, "wake the reader")
        self._thread.join(WAIT)
        assert not self._thread.is_alive()
        left = [self.got.get_nowait() for _ in range(self.got.qsize())]
        assert all(isinstance(m, tasks_pb2.WatchTasksResponse) for m in left), left
        return [m.cursor for m in left if isinstance(m, tasks_pb2.WatchTasksResponse) and m.cursor != woke]


def note(addr: str, detail: str) -> int:
    """Append an event to T1 (retrying while a server starts) and return its cursor."""
    with Client(addr, timeout=WAIT) as c:
        return c.add_event("T1", "note", detail=detail).id


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_client_watch_shows_a_change_made_while_it_was_away_exactly_once(
    servers: list[ServerProcess], face: str
) -> None:
    addr = servers[0].grpc_addr
    with Client(addr) as c:
        c.create_task("watched")  # cursor 1
    watch = HeldWatch(addr, face, from_now=True)
    try:
        position = watch.next()
        assert (position.cursor, position.HasField("event")) == (1, False)
        before = note(addr, "before")
        assert (watch.next().cursor, before) == (2, 2)

        servers.append(restart(servers[-1]))
        info = watch.wait_reconnecting()  # the watch is away: it will resume after 2
        assert info.after_cursor == 2 and info.method == "watch_tasks"
        assert note(addr, "in the gap") == 3
        watch.release()
        assert note(addr, "after") == 4
        rest = [watch.next(), watch.next()]
        assert [(m.cursor, m.event.detail) for m in rest] == [(3, "in the gap"), (4, "after")]
        assert all(m.task.task_id == "T1" for m in rest)
        assert watch.finish(addr) == []  # nothing else came: no repeat of what it had seen
        assert len(watch.reconnects) >= 1
    finally:
        watch.stop()


def test_from_now_with_nothing_seen_resumes_from_its_position(servers: list[ServerProcess]) -> None:
    """The old trap: no change before the restart. The position message is the resume point, so the
    change made before the reconnect is shown (a reconnect "from now on" would have missed it)."""
    addr = servers[0].grpc_addr
    with Client(addr) as c:
        c.create_task("quiet")
        note(addr, "old news")  # cursor 2
    watch = HeldWatch(addr, "sync", from_now=True)
    try:
        assert watch.next().cursor == 2
        servers.append(restart(servers[-1]))
        assert watch.wait_reconnecting().after_cursor == 2
        assert note(addr, "in the gap") == 3
        watch.release()
        got = watch.next()
        assert (got.cursor, got.event.detail) == (3, "in the gap")
        assert watch.finish(addr) == []
    finally:
        watch.stop()


def test_the_cli_watch_shows_a_change_made_while_it_was_away_exactly_once(servers: list[ServerProcess]) -> None:
    env = {"LOBWIFE_ADDR": servers[0].grpc_addr}
    with Client(servers[0].grpc_addr) as c:
        c.create_task("watched by the CLI")  # cursor 1
    proc, lines = start_watch("--from-now", "--json", env=env)
    try:
        assert json.loads(lines.next(timeout=WAIT)) == {"cursor": 1}
        note(env["LOBWIFE_ADDR"], "before")
        assert json.loads(lines.next(timeout=WAIT))["cursor"] == 2
        proc.send_signal(signal.SIGSTOP)  # away: it cannot reconnect until the change is made
        servers.append(restart(servers[-1]))
        note(env["LOBWIFE_ADDR"], "in the gap")
        proc.send_signal(signal.SIGCONT)
        note(env["LOBWIFE_ADDR"], "after")
        shown = [json.loads(lines.next(timeout=WAIT)) for _ in range(2)]
        assert [(m["cursor"], m["event"]["detail"]) for m in shown] == [(3, "in the gap"), (4, "after")]
        assert not lines.ready(0.5)  # and nothing twice
        err = stop_watch(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "reconnecting, resuming after cursor 2" in err, err


# --- from_now over gRPC and HTTP ----------------------------------------------------------


def test_from_now_starts_with_its_position_over_grpc_and_http(servers: list[ServerProcess]) -> None:
    srv = servers[0]
    with grpc.insecure_channel(srv.grpc_addr) as ch:
        stub = tasks_pb2_grpc.TaskServiceStub(ch)
        stub.CreateTask(tasks_pb2.CreateTaskRequest(name="one"), timeout=5)
        stream = stub.WatchTasks(tasks_pb2.WatchTasksRequest(from_now=True), timeout=WAIT)
        first = next(stream)
        assert first == tasks_pb2.WatchTasksResponse(cursor=1)  # the cursor alone
        stream.cancel()  # type: ignore[attr-defined]

    with urllib.request.urlopen(f"{srv.http_url}/api/v1/tasks:watch?from_now=true", timeout=WAIT) as resp:
        assert resp.status == 200
        assert json.loads(resp.readline()) == {"cursor": 1, "event": None, "task": None}
        note(srv.grpc_addr, "live")
        line = json.loads(resp.readline())
        assert (line["cursor"], line["event"]["detail"]) == (2, "live")

    # An EventSource reconnecting to its ?from_now=true URL resumes from its Last-Event-ID.
    req = urllib.request.Request(
        f"{srv.http_url}/api/v1/tasks:watch?from_now=true",
        headers={"Accept": "text/event-stream", "Last-Event-ID": "1"},
    )
    with urllib.request.urlopen(req, timeout=WAIT) as resp:
        assert resp.status == 200
        assert resp.readline() == b"id: 2\n"


def test_from_now_with_a_cursor_is_refused_naming_from_now(servers: list[ServerProcess]) -> None:
    srv = servers[0]
    with grpc.insecure_channel(srv.grpc_addr) as ch:
        stub = tasks_pb2_grpc.TaskServiceStub(ch)
        err = error_of(lambda: next(stub.WatchTasks(tasks_pb2.WatchTasksRequest(after_cursor=3, from_now=True))))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == ["from_now"]
    with Client(srv.grpc_addr) as c, pytest.raises(LobwifeError) as info:
        next(c.watch_tasks(after_cursor=3, from_now=True))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.value.field_violations] == ["from_now"]

    r = curl("GET", f"{srv.http_url}/api/v1/tasks:watch?from_now=true&after_cursor=3")
    assert r.status == 400, r.body
    assert [v["field"] for v in r.json["details"][0]["field_violations"]] == ["from_now"]
