"""lobwife benchmark for issue 10: the GitHub token broker and auth, against GetTask in the same run.

    python bench/broker_bench.py            # 3 rounds x 12 runs x 5 s (~3.5 minutes)
    python bench/broker_bench.py --quick    # 1 round x 3 s: smoke run (~1 minute)

Starts a GitHub App stand-in (``tests/fakes/github.FakeGitHub``, a real HTTP server in this
process) and two real lobwife servers on free 127.0.0.1 ports, both with the broker pointed at
it: one with ``--auth off``, one with ``--auth enforce``. Each gets 100 tasks, registered over 10
repository sets. Then:

1. **GitHub calls**: 10,000 ``IssueTaskToken`` calls over the 100 tasks, 64 in flight (grpc.aio),
   from a cold token cache; the stand-in counts its ``access_tokens`` calls (target <= 10).
2. **Rates**, 64 calls in flight (h2load for gRPC, wrk for HTTP), interleaved pairs of a
   baseline and a subject, repeated ``--rounds`` times, the order of each pair swapped every
   other round: IssueTaskToken (from the cache) beside GetTask, over gRPC and over HTTP; GetTask
   with ``enforce`` (an admin JWT per call) beside GetTask with auth off, over gRPC (and over HTTP,
   without a target); and, without a target, IssueTaskToken beside CreateTask: a token is a
   durable write (its audit row commits before it is returned), and this is its cost beside
   another write. The table reports medians, the ratio (median of the per-round ratios),
   the target, CPU of the load generator / the server / everything else, and the server's CPU
   per request.

A measurement, not a test: the exit status is 0 whatever the figures, non-zero only when the
harness cannot run (a tool missing, a server that does not start, a sanity check that fails).
See bench/README.md, "Token broker and auth".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.fakes (the GitHub stand-in); bench/ itself is on the path as the script's folder

import run as bench_run  # noqa: E402  (bench/run.py: process, CPU and h2load helpers shared with the task bench)

from lobwife.v1 import broker_pb2, broker_pb2_grpc, tasks_pb2, tasks_pb2_grpc  # noqa: E402
from tests.fakes.github import AppKey, FakeGitHub  # noqa: E402

BenchError = bench_run.BenchError

TASKS = 100
REPO_SETS = 10
TOKEN_REQUESTS = 10_000
GITHUB_CALL_TARGET = 10
CONCURRENCY = bench_run.CONCURRENCY  # 64: h2load 8 connections x 8 streams, wrk 64 connections
SETTLE_SECONDS = 0.5
WARMUP_SECONDS = 1
#: Other processes above this share of a core during a measurement: the round is flagged as noisy.
NOISY_OTHER_CPU = 0.25

TASK_SERVICE = "lobwife.v1.TaskService"
BROKER_SERVICE = "lobwife.v1.BrokerService"
ACCOUNT = "lobmob"  # FakeGitHub's default installation: lobmob/repo0..repo19 and lobmob/lobwife


def repo_set(k: int) -> list[str]:
    """Repository set k of REPO_SETS: two repositories of the stand-in's installation, none shared."""
    return [f"{ACCOUNT}/repo{2 * k}", f"{ACCOUNT}/repo{2 * k + 1}"]


def task_ref(i: int) -> str:
    """Task i (1-based), registered with repository set (i - 1) % REPO_SETS."""
    return f"T{i}"


# --------------------------------------------------------------------------- servers


