"""lobwife benchmark: throughput and latency of the task calls against bare baselines.

    python bench/run.py             # 3 rounds x 5 s per measurement (~4 minutes)
    python bench/run.py --quick     # 1 round x 3 s: smoke run

Starts three servers on free 127.0.0.1 ports -- the real lobwife server over a
fresh SQLite file seeded with 1,000 tasks, a bare grpc.aio echo server and a bare
aiohttp JSON server, all on uvloop -- then drives each at 64 concurrent in-flight
calls: gRPC with h2load, HTTP/JSON with wrk. Each lobwife measurement directly
follows a measurement of its baseline (the machine is noisy, and noise is
correlated in time), rounds repeat that, and the table reports medians across
rounds and the ratio lobwife / baseline against a target. It is a measurement,
not a test: the exit status is 0 whatever the ratios (non-zero only when the
harness itself cannot run). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lobwife.v1 import tasks_pb2, tasks_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WRK_POST_LUA = BENCH / "wrk_post.lua"
SERVER_PYTHONPATH = os.pathsep.join([str(ROOT / "clients" / "python"), str(ROOT / "server")])

#: 64 calls in flight for every measurement: h2load 8 connections x 8 streams, wrk 64 connections.
H2_CONNECTIONS = 8
H2_STREAMS = 8
WRK_CONNECTIONS = 64
CONCURRENCY = H2_CONNECTIONS * H2_STREAMS

SEED_TASKS = 1000
LIST_PAGE = 100
#: Pause after each measurement so the calls still in flight on the server finish
#: (and queued writes commit) before the next measurement or a count check starts.
SETTLE_SECONDS = 0.5
WARMUP_SECONDS = 1

ECHO_METHOD = "/bench.Echo/Echo"  # as registered by bench/echo_server.py
TASK_SERVICE = "lobwife.v1.TaskService"
CREATE_BODY = '{"name": "bench task", "type": "swe", "repos": ["o/r"], "actor": "bench"}'

#: The measured calls (each paired with its baseline), as --only names them.
MEASURED = ("grpc_get", "grpc_list", "grpc_create", "http_get", "http_list", "http_create")

APT_PACKAGES = {"h2load": "nghttp2-client", "wrk": "wrk", "curl": "curl"}


class BenchError(Exception):
    """The harness cannot produce a meaningful measurement (setup or sanity check failed)."""


# --------------------------------------------------------------------------- subprocesses


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SERVER_PYTHONPATH + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@dataclass
class ServerProc:
    name: str
    cmd: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """user + system CPU of the process (all its threads) so far, from /proc."""
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces; skip past it
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn(name: str, cmd: list[str], log_path: Path) -> ServerProc:
    with open(log_path, "wb") as logf:
        # Own session: a Ctrl-C in the terminal reaches only this script, which then
        # stops the servers in order (SIGTERM, wait, SIGKILL) from its finally block.
        proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, env=server_env(), cwd=ROOT, start_new_session=True
        )
    return ServerProc(name, cmd, proc, log_path)


def wait_port_file(srv: ServerProc, port_file: Path, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise BenchError(f"{srv.name} exited with {srv.proc.returncode}:\n{srv.log_tail()}")
        with contextlib.suppress(OSError, ValueError):
            return int(port_file.read_text())
        time.sleep(0.05)
    raise BenchError(f"{srv.name} did not start within {timeout}s:\n{srv.log_tail()}")


def grpc_serving(addr: str) -> bool:
    with grpc.insecure_channel(addr) as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
        except grpc.RpcError:
            return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass
class Lobwife:
    srv: ServerProc
    grpc_port: int
    http_port: int

    @property
    def grpc_addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def start_lobwife(tmp: Path, timeout: float = 30.0) -> Lobwife:
    state_dir = tmp / "state"
    for attempt in range(3):  # a probed free port can be taken before the server binds it; try again
        gport, hport = free_port(), free_port()
        cmd = [
            sys.executable,
            "-m",
            "lobwife_server",
            "--state-dir",
            str(state_dir),
            "--grpc-port",
            str(gport),
            "--http-port",
            str(hport),
            "--log-level",
            "warning",
        ]
        srv = spawn("lobwife", cmd, tmp / f"lobwife-{attempt}.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and srv.proc.poll() is None:
            if grpc_serving(f"127.0.0.1:{gport}"):
                return Lobwife(srv, gport, hport)
            time.sleep(0.05)
        srv.stop()
        if "in use" not in srv.log_tail().lower():
            raise BenchError(f"lobwife did not report SERVING within {timeout}s:\n{srv.log_tail()}")
    raise BenchError("lobwife: could not bind free ports in 3 attempts")


def start_baseline(name: str, script: str, tmp: Path, *extra_args: str) -> tuple[ServerProc, int]:
    port_file = tmp / f"{name}.port"
    cmd = [sys.executable, str(BENCH / script), "--port-file", str(port_file), *extra_args]
    srv = spawn(name, cmd, tmp / f"{name}.log")
    return srv, wait_port_file(srv, port_file)


# --------------------------------------------------------------------------- load generators


@dataclass
class Sample:
    rate: float  # requests per second, as the load generator reports it
    p50_ms: float
    p99_ms: float
    requests: int  # completed with a 2xx status
    errors: int  # non-2xx, socket errors, failed streams, missing creates, short gRPC responses
    gen_cpu: float  # CPU of the load generator / wall time (1.0 = one core)
    srv_cpu: float  # CPU of the server under load / wall time
    other_cpu: float  # CPU of every other process on the machine / wall time: noise
    notes: list[str] = field(default_factory=list)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def machine_busy_cpu() -> float:
    """CPU seconds all processors spent running processes (or stolen) since boot, from /proc/stat."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0
    # user + nice + system, plus steal (CPU the hypervisor gave to other guests). Left out:
    # idle, iowait, and irq/softirq, where the kernel runs loopback networking -- the
    # benchmark's own traffic, not noise. Guest columns are already counted in user.
    user, nice, system = ticks[0:3]
    steal = ticks[7] if len(ticks) > 7 else 0
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


