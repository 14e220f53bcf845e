"""What watch streams whose clients never read cost the server, while they stay and after they leave.

    python bench/watch_memory.py                     # 200 streams (100 gRPC, 100 HTTP), 3,000 changes
    python bench/watch_memory.py --streams 400 --changes 5000
    python bench/watch_memory.py --server-path /tmp/old/server   # another checkout's server, to compare

Starts the real server (a subprocess on free 127.0.0.1 ports, over a fresh SQLite
file, no jobs) and makes ``--changes`` task changes (CreateTaskEvent, 1 KiB detail)
as history. Then two rounds, each with ``--streams`` task watches whose clients
never read, half over gRPC (each on its own channel, with BDP probing off so the
client's receive window stays at 64 KiB) and half over HTTP NDJSON (raw sockets
with a 4 KiB receive buffer):

1. **live**: the streams watch from now on (``from_now``); they are opened
   one by one between bursts of changes, so each one stalls at a different point,
   and then ``--changes`` more changes are made;
2. **replay**: the streams resume from cursor 1, so each replays the whole
   history from the database, and stalls in it.

After each round the streams are closed (sockets closed, calls cancelled), and
the script waits for the server to count no open watch (``lobwife_watch_streams``
on ``/metrics``). It prints the server's resident memory (VmRSS from
/proc/PID/status) before, while the streams are open, and after they left. It is
a measurement, not a test: it exits 0 whatever the figures, non-zero only when the
harness cannot run.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "clients" / "python"), str(ROOT / "server")]

from lobwife.v1 import tasks_pb2, tasks_pb2_grpc  # noqa: E402


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) / 1024 if m else float("nan")


def watchers(http_url: str) -> int:
    with urllib.request.urlopen(f"{http_url}/metrics", timeout=5) as r:
        m = re.search(rb"^lobwife_watch_streams ([0-9.]+)$", r.read(), re.M)
    return int(float(m.group(1))) if m else 0


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout}s waiting for {what}")


class Streams:
    """Watch streams that are never read."""

    def __init__(self, addr: str, http_port: int) -> None:
        self.addr, self.http_port = addr, http_port
        self.channels: list[grpc.Channel] = []
        self.calls: list[object] = []
        self.sockets: list[socket.socket] = []

    def open(self, kind: str, after_cursor: int) -> None:
        """A stream that never reads: from now on when ``after_cursor`` is 0, else after it."""
        from_now = after_cursor == 0
        if kind == "grpc":
            ch = grpc.insecure_channel(
                self.addr, options=[("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0)]
            )
            stub = tasks_pb2_grpc.TaskServiceStub(ch)
            self.channels.append(ch)
            req = tasks_pb2.WatchTasksRequest(after_cursor=after_cursor, from_now=from_now)
            self.calls.append(stub.WatchTasks(req))
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: no autotuning
        s.connect(("127.0.0.1", self.http_port))
        query = b"from_now=true" if from_now else b"after_cursor=%d" % after_cursor
        s.sendall(b"GET /api/v1/tasks:watch?%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % query)
        self.sockets.append(s)

    def close(self) -> None:
        for call in self.calls:
            call.cancel()  # type: ignore[attr-defined]
        for ch in self.channels:
            ch.close()
        for s in self.sockets:
            s.close()
        self.channels, self.calls, self.sockets = [], [], []


def changes(stub: tasks_pb2_grpc.TaskServiceStub, task_id: str, count: int) -> None:
    detail = "x" * 1024
    for i in range(0, count, 50):  # at most 50 calls in flight
        futs = [
            stub.CreateTaskEvent.future(
                tasks_pb2.CreateTaskEventRequest(task_id=task_id, event_type="progress", detail=detail), timeout=60
            )
            for _ in range(min(50, count - i))
        ]
        for f in futs:
            f.result()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=200, help="watch streams per round, half gRPC (default 200)")
    ap.add_argument("--changes", type=int, default=3000, help="task changes per step (default 3000)")
    ap.add_argument("--kinds", default="grpc,http", help="stream kinds, taken in turn (default grpc,http)")
    ap.add_argument("--server-path", default=str(ROOT / "server"), help="the folder holding lobwife_server")
    args = ap.parse_args(argv)
    n = args.streams
    cycle = [k for k in args.kinds.split(",") if k]
    if not cycle or set(cycle) - {"grpc", "http"}:
        raise SystemExit("--kinds: a comma-separated list of grpc and http")
    kinds = [cycle[i % len(cycle)] for i in range(n)]

    with tempfile.TemporaryDirectory(prefix="lobwife-watchmem-") as tmpdir:
        tmp = Path(tmpdir)
        gport, hport = free_port(), free_port()
        addr, http_url = f"127.0.0.1:{gport}", f"http://127.0.0.1:{hport}"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "clients" / "python"), args.server_path]))
        log_path = tmp / "server.log"
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [
                    *(sys.executable, "-m", "lobwife_server", "--state-dir", str(tmp / "state"), "--jobs", ""),
                    *("--grpc-port", str(gport), "--http-port", str(hport), "--log-level", "warning"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp,
                start_new_session=True,
            )
        streams = Streams(addr, hport)
        rows: list[tuple[str, float, str]] = []
        try:

            def up() -> bool:
                if server.poll() is not None:
                    raise SystemExit("the server exited:\n" + log_path.read_text())
                try:
                    watchers(http_url)
                except OSError:
                    return False
                return True

            wait_for(up, 30, "the server")
            ch = grpc.insecure_channel(addr)
            stub = tasks_pb2_grpc.TaskServiceStub(ch)
            task_id = stub.CreateTask(tasks_pb2.CreateTaskRequest(name="watched"), timeout=10).task.task_id
            changes(stub, task_id, args.changes)  # the history; also warms up code paths and allocator arenas
            rows.append((f"started, {args.changes} changes made", rss_mib(server.pid), ""))

            # Round 1: live streams, stalling one after another.
            burst = max(1, args.changes // n)
            for i, kind in enumerate(kinds):
                streams.open(kind, 0)
                wait_for(lambda i=i: watchers(http_url) >= i + 1, 30, f"stream {i + 1}")  # type: ignore[misc]
                changes(stub, task_id, burst)
            changes(stub, task_id, args.changes)
            time.sleep(1)
            rows.append((f"live: {n} streams unread, {burst * n + args.changes} changes", rss_mib(server.pid), ""))
            rows.append(("  streams the server still counts", watchers(http_url), "count"))
            streams.close()
            took = wait_for(lambda: watchers(http_url) == 0, 60, "the streams to be released")
            time.sleep(1)
            rows.append(("live: streams closed", rss_mib(server.pid), f"released in {took:.1f}s"))

            # Round 2: streams replaying the whole history, stalling in it.
            for kind in kinds:
                streams.open(kind, 1)
            wait_for(lambda: watchers(http_url) >= n, 60, f"{n} streams")
            time.sleep(3)  # let each replay run until its client's buffers are full
            rows.append((f"replay: {n} streams unread", rss_mib(server.pid), ""))
            streams.close()
            took = wait_for(lambda: watchers(http_url) == 0, 60, "the streams to be released")
            time.sleep(1)
            rows.append(("replay: streams closed", rss_mib(server.pid), f"released in {took:.1f}s"))
            changes(stub, task_id, args.changes)
            rows.append((f"{args.changes} more changes, nobody watching", rss_mib(server.pid), ""))
            ch.close()
        finally:
            streams.close()
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()

    mix = f"{kinds.count('grpc')} gRPC, {kinds.count('http')} HTTP"
    print(f"server RSS (VmRSS), {n} streams a round ({mix}), server from {args.server_path}:")
    for what, value, note in rows:
        shown = f"{int(value):>8d}    " if note == "count" else f"{value:>8.1f} MiB"
        print(f"  {what:<52} {shown}  {'' if note == 'count' else note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