@dataclass
class Lobwife:
    name: str
    srv: bench_run.ServerProc
    grpc_port: int
    http_port: int
    state_dir: Path
    metadata: tuple[tuple[str, str], ...] = ()  # what a client sends to be admitted (enforce: an admin JWT)

    @property
    def grpc_addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def start_lobwife(
    name: str, tmp: Path, server_path: Path, gh: FakeGitHub, extra: Sequence[str], timeout: float = 40.0
) -> Lobwife:
    state_dir = tmp / name / "state"
    state_dir.mkdir(parents=True)
    env = dict(os.environ)
    env.update(gh.env())
    env["LOBWIFE_BROKER_GITHUB_TIMEOUT"] = "10"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "clients" / "python"), str(server_path)])
    for attempt in range(3):  # a probed free port can be taken before the server binds it; try again
        gport, hport = bench_run.free_port(), bench_run.free_port()
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
            "--jobs",
            "",  # no example jobs: nothing runs on a timer during the measurements
            *extra,
        ]
        log_path = tmp / name / f"server-{attempt}.log"
        with open(log_path, "wb") as logf:
            # Own session: a Ctrl-C reaches only this script, which stops the servers in order.
            proc = subprocess.Popen(
                cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True
            )
        srv = bench_run.ServerProc(f"lobwife ({name})", cmd, proc, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if bench_run.grpc_serving(f"127.0.0.1:{gport}"):
                return Lobwife(name, srv, gport, hport, state_dir)
            time.sleep(0.05)
        code = proc.poll()
        srv.stop()
        if "in use" not in srv.log_tail().lower():
            why = f"exited with {code}" if code is not None else f"did not report SERVING within {timeout}s"
            raise BenchError(f"lobwife ({name}) {why}:\n{srv.log_tail()}")
    raise BenchError(f"lobwife ({name}): could not bind free ports in 3 attempts")


def admin_token(state_dir: Path) -> str:
    """An admin JWT signed with the server's key, as ``lobwife auth mint`` makes one (the state folder's key)."""
    from lobwife_server.auth import mint_from_state_dir

    return mint_from_state_dir(state_dir, "admin", subject="bench", ttl=6 * 3600)


def http_json(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        with contextlib.suppress(ValueError):
            return e.code, json.loads(raw)
        return e.code, raw.decode(errors="replace")


def health(lw: Lobwife) -> dict[str, Any]:
    status, doc = http_json("GET", f"{lw.http_url}/health")
    if status != 200 or not isinstance(doc, dict):
        raise BenchError(f"GET /health on lobwife ({lw.name}) answered {status}: {str(doc)[:300]}")
    return doc


def audit_entries(lw: Lobwife) -> int:
    return int(health(lw).get("broker", {}).get("audit_entries", 0))


def token_counts(lw: Lobwife) -> dict[str, int]:
    """Each registration's token_count (GET /api/tasks, the legacy map), to see which tasks were asked for."""
    status, doc = http_json("GET", f"{lw.http_url}/api/tasks", headers=dict(lw.metadata))
    if status != 200 or not isinstance(doc, dict):
        raise BenchError(f"GET /api/tasks on lobwife ({lw.name}) answered {status}: {str(doc)[:300]}")
    return {ref: int(reg.get("token_count", 0)) for ref, reg in doc.items()}


def populate(lw: Lobwife) -> None:
    """TASKS tasks, task i registered with repository set (i - 1) % REPO_SETS, as lobboss does it."""
    md = lw.metadata
    with grpc.insecure_channel(lw.grpc_addr) as ch:
        tasks = tasks_pb2_grpc.TaskServiceStub(ch)
        broker = broker_pb2_grpc.BrokerServiceStub(ch)
        futures = [
            tasks.CreateTask.future(
                tasks_pb2.CreateTaskRequest(name=f"bench task {i}", type="swe", repos=repo_set((i - 1) % REPO_SETS)),
                metadata=md,
                timeout=30,
            )
            for i in range(1, TASKS + 1)
        ]
        ids = sorted(int(f.result().task.task_id.lstrip("T")) for f in futures)
        if ids != list(range(1, TASKS + 1)):
            raise BenchError(f"lobwife ({lw.name}): created tasks {ids[:5]}..., expected T1..T{TASKS}")
        for i in range(1, TASKS + 1):
            got = broker.RegisterTask(
                broker_pb2.RegisterTaskRequest(task_id=task_ref(i), repos=repo_set((i - 1) % REPO_SETS)),
                metadata=md,
                timeout=30,
            )
            if got.status != "registered":
                raise BenchError(f"lobwife ({lw.name}): RegisterTask({task_ref(i)}) answered {got}")


# --------------------------------------------------------------------------- GitHub calls


@dataclass
class CountResult:
    requests: int
    seconds: float
    calls: Counter[str]
    tokens_per_set: dict[int, int]  # distinct tokens handed out per repository set
    errors: int
    first_error: str = ""


async def _count_tokens(addr: str, n: int, md: tuple[tuple[str, str], ...]) -> tuple[list[str | None], str]:
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = broker_pb2_grpc.BrokerServiceStub(ch)
        out: list[str | None] = [None] * n
        first_error = ""
        next_i = 0

        async def worker() -> None:
            nonlocal next_i, first_error
            while next_i < n:
                i = next_i
                next_i += 1
                req = broker_pb2.IssueTaskTokenRequest(task_id=task_ref(i % TASKS + 1))
                try:
                    out[i] = (await stub.IssueTaskToken(req, metadata=md, timeout=30)).token
                except grpc.aio.AioRpcError as e:
                    first_error = first_error or f"{e.code().name}: {e.details()}"

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return out, first_error


def count_github_calls(lw: Lobwife, gh: FakeGitHub, n: int) -> CountResult:
    """n token requests over the TASKS tasks, CONCURRENCY in flight, from a cold cache; GitHub's calls counted."""
    gh.reset_calls()
    t0 = time.monotonic()
    tokens, first_error = asyncio.run(_count_tokens(lw.grpc_addr, n, lw.metadata))
    seconds = time.monotonic() - t0
    per_set: dict[int, set[str]] = {}
    for i, tok in enumerate(tokens):
        if tok is not None:
            per_set.setdefault(i % TASKS % REPO_SETS, set()).add(tok)
    calls = Counter({e: gh.calls_of(e) for e in ("access_tokens", "installation", "revoke", "repositories")})
    return CountResult(
        n,
        seconds,
        calls,
        {k: len(v) for k, v in sorted(per_set.items())},
        sum(t is None for t in tokens),
        first_error,
    )


# --------------------------------------------------------------------------- load generators


@dataclass
class Sample:
    rate: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    gen_cpu: float  # cores: load generator CPU / wall
    srv_cpu: float  # cores: the measured server's CPU / wall
    other_cpu: float  # cores: everything else on the machine / wall (noise)
    srv_us_per_req: float  # the measured server's CPU per completed request, µs
    notes: list[str] = field(default_factory=list)
    tasks_asked: int | None = None  # token calls: how many tasks' token_count grew


@dataclass
class Timed:
    stdout: str
    wall: float
    gen: float
    srv: float
    other: float


def timed(cmd: list[str], server: bench_run.ServerProc, timeout: float) -> Timed:
    """Run a load generator; CPU seconds used by it, by the server and by the rest of the machine."""
    c0, s0, m0 = bench_run.children_cpu(), server.cpu_seconds(), bench_run.machine_busy_cpu()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.monotonic() - t0
    gen, srv = bench_run.children_cpu() - c0, server.cpu_seconds() - s0
    other = max(0.0, bench_run.machine_busy_cpu() - m0 - gen - srv)
    if proc.returncode != 0:
        raise BenchError(f"{cmd[0]} exited with {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return Timed(proc.stdout, wall, gen, srv, other)


def _sample(t: Timed, rate: float, p50: float, p99: float, ok: int, errors: int) -> Sample:
    return Sample(
        rate,
        p50,
        p99,
        ok,
        errors,
        t.gen / t.wall,
        t.srv / t.wall,
        t.other / t.wall,
        t.srv / ok * 1e6 if ok else float("nan"),
    )


@dataclass
class Measurement:
    key: str
    label: str
    transport: str
    lw: Lobwife
    # gRPC (h2load): the method's URL and its request frame; HTTP (wrk): the URL and the lua script.
    url: str
    frames: list[Path] = field(default_factory=list)  # gRPC: one frame per round, taken in turn
    lua: Path | None = None
    headers: list[str] = field(default_factory=list)
    min_resp: int = 0  # gRPC: size of a real response frame (an error has none)
    audited: bool = False  # each call adds an audit row: check the count grew as much
    baseline: str | None = None
    target: float | None = None
    samples: list[Sample] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # per round, against the paired baseline sample
    paired: list[Sample] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)

    def command(self, duration: int, round_no: int, log_file: Path) -> list[str]:
        if self.transport == "gRPC":
            cmd = ["h2load", "-t", "1", "-c", str(bench_run.H2_CONNECTIONS), "-m", str(bench_run.H2_STREAMS)]
            cmd += ["-D", str(duration), "-H", "content-type: application/grpc", "-H", "te: trailers"]
            for h in self.headers:
                cmd += ["-H", h]
            frame = self.frames[(round_no - 1) % len(self.frames)]
            return [*cmd, "-d", str(frame), "--log-file", str(log_file), self.url]
        cmd = ["wrk", "-t", "1", "-c", str(bench_run.WRK_CONNECTIONS), "-d", f"{duration}s", "--latency"]
        for h in self.headers:
            cmd += ["-H", h]
        if self.lua is not None:
            cmd += ["-s", str(self.lua)]
        return [*cmd, self.url]


def run_h2load(m: Measurement, cmd: list[str], log_file: Path, duration: int) -> Sample:
    log_file.unlink(missing_ok=True)
    t = timed(cmd, m.lw.srv, duration + 30)
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", t.stdout)
    if rate is None:
        raise BenchError(f"unexpected h2load output:\n{t.stdout}")
    ok = bench_run._int(r"(\d+) succeeded", t.stdout)
    errors = sum(bench_run._int(rf"(\d+) {w}", t.stdout) for w in ("failed", "errored", "timeout"))
    errors += sum(bench_run._int(rf"(\d+) {c}xx", t.stdout, 0) for c in (3, 4, 5))
    data = bench_run._int(r"\((\d+)\) data", t.stdout, 0)
    lat = sorted(int(line.split("\t")[2]) / 1000.0 for line in log_file.read_text().splitlines() if line)
    s = _sample(t, float(rate.group(1)), bench_run.percentile(lat, 50), bench_run.percentile(lat, 99), ok, errors)
    # A gRPC error is an HTTP 200 with the status in the trailers and no message: h2load counts it
    # as a success, so a short average response means failing calls.
    if ok and data / ok < 0.9 * m.min_resp:
        s.errors += ok
        s.notes.append(f"responses average {data / ok:.0f} B, a real one is {m.min_resp} B: gRPC errors?")
    return s


def run_wrk(m: Measurement, cmd: list[str], duration: int) -> Sample:
    t = timed(cmd, m.lw.srv, duration + 30)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", t.stdout)
    if rate is None:
        raise BenchError(f"unexpected wrk output:\n{t.stdout}")
    total = bench_run._int(r"(\d+) requests in", t.stdout)
    errors = bench_run._int(r"Non-2xx or 3xx responses:\s+(\d+)", t.stdout, 0)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t.stdout)
    if sock is not None:
        errors += sum(int(g) for g in sock.groups())
    p50, p99 = bench_run._wrk_latency(50, t.stdout), bench_run._wrk_latency(99, t.stdout)
    return _sample(t, float(rate.group(1)), p50, p99, total - errors, errors)


def measure(m: Measurement, duration: int, round_no: int, tmp: Path, gh: FakeGitHub, warmup: bool = False) -> Sample:
    log_file = tmp / "h2load.log"
    m.cmd = m.command(duration, round_no, log_file)
    gh_before = gh.calls_of("access_tokens")
    audit_before = audit_entries(m.lw) if m.audited and not warmup else 0
    counts_before = token_counts(m.lw) if m.audited and not warmup else {}
    s = run_h2load(m, m.cmd, log_file, duration) if m.transport == "gRPC" else run_wrk(m, m.cmd, duration)
    time.sleep(SETTLE_SECONDS)  # calls cut off at the end finish (and their audit rows commit)
    fetched = gh.calls_of("access_tokens") - gh_before
    if fetched:
        s.notes.append(f"{fetched} GitHub token call(s) during the measurement: not all served from the cache")
    if m.audited and not warmup:
        grown = audit_entries(m.lw) - audit_before
        # Calls cut off when the duration ends may still be audited: up to the number in flight more.
        if not s.requests <= grown <= s.requests + 2 * CONCURRENCY:
            s.notes.append(f"audit log grew by {grown} for {s.requests} tokens handed out")
        after = token_counts(m.lw)
        s.tasks_asked = sum(after.get(ref, 0) > n for ref, n in counts_before.items())
    return s


# --------------------------------------------------------------------------- plan


def wrk_script(path: Path, method: str, requests: Sequence[tuple[str, str | None]]) -> Path:
    """A wrk script handing out the given (path, body) requests in turn, formatted once in init()."""
    items = ",\n".join(f"  {{{json.dumps(p)}, {json.dumps(b) if b is not None else 'nil'}}}" for p, b in requests)
    path.write_text(
        "-- Generated by bench/broker_bench.py: the requests are formatted once, then taken in turn.\n"
        f'wrk.method = "{method}"\n'
        + ('wrk.headers["Content-Type"] = "application/json"\n' if method == "POST" else "")
        + f"local items = {{\n{items}\n}}\n"
        "local reqs = {}\n"
        "local n = 0\n"
        "init = function(args)\n"
        "  for i, item in ipairs(items) do\n"
        "    reqs[i] = wrk.format(nil, item[1], nil, item[2])\n"
        "  end\n"
        "end\n"
        "request = function()\n"
        "  n = n % #reqs + 1\n"
        "  return reqs[n]\n"
        "end\n"
    )
    return path


@dataclass(frozen=True)
class Sizes:
    get: int
    token: int


def sanity(off: Lobwife, enf: Lobwife) -> Sizes:
    """Every measured call once with a real client, and enforce is really enforcing, before any timing."""
    with grpc.insecure_channel(off.grpc_addr) as ch:
        got = tasks_pb2_grpc.TaskServiceStub(ch).GetTask(tasks_pb2.GetTaskRequest(task_id="T1"), timeout=10)
        if got.task.task_id != "T1":
            raise BenchError(f"sanity: GetTask(T1) returned {got.task.task_id!r}")
        tok = broker_pb2_grpc.BrokerServiceStub(ch).IssueTaskToken(
            broker_pb2.IssueTaskTokenRequest(task_id="T1"), timeout=10
        )
        if not tok.token.startswith("ghs_") or sorted(tok.repos) != sorted(repo_set(0)):
            raise BenchError(f"sanity: IssueTaskToken(T1) returned repos {list(tok.repos)}")
    with grpc.insecure_channel(enf.grpc_addr) as ch:
        stub = tasks_pb2_grpc.TaskServiceStub(ch)
        if stub.GetTask(tasks_pb2.GetTaskRequest(task_id="T1"), metadata=enf.metadata, timeout=10).task.task_id != "T1":
            raise BenchError("sanity: GetTask(T1) with the admin token on the enforce server did not return T1")
        try:
            stub.GetTask(tasks_pb2.GetTaskRequest(task_id="T1"), timeout=10)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise BenchError(f"sanity: GetTask without a token on the enforce server: {e.code()}") from None
        else:
            raise BenchError("sanity: the enforce server answered GetTask without a token: auth is not enforced")
    status, doc = http_json("GET", f"{off.http_url}/api/v1/tasks/T1")
    if status != 200 or doc.get("task_id") != "T1":
        raise BenchError(f"sanity: GET /api/v1/tasks/T1 answered {status}: {str(doc)[:300]}")
    status, doc = http_json("POST", f"{off.http_url}/api/token", {"task_id": "T2"})
    if status != 200 or not str(doc.get("token", "")).startswith("ghs_"):
        raise BenchError(f"sanity: POST /api/token answered {status}")
    auth = {"Authorization": enf.metadata[0][1]}
    status, doc = http_json("GET", f"{enf.http_url}/api/v1/tasks/T1", headers=auth)
    if status != 200 or doc.get("task_id") != "T1":
        raise BenchError(f"sanity: GET /api/v1/tasks/T1 with the admin token (enforce) answered {status}")
    status, _ = http_json("GET", f"{enf.http_url}/api/v1/tasks/T1")
    if status != 401:
        raise BenchError(f"sanity: GET /api/v1/tasks/T1 without a token (enforce) answered {status}, not 401")
    return Sizes(get=5 + got.ByteSize(), token=5 + tok.ByteSize())


def build_plan(tmp: Path, off: Lobwife, enf: Lobwife, sizes: Sizes, rounds: int) -> list[Measurement]:
    # h2load sends one body file: each round takes the next task (T1, T2, ...: a different
    # repository set each), GetTask and IssueTaskToken of a round the same one.
    get_frames, token_frames = [], []
    for r in range(1, max(rounds, 1) + 1):
        ref = task_ref((r - 1) % TASKS + 1)
        get_frames.append(tmp / f"get-{ref}.grpc")
        get_frames[-1].write_bytes(bench_run.grpc_frame(tasks_pb2.GetTaskRequest(task_id=ref)))
        token_frames.append(tmp / f"token-{ref}.grpc")
        token_frames[-1].write_bytes(bench_run.grpc_frame(broker_pb2.IssueTaskTokenRequest(task_id=ref)))
    refs = [task_ref(i) for i in range(1, TASKS + 1)]
    get_lua = wrk_script(tmp / "get.lua", "GET", [(f"/api/v1/tasks/{ref}", None) for ref in refs])
    token_lua = wrk_script(tmp / "token.lua", "POST", [("/api/token", json.dumps({"task_id": ref})) for ref in refs])
    bearer = enf.metadata[0][1]
    every = f"{{T1..T{TASKS}}}"
    # A write to compare the token with: a token is a durable write too (its audit row commits
    # before it is returned), so CreateTask (a task row and its event) is the fair yardstick.
    create_frame = tmp / "create.grpc"
    create_frame.write_bytes(bench_run.grpc_frame(tasks_pb2.CreateTaskRequest(name="bench write")))
    create_lua = wrk_script(tmp / "create.lua", "POST", [("/api/v1/tasks", json.dumps({"name": "bench write"}))])

    def grpc_get(key: str, lw: Lobwife, label: str, **kw: Any) -> Measurement:
        url = f"http://127.0.0.1:{lw.grpc_port}/{TASK_SERVICE}/GetTask"
        return Measurement(key, label, "gRPC", lw, url, frames=get_frames, min_resp=sizes.get, **kw)

    def http_get(key: str, lw: Lobwife, label: str, **kw: Any) -> Measurement:
        return Measurement(key, label, "HTTP", lw, f"{lw.http_url}/api/v1/tasks/T1", lua=get_lua, **kw)

    return [
        grpc_get("grpc_get", off, "GetTask (auth off)"),
        Measurement(
            "grpc_token",
            "IssueTaskToken, cached (auth off)",
            "gRPC",
            off,
            f"http://127.0.0.1:{off.grpc_port}/{BROKER_SERVICE}/IssueTaskToken",
            frames=token_frames,
            min_resp=sizes.token,
            audited=True,
            baseline="grpc_get",
            target=0.80,
        ),
        http_get("http_get", off, f"GET /api/v1/tasks/{every} (off)"),
        Measurement(
            "http_token",
            f"POST /api/token {every} (off)",
            "HTTP",
            off,
            f"{off.http_url}/api/token",
            lua=token_lua,
            audited=True,
            baseline="http_get",
            target=0.80,
        ),
        grpc_get("grpc_get_off", off, "GetTask (auth off)"),
        grpc_get(
            "grpc_get_enforce",
            enf,
            "GetTask (enforce, admin JWT)",
            headers=[f"authorization: {bearer}"],
            baseline="grpc_get_off",
            target=0.85,
        ),
        http_get("http_get_off", off, f"GET /api/v1/tasks/{every} (off)"),
        http_get(
            "http_get_enforce",
            enf,
            f"GET /api/v1/tasks/{every} (enforce)",
            headers=[f"Authorization: {bearer}"],
            baseline="http_get_off",
        ),
        Measurement(
            "grpc_create",
            "CreateTask, a write (auth off)",
            "gRPC",
            off,
            f"http://127.0.0.1:{off.grpc_port}/{TASK_SERVICE}/CreateTask",
            frames=[create_frame],
            min_resp=8,
        ),
        Measurement(
            "grpc_token_w",
            "IssueTaskToken, cached (auth off)",
            "gRPC",
            off,
            f"http://127.0.0.1:{off.grpc_port}/{BROKER_SERVICE}/IssueTaskToken",
            frames=token_frames,
            min_resp=sizes.token,
            baseline="grpc_create",
        ),
        Measurement(
            "http_create",
            "POST /api/v1/tasks, a write (off)",
            "HTTP",
            off,
            f"{off.http_url}/api/v1/tasks",
            lua=create_lua,
        ),
        Measurement(
            "http_token_w",
            f"POST /api/token {every} (off)",
            "HTTP",
            off,
            f"{off.http_url}/api/token",
            lua=token_lua,
            baseline="http_create",
        ),
    ]


# --------------------------------------------------------------------------- report


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(v: float) -> str:
    return f"{v * 100:.0f}%"


def table(plan: list[Measurement]) -> list[str]:
    head = ["call", "transport", "req/s", "p50 ms", "p99 ms", "baseline req/s", "ratio", "target", "result"]
    head += ["errors", "gen CPU", "srv CPU", "other CPU (max)", "srv µs/req"]
    rows: list[list[str]] = []
    for m in plan:
        s = m.samples
        row = [m.label, m.transport, f"{med([x.rate for x in s]):,.0f}"]
        row += [f"{med([x.p50_ms for x in s]):.2f}", f"{med([x.p99_ms for x in s]):.2f}"]
        if m.baseline is None:
            row += ["(baseline)", "", "", ""]
        else:
            ratio = med(m.ratios)
            row += [f"{med([x.rate for x in m.paired]):,.0f}", f"{ratio:.2f}"]
            if m.target is None:
                row += ["(none)", ""]
            else:
                row += [f">= {m.target:.2f}", "PASS" if ratio >= m.target else "FAIL"]
        row += [
            str(sum(x.errors for x in s)),
            pct(med([x.gen_cpu for x in s])),
            pct(med([x.srv_cpu for x in s])),
            f"{pct(med([x.other_cpu for x in s]))} ({pct(max(x.other_cpu for x in s))})",
            f"{med([x.srv_us_per_req for x in s]):.0f}",
        ]
        rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {2, 3, 4, 5, 6, 9, 10, 11, 12, 13}

    def line(cells: list[str]) -> str:
        cols = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "| " + " | ".join(cols) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return [line(head), sep, *(line(r) for r in rows)]


def print_count(c: CountResult) -> None:
    fetched = c.calls["access_tokens"]
    verdict = "PASS" if fetched <= GITHUB_CALL_TARGET and c.errors == 0 else "FAIL"
    others = ", ".join(f"{e} {n}" for e, n in c.calls.items() if e != "access_tokens")
    print(
        f"GitHub calls: {c.requests:,} IssueTaskToken calls over {TASKS} tasks sharing {REPO_SETS} repository sets,"
        f" {CONCURRENCY} in flight (grpc.aio), cold cache: {fetched} access_tokens call(s)"
        f" (target <= {GITHUB_CALL_TARGET}: {verdict}); other endpoints: {others}"
    )
    distinct = " ".join(str(n) for n in c.tokens_per_set.values())
    print(
        f"  {c.seconds:.1f} s ({c.requests / c.seconds:,.0f} calls/s, one Python client), {c.errors} error(s)"
        f"{' (first: ' + c.first_error + ')' if c.first_error else ''}; distinct tokens per repository set: {distinct}"
    )


def report(plan: list[Measurement], rounds: int, duration: int, count: CountResult) -> None:
    print()
    print(f"Results: median of {rounds} round(s) x {duration} s, {CONCURRENCY} calls in flight")
    print("\n".join(table(plan)))
    print()
    print(
        "ratio = median over rounds of (req/s / req/s of the baseline paired with it in that round);"
        " gen / srv / other CPU: load generator / measured server / all other processes, CPU time over wall"
        " time (100% = one core); srv µs/req: the server's CPU time per completed request"
    )
    print_count(count)
    anomalies = [f"{m.label}: round {i + 1}: {n}" for m in plan for i, s in enumerate(m.samples) for n in s.notes]
    anomalies += [
        f"{m.label}: {sum(s.errors for s in m.samples)} errors" for m in plan if any(s.errors for s in m.samples)
    ]
    anomalies += [
        f"{m.label}: load generator at {pct(med([s.gen_cpu for s in m.samples]))} CPU (saturated?)"
        for m in plan
        if med([s.gen_cpu for s in m.samples]) > 0.9
    ]
    anomalies += [
        f"{m.label}: round {i + 1}: other processes used {pct(s.other_cpu)} CPU (noise)"
        for m in plan
        for i, s in enumerate(m.samples)
        if s.other_cpu > NOISY_OTHER_CPU
    ]
    for m in plan:
        rates = [s.rate for s in m.samples]
        if rates and min(rates) > 0 and max(rates) / min(rates) > 1.4:
            each = " / ".join(f"{x:,.0f}" for x in rates)
            anomalies.append(f"{m.label}: rate varied {max(rates) / min(rates):.1f}-fold across rounds ({each})")
    if anomalies:
        print("\nAnomalies:")
        print("\n".join(f"  - {a}" for a in dict.fromkeys(anomalies)))


# --------------------------------------------------------------------------- main


def run(
    rounds: int, duration: int, tokens: int, server_path: Path, tmp: Path, gh: FakeGitHub, servers: list[Lobwife]
) -> None:
    print("\n".join(bench_run.machine_info()), flush=True)
    print(f"server from {server_path}")
    off = start_lobwife("off", tmp, server_path, gh, ["--auth", "off"])
    servers.append(off)
    enf = start_lobwife("enforce", tmp, server_path, gh, ["--auth", "enforce"])
    servers.append(enf)
    enf.metadata = (("authorization", f"Bearer {admin_token(enf.state_dir)}"),)
    print(
        f"servers: auth off gRPC {off.grpc_addr} HTTP {off.http_url}; enforce gRPC {enf.grpc_addr} HTTP {enf.http_url}"
    )
    print(f"GitHub stand-in: {gh.url}")
    for lw in (off, enf):
        populate(lw)
    print(f"{TASKS} tasks created and registered over {REPO_SETS} repository sets on each server")

    # First, from a cold cache: this also warms it for the rate measurements.
    count = count_github_calls(off, gh, tokens)
    print_count(count)
    if count.errors:
        raise BenchError(f"{count.errors} of the {tokens} token requests failed (first: {count.first_error})")

    sizes = sanity(off, enf)
    print("sanity checks passed (each measured call answered correctly once; enforce refuses a call without a token)")
    plan = build_plan(tmp, off, enf, sizes, rounds)
    by_key = {m.key: m for m in plan}
    pairs = [(by_key[m.baseline], m) for m in plan if m.baseline is not None]
    estimate = len(plan) * (WARMUP_SECONDS + 0.6) + rounds * len(plan) * (duration + SETTLE_SECONDS + 0.6)
    print(
        f"measuring: {rounds} round(s) x {len(plan)} runs x {duration} s, {CONCURRENCY} in flight;"
        f" about {estimate / 60:.1f} min more",
        flush=True,
    )
    for m in plan:  # first calls are slower (caches, connection set-up): keep them out of round 1
        measure(m, WARMUP_SECONDS, 1, tmp, gh, warmup=True)

    for r in range(1, rounds + 1):
        for base, subject in pairs:
            # Noise comes in bursts and a server may drift during a run: swapping the order every
            # other round keeps either side from always getting the first or the second slot.
            order = (base, subject) if r % 2 == 1 else (subject, base)
            got: dict[str, Sample] = {}
            for m in order:
                s = measure(m, duration, r, tmp, gh)
                got[m.key] = s
                m.samples.append(s)
            subject.paired.append(got[base.key])
            subject.ratios.append(got[subject.key].rate / got[base.key].rate if got[base.key].rate else float("nan"))
            for m in order:
                s = got[m.key]
                ratio = f"  ratio {subject.ratios[-1]:.2f}" if m is subject else ""
                noisy = "  NOISY" if s.other_cpu > NOISY_OTHER_CPU else ""
                asked = f"  ({s.tasks_asked} task(s) asked)" if s.tasks_asked is not None else ""
                notes = "".join(f"  [{n}]" for n in s.notes) + (f"  errors={s.errors}" if s.errors else "")
                print(
                    f"  round {r}/{rounds}  {m.transport:4} {m.label:38} {s.rate:>8,.0f} req/s  "
                    f"p50 {s.p50_ms:6.2f} ms  p99 {s.p99_ms:6.2f} ms  gen {pct(s.gen_cpu):>4}  "
                    f"srv {pct(s.srv_cpu):>4}  other {pct(s.other_cpu):>4}  {s.srv_us_per_req:5.0f} µs/req"
                    f"{ratio}{asked}{noisy}{notes}",
                    flush=True,
                )

    fetched = gh.calls_of("access_tokens") - count.calls["access_tokens"]
    report(plan, rounds, duration, count)
    print(f"GitHub token calls after the count (sanity checks and every rate measurement): {fetched}")
    print("\nCommands:")
    for lw in servers:
        print(f"  {lw.srv.name}: {shlex.join(lw.srv.cmd)}")
    for m in plan:
        shown = [re.sub(r"Bearer \S+", "Bearer <admin JWT>", c) for c in m.cmd]
        print(f"  {m.label}: {shlex.join(shown)}")
    print(
        f"  (servers run with PYTHONPATH={ROOT / 'clients' / 'python'}:{server_path} and the stand-in's GH_APP_*"
        f" and LOBWIFE_GITHUB_API_URL; temp files under {tmp}, removed on exit)"
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--rounds", type=int, help="rounds of interleaved pairs; medians are reported (default 3)")
    p.add_argument("--duration", type=int, help="seconds per measurement (default 5)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round of 3 s (unless set explicitly)")
    p.add_argument("--tokens", type=int, default=TOKEN_REQUESTS, help="token requests for the GitHub-call count")
    p.add_argument("--server-path", default=str(ROOT / "server"), help="the folder holding lobwife_server")
    args = p.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    duration = args.duration if args.duration is not None else (3 if args.quick else 5)
    if rounds < 1 or duration < 1 or args.tokens < TASKS:
        p.error(f"--rounds and --duration must be at least 1, --tokens at least {TASKS}")
    server_path = Path(args.server_path).resolve()
    if not (server_path / "lobwife_server").is_dir():
        p.error(f"--server-path: no lobwife_server folder in {server_path}")
    missing = [t for t in ("h2load", "wrk") if shutil.which(t) is None]
    if missing:
        pkgs = " ".join(bench_run.APT_PACKAGES[t] for t in missing)
        print(f"missing: {', '.join(missing)}. Install with:\n    sudo apt-get install -y {pkgs}", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _raise_interrupt)  # stop the servers on SIGTERM as on Ctrl-C
    servers: list[Lobwife] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="lobwife-broker-bench-") as tmp,
            FakeGitHub(key=AppKey.generate()) as gh,
        ):
            try:
                run(rounds, duration, args.tokens, server_path, Path(tmp), gh, servers)
            finally:
                for lw in reversed(servers):
                    lw.srv.stop()
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    except (BenchError, subprocess.TimeoutExpired, grpc.RpcError, OSError, RuntimeError) as e:
        print(f"\nbench failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