def timed_run(cmd: list[str], server: ServerProc, timeout: float) -> tuple[str, float, float, float]:
    """Run a load generator; return its stdout and the CPU (in cores) used by it, the server and the rest."""
    c0, s0, m0, t0 = children_cpu(), server.cpu_seconds(), machine_busy_cpu(), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.monotonic() - t0
    gen, srv = (children_cpu() - c0) / wall, (server.cpu_seconds() - s0) / wall
    other = max(0.0, (machine_busy_cpu() - m0) / wall - gen - srv)
    if proc.returncode != 0:
        raise BenchError(f"{cmd[0]} exited with {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout, gen, srv, other


def _int(pattern: str, text: str, default: int | None = None) -> int:
    m = re.search(pattern, text)
    if m is None:
        if default is not None:
            return default
        raise BenchError(f"cannot find {pattern!r} in load generator output:\n{text}")
    return int(m.group(1))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


def h2load_cmd(url: str, frame: Path, duration: int, log_file: Path | None) -> list[str]:
    cmd = ["h2load", "-t", "1", "-c", str(H2_CONNECTIONS), "-m", str(H2_STREAMS), "-D", str(duration)]
    cmd += ["-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(frame)]
    if log_file is not None:
        cmd += ["--log-file", str(log_file)]
    return [*cmd, url]


def run_h2load(url: str, frame: Path, duration: int, log_file: Path, server: ServerProc, min_resp: int) -> Sample:
    """One h2load measurement of a unary gRPC method.

    h2load counts any HTTP 200 as a success, and a gRPC error is an HTTP 200 with
    the error in the trailers and no DATA; so an average response body well under
    the size of a real response (``min_resp``) means the calls are failing.
    """
    log_file.unlink(missing_ok=True)
    out, gen, srv, other = timed_run(h2load_cmd(url, frame, duration, log_file), server, duration + 30)
    m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    if m is None:
        raise BenchError(f"unexpected h2load output:\n{out}")
    succeeded = _int(r"(\d+) succeeded", out)
    errors = _int(r"(\d+) failed", out) + _int(r"(\d+) errored", out) + _int(r"(\d+) timeout", out)
    errors += sum(_int(rf"(\d+) {c}xx", out, 0) for c in (3, 4, 5))
    data_bytes = _int(r"\((\d+)\) data", out, 0)
    latencies = sorted(int(line.split("\t")[2]) / 1000.0 for line in log_file.read_text().splitlines() if line)
    sample = Sample(
        float(m.group(1)), percentile(latencies, 50), percentile(latencies, 99), succeeded, errors, gen, srv, other
    )
    if succeeded and data_bytes / succeeded < 0.9 * min_resp:
        sample.errors += succeeded
        sample.notes.append(
            f"responses average {data_bytes / succeeded:.0f} B, a real one is {min_resp} B: gRPC errors in trailers?"
        )
    return sample


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _wrk_latency(q: int, out: str) -> float:
    m = re.search(rf"^\s*{q}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
    if m is None:
        raise BenchError(f"no {q}% line in wrk output:\n{out}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def wrk_cmd(url: str, duration: int, post: bool) -> list[str]:
    cmd = ["wrk", "-t", "1", "-c", str(WRK_CONNECTIONS), "-d", f"{duration}s", "--latency"]
    if post:
        cmd += ["-s", str(WRK_POST_LUA)]
    return [*cmd, url]


def run_wrk(url: str, duration: int, post: bool, server: ServerProc) -> Sample:
    out, gen, srv, other = timed_run(wrk_cmd(url, duration, post), server, duration + 30)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        raise BenchError(f"unexpected wrk output:\n{out}")
    total = _int(r"(\d+) requests in", out)
    errors = _int(r"Non-2xx or 3xx responses:\s+(\d+)", out, 0)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock is not None:
        errors += sum(int(g) for g in sock.groups())
    return Sample(
        float(m.group(1)), _wrk_latency(50, out), _wrk_latency(99, out), total - errors, errors, gen, srv, other
    )


# --------------------------------------------------------------------------- lobwife calls


def grpc_frame(msg: Message) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, payload."""
    body = msg.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


def get_request() -> tasks_pb2.GetTaskRequest:
    return tasks_pb2.GetTaskRequest(task_id="T1")


def create_request() -> tasks_pb2.CreateTaskRequest:
    return tasks_pb2.CreateTaskRequest(name="bench task", type="swe", repos=["o/r"], actor="bench")


def list_request() -> tasks_pb2.ListTasksRequest:
    return tasks_pb2.ListTasksRequest(page_size=LIST_PAGE)


def seed(addr: str, count: int) -> None:
    with grpc.insecure_channel(addr) as ch:
        stub = tasks_pb2_grpc.TaskServiceStub(ch)
        for start in range(0, count, 100):
            futures = [
                stub.CreateTask.future(
                    tasks_pb2.CreateTaskRequest(name=f"seed task {i}", type="swe", repos=["o/r"], actor="bench"),
                    timeout=30,
                )
                for i in range(start, min(count, start + 100))
            ]
            for f in futures:
                f.result()


def curl(method: str, url: str, body: str | None = None) -> tuple[int, bytes]:
    cmd = ["curl", "-sS", "--max-time", "10", "-X", method, "-w", "\n%{http_code}", url]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", body]
    proc = subprocess.run(cmd, capture_output=True, timeout=20, check=False)
    if proc.returncode != 0:
        raise BenchError(f"curl {method} {url}: {proc.stderr.decode(errors='replace').strip()}")
    payload, _, status = proc.stdout.rpartition(b"\n")
    return int(status), payload


def expect_http(method: str, url: str, status: int, body: str | None = None) -> object:
    got, payload = curl(method, url, body)
    if got != status:
        raise BenchError(f"sanity: {method} {url} answered {got}, expected {status}: {payload[:300]!r}")
    return json.loads(payload)


def task_count(http_url: str) -> int:
    with urllib.request.urlopen(f"{http_url}/health", timeout=10) as resp:
        doc = json.loads(resp.read())
    return int(doc["db"]["task_count"])


@dataclass(frozen=True)
class SanityFacts:
    """What correct responses look like, to recognise failed calls under load."""

    get_frame_bytes: int
    create_frame_bytes: int
    list_frame_bytes: int


def sanity(lw: Lobwife, echo_port: int, aio_port: int) -> SanityFacts:
    """Each measured call once, with a real client, before any timing."""
    with grpc.insecure_channel(lw.grpc_addr) as ch:
        stub = tasks_pb2_grpc.TaskServiceStub(ch)
        got = stub.GetTask(get_request(), timeout=10)
        if got.task.task_id != "T1":
            raise BenchError(f"sanity: GetTask(T1) returned task {got.task.task_id!r}")
        created = stub.CreateTask(create_request(), timeout=10)
        if not created.task.task_id or created.task.name != "bench task":
            raise BenchError(f"sanity: CreateTask returned {created}")
        listed = stub.ListTasks(list_request(), timeout=10)
        if len(listed.tasks) != LIST_PAGE:
            raise BenchError(f"sanity: ListTasks(page_size={LIST_PAGE}) returned {len(listed.tasks)} tasks")
    with grpc.insecure_channel(f"127.0.0.1:{echo_port}") as ch:
        payload = grpc_frame(get_request())[5:]
        echo_call = ch.unary_unary(ECHO_METHOD, request_serializer=None, response_deserializer=None)
        echoed = echo_call(payload, timeout=10)
        if echoed != payload:
            raise BenchError(f"sanity: echo server returned {echoed!r} for {payload!r}")

    task = expect_http("GET", f"{lw.http_url}/api/v1/tasks/T1", 200)
    if not isinstance(task, dict) or task.get("task_id") != "T1":
        raise BenchError(f"sanity: GET /api/v1/tasks/T1 returned {task!r}")
    expect_http("POST", f"{lw.http_url}/api/v1/tasks", 201, CREATE_BODY)
    tasks = expect_http("GET", f"{lw.http_url}/api/v1/tasks?limit={LIST_PAGE}", 200)
    if not isinstance(tasks, list) or len(tasks) != LIST_PAGE:
        raise BenchError(f"sanity: GET /api/v1/tasks?limit={LIST_PAGE} did not return {LIST_PAGE} tasks")
    aio = f"http://127.0.0.1:{aio_port}/json"
    expect_http("GET", aio, 200)
    expect_http("POST", aio, 201, CREATE_BODY)
    return SanityFacts(
        get_frame_bytes=5 + got.ByteSize(),
        create_frame_bytes=5 + created.ByteSize(),
        list_frame_bytes=5 + listed.ByteSize(),
    )


# --------------------------------------------------------------------------- plan


@dataclass
class Target:
    key: str
    label: str
    transport: str
    server: ServerProc
    url: str
    frame: Path | None = None  # gRPC: h2load -d file
    post: bool = False  # HTTP: wrk with the POST script
    min_resp: int = 0  # gRPC: size of a real response frame
    counts_creates: bool = False  # check the task count grew by the number of calls
    baseline: str | None = None
    target: float | None = None
    samples: list[Sample] = field(default_factory=list)
    paired: list[Sample] = field(default_factory=list)  # baseline samples taken just before this target's
    cmd: list[str] = field(default_factory=list)


def measure(t: Target, duration: int, tmp: Path, lw: Lobwife, warmup: bool = False) -> Sample:
    before = task_count(lw.http_url) if t.counts_creates and not warmup else 0
    if t.frame is not None:
        log_file = tmp / "h2load.log"
        t.cmd = h2load_cmd(t.url, t.frame, duration, log_file)
        sample = run_h2load(t.url, t.frame, duration, log_file, t.server, t.min_resp)
    else:
        t.cmd = wrk_cmd(t.url, duration, t.post)
        sample = run_wrk(t.url, duration, t.post, t.server)
    time.sleep(SETTLE_SECONDS)
    if t.counts_creates and not warmup:
        grown = task_count(lw.http_url) - before
        # Calls cut off when the duration ends may still commit, so the count can
        # exceed the completed calls by up to the number in flight, never fall short.
        if not sample.requests <= grown <= sample.requests + 2 * CONCURRENCY:
            sample.notes.append(f"task count grew by {grown} for {sample.requests} completed creates")
            sample.errors += max(0, sample.requests - grown)
    return sample


def build_plan(
    tmp: Path,
    lw: Lobwife,
    echo: ServerProc,
    echo_port: int,
    aio: ServerProc,
    aio_port: int,
    facts: SanityFacts,
    ceiling: tuple[ServerProc, int] | None = None,
) -> list[Target]:
    frames = {
        "get": (get_request(), facts.get_frame_bytes),
        "create": (create_request(), facts.create_frame_bytes),
        "list": (list_request(), facts.list_frame_bytes),
    }
    paths: dict[str, Path] = {}
    for name, (msg, _) in frames.items():
        paths[name] = tmp / f"{name}.grpc"
        paths[name].write_bytes(grpc_frame(msg))
    g = f"http://127.0.0.1:{lw.grpc_port}/{TASK_SERVICE}"
    h = f"{lw.http_url}/api/v1/tasks"
    aio_url = f"http://127.0.0.1:{aio_port}/json"
    echo_min = len(grpc_frame(get_request()))
    extra: list[Target] = []
    if ceiling is not None:
        # The create request, echoed after a durable commit: no target, a yardstick for CreateTask.
        extra.append(
            Target(
                "echo_commit",
                "echo + durable commit (ceiling)",
                "gRPC",
                ceiling[0],
                f"http://127.0.0.1:{ceiling[1]}{ECHO_METHOD}",
                frame=paths["create"],
                min_resp=len(grpc_frame(create_request())),
                baseline="echo",
            )
        )
    return [
        Target(
            "echo",
            "echo (bare grpc.aio)",
            "gRPC",
            echo,
            f"http://127.0.0.1:{echo_port}{ECHO_METHOD}",
            frame=paths["get"],
            min_resp=echo_min,
        ),
        Target(
            "grpc_get",
            "GetTask",
            "gRPC",
            lw.srv,
            f"{g}/GetTask",
            frame=paths["get"],
            min_resp=frames["get"][1],
            baseline="echo",
            target=0.70,
        ),
        Target(
            "grpc_list",
            "ListTasks (100)",
            "gRPC",
            lw.srv,
            f"{g}/ListTasks",
            frame=paths["list"],
            min_resp=frames["list"][1],
            baseline="echo",
            target=0.25,
        ),
        Target(
            "grpc_create",
            "CreateTask",
            "gRPC",
            lw.srv,
            f"{g}/CreateTask",
            frame=paths["create"],
            min_resp=frames["create"][1],
            counts_creates=True,
            baseline="echo",
            target=0.60,
        ),
        Target("aio_get", "GET /json (bare aiohttp)", "HTTP", aio, aio_url),
        Target("aio_post", "POST /json (bare aiohttp)", "HTTP", aio, aio_url, post=True),
        Target("http_get", "GET /api/v1/tasks/T1", "HTTP", lw.srv, f"{h}/T1", baseline="aio_get", target=0.25),
        Target(
            "http_list",
            f"GET /api/v1/tasks?limit={LIST_PAGE}",
            "HTTP",
            lw.srv,
            f"{h}?limit={LIST_PAGE}",
            baseline="aio_get",
            target=0.06,
        ),
        Target(
            "http_create",
            "POST /api/v1/tasks",
            "HTTP",
            lw.srv,
            h,
            post=True,
            counts_creates=True,
            baseline="aio_post",
            target=0.25,
        ),
        *extra,
    ]


# --------------------------------------------------------------------------- report


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}"


def fmt_pct(v: float) -> str:
    return f"{v * 100:.0f}%"


def table(plan: list[Target]) -> list[str]:
    head = [
        "call",
        "transport",
        "req/s",
        "p50 ms",
        "p99 ms",
        "baseline req/s",
        "ratio",
        "target",
        "result",
        "errors",
        "gen CPU",
        "srv CPU",
        "other CPU",
    ]
    rows: list[list[str]] = []
    for t in plan:
        s = t.samples
        row = [
            t.label,
            t.transport,
            fmt_rate(med([x.rate for x in s])),
            f"{med([x.p50_ms for x in s]):.2f}",
            f"{med([x.p99_ms for x in s]):.2f}",
        ]
        if t.baseline is None:
            row += ["(baseline)", "", "", ""]
        else:
            base = med([x.rate for x in t.paired])
            ratio = med([x.rate for x in s]) / base
            if t.target is None:  # a yardstick, not a goal
                row += [fmt_rate(base), f"{ratio:.2f}", "", ""]
            else:
                verdict = "PASS" if ratio >= t.target else "FAIL"
                row += [fmt_rate(base), f"{ratio:.2f}", f">= {t.target:.2f}", verdict]
        row += [
            str(sum(x.errors for x in s)),
            fmt_pct(med([x.gen_cpu for x in s])),
            fmt_pct(med([x.srv_cpu for x in s])),
            fmt_pct(med([x.other_cpu for x in s])),
        ]
        rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {2, 3, 4, 5, 6, 9, 10, 11, 12}

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    sep = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return [line(head), sep, *(line(r) for r in rows)]


def versions() -> str:
    parts = [f"Python {platform.python_version()}"]
    for dist in ("grpcio", "protobuf", "aiohttp", "orjson", "uvloop"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return ", ".join(parts)


def tool_version(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    out = (proc.stdout + proc.stderr).strip().splitlines()
    return out[0].strip() if out else "?"


def machine_info() -> list[str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"machine: nproc={len(os.sched_getaffinity(0))} ({model}), {mem} RAM, {platform.system()} {platform.release()}",
        f"load average at start: {load}",
        f"software: {versions()}; {tool_version(['h2load', '--version'])}; {tool_version(['wrk', '-v'])}",
    ]


# --------------------------------------------------------------------------- main


def check_tools() -> bool:
    missing = [tool for tool in APT_PACKAGES if shutil.which(tool) is None]
    if missing:
        pkgs = " ".join(APT_PACKAGES[t] for t in missing)
        print(f"missing: {', '.join(missing)}. Install with:\n    sudo apt-get install -y {pkgs}", file=sys.stderr)
        return False
    return True


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(
    rounds: int,
    duration: int,
    tmp: Path,
    servers: list[ServerProc],
    only: frozenset[str] = frozenset(),
    ceiling: bool = False,
) -> None:
    info = machine_info()
    print("\n".join(info), flush=True)
    lw = start_lobwife(tmp)
    servers.append(lw.srv)
    echo, echo_port = start_baseline("echo", "echo_server.py", tmp)
    servers.append(echo)
    aio, aio_port = start_baseline("aiohttp", "aiohttp_server.py", tmp)
    servers.append(aio)
    commit: tuple[ServerProc, int] | None = None
    if ceiling:
        commit = start_baseline("echo_commit", "echo_commit_server.py", tmp, "--db", str(tmp / "echo_commit.db"))
        servers.append(commit[0])
    print(f"servers: lobwife gRPC {lw.grpc_addr} HTTP {lw.http_url}; echo :{echo_port}; aiohttp :{aio_port}")

    seed(lw.grpc_addr, SEED_TASKS)
    count = task_count(lw.http_url)
    if count != SEED_TASKS:
        raise BenchError(f"seeded {SEED_TASKS} tasks but /health reports {count}")
    facts = sanity(lw, echo_port, aio_port)
    print(f"seeded {SEED_TASKS} tasks; sanity checks passed (each call answered correctly once)")

    plan = build_plan(tmp, lw, echo, echo_port, aio, aio_port, facts, commit)
    if only:  # the named calls and the baselines they are paired with
        keep = only | {t.baseline for t in plan if t.key in only and t.baseline is not None}
        plan = [t for t in plan if t.key in keep]
    by_key = {t.key: t for t in plan}
    subjects = [t for t in plan if t.baseline is not None]
    per_round = 2 * len(subjects)
    estimate = len(plan) * (WARMUP_SECONDS + 0.7) + rounds * per_round * (duration + SETTLE_SECONDS + 0.3)
    print(
        f"measuring: {rounds} round(s) x {per_round} runs x {duration} s, 64 in flight; about {estimate / 60:.1f} min"
    )

    for t in plan:  # first calls are slower (imports, caches, connection set-up): keep them out of round 1
        measure(t, WARMUP_SECONDS, tmp, lw, warmup=True)

    for r in range(1, rounds + 1):
        for subject in subjects:
            assert subject.baseline is not None
            base = by_key[subject.baseline]
            for t in (base, subject):
                s = measure(t, duration, tmp, lw)
                t.samples.append(s)
                if t is base:
                    subject.paired.append(s)
                flag = f"  errors={s.errors}" if s.errors else ""
                notes = "".join(f"  [{n}]" for n in s.notes)
                print(
                    f"  round {r}/{rounds}  {t.transport:4} {t.label:32} {fmt_rate(s.rate):>8} req/s  "
                    f"p50 {s.p50_ms:6.2f} ms  p99 {s.p99_ms:6.2f} ms  gen CPU {fmt_pct(s.gen_cpu):>4}  "
                    f"srv CPU {fmt_pct(s.srv_cpu):>4}  other CPU {fmt_pct(s.other_cpu):>4}{flag}{notes}",
                    flush=True,
                )

    print()
    print(f"Results: median of {rounds} round(s) x {duration} s, {CONCURRENCY} calls in flight")
    print("\n".join(table(plan)))
    print()
    print("ratio = lobwife req/s / req/s of its baseline measured just before it in the same round (medians)")
    print(
        "gen / srv / other CPU: CPU time of the load generator / the server / all other processes"
        " over wall time (100% = one core)"
    )
    anomalies = [f"{t.label}: {n}" for t in plan for s in t.samples for n in s.notes]
    anomalies += [
        f"{t.label}: {sum(s.errors for s in t.samples)} errors" for t in plan if any(s.errors for s in t.samples)
    ]
    anomalies += [
        f"{t.label}: load generator at {fmt_pct(med([s.gen_cpu for s in t.samples]))} CPU (saturated?)"
        for t in plan
        if med([s.gen_cpu for s in t.samples]) > 0.9
    ]
    # On 2 cores the server and the load generator already take most of the machine:
    # anything else running during a measurement takes CPU from one of them.
    anomalies += [
        f"{t.label}: other processes used {fmt_pct(max(s.other_cpu for s in t.samples))} CPU in one round (noise)"
        for t in plan
        if max(s.other_cpu for s in t.samples) > 0.25
    ]
    # A steady server gives similar rates every round; a large spread means its state
    # changed between rounds (caches, database size) or the machine was busy.
    for t in plan:
        rates = [s.rate for s in t.samples]
        if rates and min(rates) > 0 and max(rates) / min(rates) > 1.4:
            each = " / ".join(fmt_rate(x) for x in rates)
            anomalies.append(f"{t.label}: rate varied {max(rates) / min(rates):.1f}-fold across rounds ({each} req/s)")
    if anomalies:
        print("\nAnomalies:")
        print("\n".join(f"  - {a}" for a in dict.fromkeys(anomalies)))
    print("\nCommands:")
    for srv in servers:
        print(f"  {srv.name}: {shlex.join(srv.cmd)}")
    for t in plan:
        print(f"  {t.label}: {shlex.join(t.cmd)}")
    print(f"  (servers run with PYTHONPATH={SERVER_PYTHONPATH}; temp files under {tmp}, removed on exit)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Benchmark lobwife's task calls (gRPC and HTTP/JSON) against bare grpc.aio and aiohttp servers."
    )
    p.add_argument("--rounds", type=int, help="rounds of measurements; the median is reported (default 3)")
    p.add_argument("--duration", type=int, help="seconds per measurement (default 5)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round of 3 s (unless set explicitly)")
    p.add_argument(
        "--only",
        default="",
        help=f"comma-separated calls to measure, with their baselines (of: {', '.join(MEASURED)}); default all",
    )
    p.add_argument(
        "--ceiling",
        action="store_true",
        help="also measure echo_commit: the echo server committing each call to SQLite first (CreateTask's ceiling)",
    )
    args = p.parse_args(argv)
    only = frozenset(k for k in args.only.split(",") if k)
    if only - {*MEASURED, "echo_commit"}:
        p.error(f"--only takes calls from: {', '.join(MEASURED)} (and echo_commit with --ceiling)")
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    duration = args.duration if args.duration is not None else (3 if args.quick else 5)
    if rounds < 1 or duration < 1:
        p.error("--rounds and --duration must be at least 1")
    if not check_tools():
        return 2

    signal.signal(signal.SIGTERM, _raise_interrupt)  # stop the servers on SIGTERM as on Ctrl-C
    servers: list[ServerProc] = []
    try:
        with tempfile.TemporaryDirectory(prefix="lobwife-bench-") as tmp:
            try:
                run(rounds, duration, Path(tmp), servers, only, args.ceiling or "echo_commit" in only)
            finally:
                for srv in reversed(servers):
                    srv.stop()
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    except (BenchError, subprocess.TimeoutExpired, grpc.RpcError, OSError) as e:
        print(f"\nbench failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
