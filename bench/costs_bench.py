"""lobwife benchmark for issue 11's costs: RecordCost beside CreateTask, and summaries over 1,000,000 events.

    python bench/costs_bench.py            # 4 rounds x 2 runs x 5 s, then 1,000,000 events (~3 minutes)
    python bench/costs_bench.py --quick    # 2 rounds x 3 s, 200,000 events (~1 minute)

1. **Rates**: a real lobwife server (``--jobs ''``, free 127.0.0.1 ports) and h2load at 64 calls
   in flight (8 connections x 8 streams): CreateTask (a task row and its event) and RecordCost
   (a cost event for T1, priced by the table, and its hourly rollup row; with a default budget
   for T1's type and a fleet daily budget, neither reached, so each record checks both) in
   interleaved pairs,
   the order swapped every other round. Target: RecordCost >= 0.9x CreateTask's rate. Server CPU
   per request is printed beside the rates (the machine is shared: compare those when rates swing).
2. **Summaries at scale**: the server is stopped, N events (default 1,000,000) are written into its
   database with the server's own store code (``storage.cost_store.insert_cost``, which keeps the
   rollup in the same transaction, as RecordCost does), spread over 90 days, 8 models, 500 tasks
   and 5 task types; the server is started again and SummarizeCosts is called one at a time, 200
   times per shape: by day over everything, by day over 30 days with edges off the hour, by model
   and by task over 7 days. Target: p99 <= 50 ms for the by-day summary. GetTask, called the same
   way, is printed beside it as the floor of a call.

A measurement, not a test: exit 0 whatever the figures; non-zero only when the harness cannot run.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]
import run as bench_run  # noqa: E402  (bench/run.py: processes, CPU, h2load)

ROOT = bench_run.ROOT
sys.path[:0] = [str(ROOT / "clients" / "python"), str(ROOT / "server")]

import grpc  # noqa: E402
from google.protobuf import timestamp_pb2  # noqa: E402

from lobwife.v1 import costs_pb2, costs_pb2_grpc, tasks_pb2, tasks_pb2_grpc  # noqa: E402
from lobwife_server.costs.prices import PriceTable  # noqa: E402
from lobwife_server.storage import cost_store  # noqa: E402

RATE_TARGET = 0.9
SUMMARY_P99_TARGET_MS = 50.0
SUMMARY_CALLS = 200
MODELS = [
    "claude-opus-4-5-20251101",
    "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5-20251001",
    "claude-sonnet-4-20250514",
    "claude-opus-4-1-20250805",
    "claude-3-5-haiku-20241022",
    "claude-3-7-sonnet-20250219",
    "gpt-unpriced-model",
]
TYPES = ["swe", "qa", "research", "review", "ops"]
TASKS = 500
DAYS = 90


@dataclass
class Server:
    srv: bench_run.ServerProc
    grpc_port: int
    http_port: int
    state: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def start(state: Path, log: Path, timeout: float = 60.0) -> Server:
    gport, hport = bench_run.free_port(), bench_run.free_port()
    cmd = [
        sys.executable, "-m", "lobwife_server", "--state-dir", str(state), "--grpc-port", str(gport),
        "--http-port", str(hport), "--log-level", "warning", "--jobs", "",
        # Budgets on, never reached: every record checks its task's budget and the fleet's day.
        "--task-budget", "swe=1000000", "--fleet-daily-budget", "1000000",
    ]  # fmt: skip
    srv = bench_run.spawn("lobwife", cmd, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and srv.proc.poll() is None:
        if bench_run.grpc_serving(f"127.0.0.1:{gport}"):
            return Server(srv, gport, hport, state)
        time.sleep(0.05)
    srv.stop()
    raise bench_run.BenchError(f"lobwife did not start:\n{srv.log_tail()}")


def h2load(s: Server, method: str, frame: Path, duration: int, log: Path) -> tuple[float, float, int, int]:
    """(req/s, server CPU µs per request, succeeded, errors) of one h2load run."""
    cmd = bench_run.h2load_cmd(f"http://{s.addr}/{method}", frame, duration, log)
    c0 = s.srv.cpu_seconds()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    cpu = s.srv.cpu_seconds() - c0
    m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    if m is None:
        raise bench_run.BenchError(f"unexpected h2load output:\n{out}")
    ok = bench_run._int(r"(\d+) succeeded", out)
    errors = sum(bench_run._int(rf"(\d+) {w}", out) for w in ("failed", "errored", "timeout"))
    return float(m.group(1)), cpu / max(ok, 1) * 1e6, ok, errors


def ts(at: datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(at)
    return t


def rates(s: Server, tmp: Path, rounds: int, duration: int) -> list[tuple[float, float, float, float]]:
    create = tmp / "create.grpc"
    create.write_bytes(bench_run.grpc_frame(tasks_pb2.CreateTaskRequest(name="bench write", type="swe")))
    record = tmp / "record.grpc"
    req = costs_pb2.RecordCostRequest(
        task_id="T1", model="claude-sonnet-4-5-20250929", provider="anthropic",
        input_tokens=1200, output_tokens=350, cache_read_tokens=40_000,
    )  # fmt: skip
    record.write_bytes(bench_run.grpc_frame(req))
    log = tmp / "h2load.log"
    create_m, record_m = "lobwife.v1.TaskService/CreateTask", "lobwife.v1.CostService/RecordCost"
    h2load(s, create_m, create, 1, log)  # warm-up
    h2load(s, record_m, record, 1, log)
    out = []
    for r in range(rounds):
        pair = [(create_m, create), (record_m, record)]
        if r % 2:
            pair.reverse()
        got = {}
        for method, frame in pair:
            rate, us, _, errors = h2load(s, method, frame, duration, log)
            if errors:
                raise bench_run.BenchError(f"{method}: {errors} errors")
            got[method] = (rate, us)
            name = method.split("/")[1]
            print(f"  round {r + 1}/{rounds}  {name:<12} {rate:8,.0f} req/s  {us:6.0f} µs/req server CPU")
            time.sleep(bench_run.SETTLE_SECONDS)
        out.append((*got[create_m], *got[record_m]))
    return out


def populate(state: Path, n: int, start: datetime) -> float:
    """n events written with the server's store code, in transactions of 10,000; seconds taken."""
    prices = PriceTable.load()
    rnd = random.Random(11)
    conn = sqlite3.connect(state / "lobwife.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    t0 = time.monotonic()
    with conn:
        conn.execute("BEGIN")
        for i in range(1, TASKS + 1):
            conn.execute(
                "INSERT OR IGNORE INTO tasks (id, name, status, type, created_at, updated_at)"
                " VALUES (?, ?, 'active', ?, 0, 0)",
                (i + 1000, f"bench {i}", TYPES[i % len(TYPES)]),
            )
        conn.execute("COMMIT")
    span = DAYS * 86400 * 1_000_000
    base = int(start.timestamp() * 1_000_000)
    done = 0
    while done < n:
        conn.execute("BEGIN")
        for _ in range(min(10_000, n - done)):
            model = rnd.choice(MODELS)
            at = base + rnd.randrange(span)
            counts = (
                rnd.randrange(100, 5000),
                rnd.randrange(10, 2000),
                rnd.randrange(0, 50_000),
                rnd.randrange(0, 5000),
            )
            price = prices.find(model, at)
            number = 1000 + rnd.randrange(1, TASKS + 1)
            new = cost_store.NewCost(
                request_id=None, request_fp=None, task_number=number, provider="anthropic", model=model,
                input_tokens=counts[0], output_tokens=counts[1], cache_read_tokens=counts[2],
                cache_write_tokens=counts[3], reasoning_tokens=0, caller_cost_usd=None,
                computed_cost_usd=None if price is None else price.cost(*counts),
                price_id=price.id if price is not None else "", cost_note="" if price else "no price",
                occurred_at=at,
            )  # fmt: skip
            cost_store.insert_cost(conn, new, at)
        conn.execute("COMMIT")
        done += min(10_000, n - done)
    conn.close()
    return time.monotonic() - t0


def latencies(call: object, times: int) -> tuple[float, float]:
    samples = []
    for _ in range(times):
        t0 = time.perf_counter()
        call()  # type: ignore[operator]
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return bench_run.percentile(samples, 50), bench_run.percentile(samples, 99)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # Even, so that each of the pair goes first as often: the second of a pair ran slower here.
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--quick", action="store_true", help="1 round x 3 s, 200,000 events")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.events = 2, 3, 200_000
    if shutil.which("h2load") is None:
        print("missing: h2load. Install with:\n    sudo apt-get install -y nghttp2-client", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="lobwife-costs-bench-"))
    state = tmp / "state"
    s = start(state, tmp / "server-1.log")
    try:
        with grpc.insecure_channel(s.addr) as ch:
            first = tasks_pb2.CreateTaskRequest(name="T1", type="swe")
            tasks_pb2_grpc.TaskServiceStub(ch).CreateTask(first, timeout=10)
        print(f"rates: {args.rounds} round(s) x 2 runs x {args.duration} s, 64 in flight")
        pairs = rates(s, tmp, args.rounds, args.duration)
    finally:
        s.srv.stop()
    ratios = [rec / cre for cre, _, rec, _ in pairs]
    cpu = [rec_us / cre_us for _, cre_us, _, rec_us in pairs]
    ratio = statistics.median(ratios)
    verdict = "PASS" if ratio >= RATE_TARGET else "FAIL"
    print(
        f"RecordCost / CreateTask rate: {ratio:.3f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)};"
        f" target >= {RATE_TARGET}: {verdict}); server CPU per request, RecordCost / CreateTask:"
        f" {statistics.median(cpu):.2f}"
    )
    start_at = datetime(2026, 1, 1, tzinfo=UTC)
    print(f"writing {args.events:,} cost events over {DAYS} days with storage.cost_store ...")
    conn = sqlite3.connect(state / "lobwife.db")
    recorded = int(conn.execute("SELECT COUNT(*) FROM cost_events").fetchone()[0])  # by the rate runs
    conn.close()
    took = populate(state, args.events, start_at)
    print(f"  {took:.1f} s ({args.events / took:,.0f} events/s, the rollup kept in each transaction)")
    s = start(state, tmp / "server-2.log")
    try:
        with grpc.insecure_channel(s.addr) as ch:
            costs = costs_pb2_grpc.CostServiceStub(ch)
            tasks = tasks_pb2_grpc.TaskServiceStub(ch)
            day, model, task = costs_pb2.COST_GROUP_BY_DAY, costs_pb2.COST_GROUP_BY_MODEL, costs_pb2.COST_GROUP_BY_TASK
            edge_start = start_at + timedelta(days=30, minutes=17, seconds=3)
            edge_end = edge_start + timedelta(days=30, minutes=29)
            week_start = start_at + timedelta(days=60)
            shapes = {
                "by day, everything": costs_pb2.SummarizeCostsRequest(group_by=day),
                "by day, 30 days, edges off the hour": costs_pb2.SummarizeCostsRequest(
                    group_by=day, start_time=ts(edge_start), end_time=ts(edge_end)
                ),
                "by model, 7 days": costs_pb2.SummarizeCostsRequest(
                    group_by=model, start_time=ts(week_start), end_time=ts(week_start + timedelta(days=7))
                ),
                "by task, 7 days": costs_pb2.SummarizeCostsRequest(
                    group_by=task, start_time=ts(week_start), end_time=ts(week_start + timedelta(days=7))
                ),
            }
            total = costs.SummarizeCosts(shapes["by day, everything"], timeout=60).total
            if total.calls != args.events + recorded:
                raise bench_run.BenchError(
                    f"the summary counts {total.calls} calls, {args.events + recorded} were written"
                )
            print(f"summaries over {args.events:,} events, {SUMMARY_CALLS} calls each, one at a time:")
            get = tasks_pb2.GetTaskRequest(task_id="T1")
            p50, p99 = latencies(lambda: tasks.GetTask(get, timeout=10), SUMMARY_CALLS)
            print(f"  {'GetTask (the floor of a call)':<40} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")
            worst = 0.0
            for label, req in shapes.items():
                p50, p99 = latencies(lambda r=req: costs.SummarizeCosts(r, timeout=60), SUMMARY_CALLS)
                if label.startswith("by day"):
                    worst = max(worst, p99)
                print(f"  SummarizeCosts {label:<25} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")
            verdict = "PASS" if worst <= SUMMARY_P99_TARGET_MS else "FAIL"
            print(f"by-day summary p99: {worst:.2f} ms (target <= {SUMMARY_P99_TARGET_MS:g} ms: {verdict})")
    finally:
        s.srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {os.cpu_count()} CPU(s); the load generator and the server share them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
