"""lobwife scheduler benchmark: start lateness and idle cost, beside a bare APScheduler.

    python bench/scheduler_bench.py             # 30 s per measurement, about 5 minutes
    python bench/scheduler_bench.py --quick     # 10 s per measurement: smoke run

Measures, in one run, on this machine:

1. Start lateness of one job firing every second (6-field cron ``* * * * * *``):
   scheduled time -> the job's process running, p50/p99.
2. The same for 100 jobs due at the same instant (``*/5 * * * * *``, several instants).
3. With 10,000 jobs scheduled (daily, none due during the run) and idle: the
   server's CPU (% of one core) and RSS, and its start-up time to SERVING.

Each is measured on the real server (``python -m lobwife_server`` over a fresh
state folder, jobs from a generated TOML jobs file) and on a bare APScheduler 3
AsyncIOScheduler on uvloop (bench/scheduler_baseline.py) running no-op
coroutines; the lateness scenarios also on that bare scheduler starting the same
command lobwife's jobs run, the floor for a scheduler that starts processes.

"Process running" is stamped by the job itself: its command is bash, which
appends ``$EPOCHREALTIME`` (read without a fork) and ``$LOBWIFE_SCHEDULED_AT``
to a file; lateness = stamp - scheduled time. That includes fork, exec and
bash's own start-up, which is not lobwife's doing; the spawn baseline measures
it (spawn call -> stamp) and the report shows it separately.

It is a measurement, not a test: the exit status is 0 whatever the figures
(non-zero only when the harness itself cannot run). See bench/SCHEDULER.md.
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
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lobwife.v1 import jobs_pb2, jobs_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SERVER_PYTHONPATH = os.pathsep.join([str(ROOT / "clients" / "python"), str(ROOT / "server")])
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

#: What every lateness job runs. bash reads $EPOCHREALTIME without forking (dash would need
#: `date`, one more exec). $SPAWN_AT is set only by the spawn baseline: the time just before
#: it asked the loop to spawn, so stamp - SPAWN_AT is the fork + exec + shell start-up cost.
STAMP_SCRIPT = 'echo "$EPOCHREALTIME $LOBWIFE_SCHEDULED_AT $LOBWIFE_JOB $SPAWN_AT" >> "$OUT"'
STAMP_CMD = ["bash", "-c", STAMP_SCRIPT]

ONE_CRON = "* * * * * *"
BURST_JOBS = 100
BURST_PERIOD = 5  # seconds between the instants the 100 jobs are due
BURST_CRON = f"*/{BURST_PERIOD} * * * * *"
IDLE_JOBS = 10_000
#: Runs are not measured until this long after the server is ready (first spawns, caches).
WARMUP_SECONDS = 2.0
#: Wait after the last measured slot for its runs to finish and be recorded.
SETTLE_SECONDS = 1.5

TARGETS = {
    "one_p99": 10.0,  # ms
    "burst_p99": 100.0,  # ms
    "idle_cpu": 0.03,  # of one core
    "idle_rss": 150.0,  # MB (10^6 bytes)
}


class BenchError(Exception):
    """The harness cannot produce a meaningful measurement (setup or sanity check failed)."""


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SERVER_PYTHONPATH + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0]), or None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()  # the command name may hold spaces; skip past it


@dataclass
class Proc:
    name: str
    cmd: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def cpu_seconds(self, children: bool = True) -> float:
        """user + system CPU of the process (all threads) so far; with the children it has reaped (its jobs)."""
        f = proc_stat(self.pid)
        if f is None:
            return 0.0
        ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if children else 0)
        return ticks / CLK_TCK

    def rss_mb(self) -> float:
        """Resident set size (VmRSS) in MB (10^6 bytes)."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
        return float("nan")

    def threads(self) -> int:
        f = proc_stat(self.pid)
        return int(f[17]) if f is not None else 0

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn(name: str, cmd: list[str], log_path: Path) -> Proc:
    with open(log_path, "wb") as logf:
        # Own session: a Ctrl-C in the terminal reaches only this script, which then
        # stops the servers in order (SIGTERM, wait, SIGKILL) from its finally block.
        proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, env=server_env(), cwd=ROOT, start_new_session=True
        )
    return Proc(name, cmd, proc, log_path)


def grpc_serving(addr: str) -> bool:
    with grpc.insecure_channel(addr) as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
        except grpc.RpcError:
            return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass
class Started:
    proc: Proc
    grpc_port: int  # 0 for the baseline
    startup_seconds: float  # spawn -> SERVING (lobwife) or jobs scheduled (baseline)


def start_lobwife(tmp: Path, tag: str, jobs_file: Path, procs: list[Proc], timeout: float = 180.0) -> Started:
    state_dir = tmp / f"state-{tag}"
    for attempt in range(3):  # a probed free port can be taken before the server binds it; try again
        gport, hport = free_port(), free_port()
        cmd = [sys.executable, "-m", "lobwife_server", "--state-dir", str(state_dir)]
        cmd += ["--grpc-port", str(gport), "--http-port", str(hport), "--jobs", str(jobs_file)]
        cmd += ["--log-level", "warning"]
        t0 = time.monotonic()
        srv = spawn(f"lobwife ({tag})", cmd, tmp / f"lobwife-{tag}-{attempt}.log")
        procs.append(srv)
        deadline = t0 + timeout
        while time.monotonic() < deadline and srv.proc.poll() is None:
            if grpc_serving(f"127.0.0.1:{gport}"):
                startup = time.monotonic() - t0
                # A jobs file lobwife refuses is logged, not fatal: the server would run without our jobs.
                refused = [line for line in srv.log_lines() if "jobs file not used" in line]
                if refused:
                    raise BenchError(f"lobwife did not use the generated jobs file: {refused[0]}")
                return Started(srv, gport, startup)
            time.sleep(0.02)
        srv.stop()
        if "in use" not in srv.log_tail().lower():
            raise BenchError(f"lobwife did not report SERVING within {timeout:.0f}s:\n{srv.log_tail()}")
    raise BenchError("lobwife: could not bind free ports in 3 attempts")


def start_baseline(tmp: Path, tag: str, args: list[str], procs: list[Proc], timeout: float = 120.0) -> Started:
    ready = tmp / f"baseline-{tag}.ready"
    mode, rest = args[0], args[1:]
    cmd = [sys.executable, str(BENCH / "scheduler_baseline.py"), mode, "--ready-file", str(ready), *rest]
    t0 = time.monotonic()
    srv = spawn(f"APScheduler ({tag})", cmd, tmp / f"baseline-{tag}.log")
    procs.append(srv)
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise BenchError(f"{srv.name} exited with {srv.proc.returncode}:\n{srv.log_tail()}")
        with contextlib.suppress(OSError, ValueError):
            if int(ready.read_text()) >= 0:
                return Started(srv, 0, time.monotonic() - t0)
        time.sleep(0.02)
    raise BenchError(f"{srv.name} did not get ready within {timeout:.0f}s:\n{srv.log_tail()}")


# --------------------------------------------------------------------------- machine noise


def machine_busy_cpu() -> float:
    """CPU seconds all processors spent running processes (or stolen) since boot, from /proc/stat."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0
    # user + nice + system + irq + softirq, plus steal (CPU the hypervisor gave to other guests).
    # Guest columns are already counted in user.
    user, nice, system, _idle, _iowait, irq, softirq = ticks[0:7]
    steal = ticks[7] if len(ticks) > 7 else 0
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def process_cpu_table() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds so far) for every process on the machine."""
    out: dict[int, tuple[str, float]] = {}
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            comm = stat[stat.find("(") + 1 : stat.rfind(")")]
            f = stat.rsplit(")", 1)[1].split()
            out[int(name)] = (comm, (int(f[11]) + int(f[12])) / CLK_TCK)
    return out


@dataclass
class Noise:
    """What else used the machine while one measurement ran."""

    wall: float
    server_cpu: float  # cores
    other_cpu: float  # cores: the machine minus the server (and its jobs) and this script
    load: tuple[float, float, float]
    top_others: list[str]  # "comm[pid] 12%" for the busiest other processes


class NoiseMeter:
    def __init__(self, server: Proc) -> None:
        self.server = server
        self.t0 = time.monotonic()
        self.m0, self.s0, self.b0 = machine_busy_cpu(), server.cpu_seconds(), self_cpu()
        self.table0 = process_cpu_table()

    def stop(self) -> Noise:
        wall = max(1e-6, time.monotonic() - self.t0)
        srv = (self.server.cpu_seconds() - self.s0) / wall
        mine = (self_cpu() - self.b0) / wall
        other = max(0.0, (machine_busy_cpu() - self.m0) / wall - srv - mine)
        table1 = process_cpu_table()
        skip = {os.getpid(), self.server.pid}
        deltas = []
        for pid, (comm, cpu1) in table1.items():
            if pid in skip or pid not in self.table0 or self.table0[pid][0] != comm:
                continue
            d = (cpu1 - self.table0[pid][1]) / wall
            if d >= 0.02:
                deltas.append((d, f"{comm}[{pid}] {d * 100:.0f}%"))
        top = [text for _, text in sorted(deltas, reverse=True)[:3]]
        load = os.getloadavg()
        return Noise(wall, srv, other, (load[0], load[1], load[2]), top)


# --------------------------------------------------------------------------- jobs files


def toml_str(s: str) -> str:
    # A JSON string of printable ASCII is a valid TOML basic string.
    return json.dumps(s, ensure_ascii=True)


def write_lateness_jobs(path: Path, names: Sequence[str], cron: str, out: Path) -> None:
    lines = []
    for name in names:
        lines += [
            f"[jobs.{name}]",
            f"command = [{', '.join(toml_str(a) for a in STAMP_CMD)}]",
            f"schedule = {toml_str(cron)}",
            'catch_up = "skip"',
            f"env = {{ OUT = {toml_str(str(out))} }}",
            "",
        ]
    path.write_text("\n".join(lines))


def idle_skip_hours() -> list[int]:
    """UTC hours no idle job is scheduled in: this one and the next, so none comes due during the run."""
    h = datetime.datetime.now(datetime.UTC).hour
    return [h, (h + 1) % 24]


def idle_cron(i: int, hours: Sequence[int]) -> str:
    """Daily jobs spread over the day (minute i % 60), outside the skipped hours; same as the baseline's."""
    return f"{i % 60} {hours[(i // 60) % len(hours)]} * * *"


def write_idle_jobs(path: Path, n: int, skip: Sequence[int]) -> None:
    hours = [h for h in range(24) if h not in skip]
    lines = []
    for i in range(n):
        lines += [f"[jobs.idle{i:05d}]", 'command = ["true"]', f"schedule = {toml_str(idle_cron(i, hours))}", ""]
    path.write_text("\n".join(lines))


# --------------------------------------------------------------------------- stamps


def parse_rfc3339_us(text: str) -> int:
    dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(dt.replace(microsecond=0).timestamp()) * 1_000_000 + dt.microsecond


def parse_epoch_us(text: str) -> int:
    # $EPOCHREALTIME uses the locale's decimal point.
    whole, _, frac = text.replace(",", ".").partition(".")
    return int(whole) * 1_000_000 + int((frac + "000000")[:6])


@dataclass
class Stamp:
    job: str
    slot_us: int
    lateness_ms: float
    exec_ms: float | None  # stamp - SPAWN_AT (spawn baseline only)


def read_stamps(path: Path) -> list[Stamp]:
    out: list[Stamp] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        stamp, slot = parse_epoch_us(parts[0]), parse_rfc3339_us(parts[1])
        exec_ms = (stamp - parse_epoch_us(parts[3])) / 1000 if len(parts) > 3 else None
        out.append(Stamp(parts[2], slot, (stamp - slot) / 1000, exec_ms))
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    s = sorted(values)
    rank = max(1, min(len(s), math.ceil(q / 100.0 * len(s))))
    return s[rank - 1]


# --------------------------------------------------------------------------- lateness


@dataclass
class Lateness:
    label: str
    lateness_ms: list[float]
    expected: int  # runs due in the window
    noise: Noise
    exec_ms: list[float] = field(default_factory=list)  # spawn baseline: spawn call -> stamp
    recorded_ms: list[float] = field(default_factory=list)  # lobwife: its own started_at - scheduled_at
    rss_mb: float = float("nan")
    notes: list[str] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return self.expected - len(self.lateness_ms)

    def p(self, q: float) -> float:
        return percentile(self.lateness_ms, q)


def sleep_until(wall: float) -> None:
    while (left := wall - time.time()) > 0:
        time.sleep(min(left, 0.5))


def measure_window(
    label: str,
    srv: Proc,
    out: Path,
    names: Sequence[str],
    period: int,
    duration: int,
    collect: Callable[[int, int], tuple[list[str], list[float]]] | None = None,
) -> Lateness:
    """Wait out the warm-up, then measure the slots in [begin, end) of the jobs in ``names``."""
    begin = math.ceil((time.time() + WARMUP_SECONDS) / period) * period
    slots = max(1, duration // period)
    end = begin + slots * period
    sleep_until(begin - 0.3)  # the meter covers every measured slot from just before the first
    meter = NoiseMeter(srv)
    sleep_until(end - 0.3)
    noise = meter.stop()
    sleep_until(end + SETTLE_SECONDS)
    rss = srv.rss_mb()
    notes, recorded = collect(begin * 1_000_000, end * 1_000_000) if collect is not None else ([], [])
    if srv.proc.poll() is not None:
        raise BenchError(f"{srv.name} exited with {srv.proc.returncode} during the measurement:\n{srv.log_tail()}")
    srv.stop()  # the no-op baseline writes its stamps when it stops
    wanted = set(names)
    stamps = [s for s in read_stamps(out) if s.job in wanted and begin * 1_000_000 <= s.slot_us < end * 1_000_000]
    result = Lateness(label, [s.lateness_ms for s in stamps], len(names) * slots, noise, rss_mb=rss, notes=notes)
    result.recorded_ms = recorded
    result.exec_ms = [s.exec_ms for s in stamps if s.exec_ms is not None]
    seen = {(s.job, s.slot_us) for s in stamps}
    if len(seen) != len(stamps):
        result.notes.append(f"{len(stamps) - len(seen)} slot(s) stamped more than once")
    if result.missing:
        result.notes.append(f"{result.missing} of {result.expected} runs due in the window left no stamp")
    return result


def lobwife_runs(addr: str, names: Sequence[str], begin_us: int, end_us: int) -> tuple[list[str], list[float]]:
    """lobwife's own records of the window's runs: notes on statuses, and its started_at - scheduled_at (ms)."""
    statuses: dict[str, int] = {}
    recorded: list[float] = []
    reasons: dict[str, int] = {}
    with grpc.insecure_channel(addr) as ch:
        stub = jobs_pb2_grpc.JobServiceStub(ch)
        for name in names:
            resp = stub.ListJobRuns(jobs_pb2.ListJobRunsRequest(name=name, page_size=500), timeout=30)
            for run in resp.runs:
                slot = run.scheduled_at.seconds * 1_000_000 + run.scheduled_at.nanos // 1000
                if not begin_us <= slot < end_us:
                    continue
                status = jobs_pb2.RunStatus.Name(run.status).removeprefix("RUN_STATUS_").lower()
                statuses[status] = statuses.get(status, 0) + 1
                if status != "success":
                    reasons[run.reason] = reasons.get(run.reason, 0) + 1
                if run.HasField("started_at"):
                    started = run.started_at.seconds * 1_000_000 + run.started_at.nanos // 1000
                    recorded.append((started - slot) / 1000)
    notes = []
    if set(statuses) - {"success"}:
        each = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        notes.append(f"lobwife recorded {each}; reasons: {'; '.join(f'{r!r} x{n}' for r, n in reasons.items())}")
    return notes, recorded


def lateness_lobwife(
    tmp: Path, tag: str, names: Sequence[str], cron: str, period: int, duration: int, procs: list[Proc]
) -> Lateness:
    out = tmp / f"stamps-lobwife-{tag}.txt"
    jobs = tmp / f"jobs-{tag}.toml"
    write_lateness_jobs(jobs, names, cron, out)
    started = start_lobwife(tmp, tag, jobs, procs)
    addr = f"127.0.0.1:{started.grpc_port}"

    def collect(begin_us: int, end_us: int) -> tuple[list[str], list[float]]:
        return lobwife_runs(addr, names, begin_us, end_us)

    result = measure_window("lobwife", started.proc, out, names, period, duration, collect)
    warnings = [
        line for line in started.proc.log_lines() if re.search(r"\"level\": \"(warning|error|critical)\"", line)
    ]
    if warnings:
        result.notes.append(f"server logged {len(warnings)} warning/error line(s), e.g. {warnings[0][:200]}")
    return result


#: Baseline variants of the lateness scenarios: label, extra arguments to scheduler_baseline.py.
BASELINES = {
    "noop": ("APScheduler no-op", []),
    "spawn": ("APScheduler + spawn", ["--spawn", "--", *STAMP_CMD]),
    "spawn-loop": ("APScheduler + loop spawn", ["--spawn", "--spawn-via", "loop", "--", *STAMP_CMD]),
}


def lateness_baseline(
    tmp: Path, tag: str, names: Sequence[str], second: str, period: int, duration: int, kind: str, procs: list[Proc]
) -> Lateness:
    label, extra = BASELINES[kind]
    out = tmp / f"stamps-{kind}-{tag}.txt"
    args = ["lateness", "--jobs", str(len(names)), "--second", second, "--out", str(out), *extra]
    started = start_baseline(tmp, f"{kind}-{tag}", args, procs)
    return measure_window(label, started.proc, out, names, period, duration)


# --------------------------------------------------------------------------- idle


@dataclass
class Idle:
    label: str
    jobs: int
    startup_seconds: float
    cpu: float  # cores, mean over the window
    cpu_max_second: float  # cores, the busiest 1-s sample
    rss_mb: float  # at the end of the window
    rss_max_mb: float
    threads: int
    noise: Noise
    notes: list[str] = field(default_factory=list)


def sample_idle(label: str, started: Started, jobs: int, settle: float, duration: int) -> Idle:
    srv = started.proc
    time.sleep(settle)
    meter = NoiseMeter(srv)
    c0, t0 = srv.cpu_seconds(children=False), time.monotonic()
    per_second: list[float] = []
    rss: list[float] = []
    prev_c, prev_t = c0, t0
    for i in range(1, duration + 1):
        time.sleep(max(0.0, t0 + i - time.monotonic()))
        c, t = srv.cpu_seconds(children=False), time.monotonic()
        per_second.append((c - prev_c) / (t - prev_t))
        rss.append(srv.rss_mb())
        prev_c, prev_t = c, t
    cpu = (prev_c - c0) / (prev_t - t0)
    noise = meter.stop()
    if srv.proc.poll() is not None:
        raise BenchError(f"{srv.name} exited with {srv.proc.returncode} during the measurement:\n{srv.log_tail()}")
    return Idle(label, jobs, started.startup_seconds, cpu, max(per_second), rss[-1], max(rss), srv.threads(), noise)


def idle_lobwife(tmp: Path, settle: float, duration: int, procs: list[Proc]) -> Idle:
    jobs = tmp / "jobs-idle.toml"
    skip = idle_skip_hours()
    write_idle_jobs(jobs, IDLE_JOBS, skip)
    started = start_lobwife(tmp, "idle", jobs, procs)
    result = sample_idle("lobwife", started, IDLE_JOBS, settle, duration)
    # Sanity, after the window (a 10,000-job status call is not idle): every job loaded, none ran.
    with grpc.insecure_channel(f"127.0.0.1:{started.grpc_port}") as ch:
        status = jobs_pb2_grpc.JobServiceStub(ch).GetStatus(jobs_pb2.GetStatusRequest(), timeout=60)
    idle_jobs = {n: j for n, j in status.jobs.items() if n.startswith("idle")}
    if len(idle_jobs) != IDLE_JOBS:
        raise BenchError(f"the jobs file holds {IDLE_JOBS} jobs but lobwife reports {len(idle_jobs)}")
    ran = sum(j.run_count for j in idle_jobs.values())
    if ran:
        result.notes.append(f"{ran} run(s) of the idle jobs happened during the idle measurement")
    unarmed = sum(1 for j in idle_jobs.values() if not j.HasField("next_run"))
    if unarmed:
        result.notes.append(f"{unarmed} idle job(s) have no next run time")
    builtin_runs = {n: j.run_count for n, j in status.jobs.items() if n.startswith("lobwife-") and j.run_count}
    if builtin_runs:
        result.notes.append(f"built-in maintenance jobs ran meanwhile: {builtin_runs}")
    started.proc.stop()
    return result


def idle_baseline(tmp: Path, settle: float, duration: int, procs: list[Proc]) -> Idle:
    args = ["idle", "--jobs", str(IDLE_JOBS), "--skip-hours", ",".join(str(h) for h in idle_skip_hours())]
    started = start_baseline(tmp, "idle", args, procs)
    result = sample_idle("APScheduler no-op", started, IDLE_JOBS, settle, duration)
    started.proc.stop()
    return result


# --------------------------------------------------------------------------- report


def fmt_ms(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f} ms"


def verdict(value: float, limit: float) -> str:
    return "n/a" if math.isnan(value) else ("PASS" if value <= limit else "FAIL")


def md_table(head: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        cells_out = (
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(cells_out) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return [line(head), sep, *(line(r) for r in rows)]


def noise_text(n: Noise) -> str:
    top = f" ({', '.join(n.top_others)})" if n.top_others else ""
    return f"server {n.server_cpu * 100:.1f}% CPU, other processes {n.other_cpu * 100:.0f}%{top}, load {n.load[0]:.2f}"


def print_lateness(r: Lateness) -> None:
    extra = ""
    if r.exec_ms:
        extra += f"  spawn->stamp p50 {percentile(r.exec_ms, 50):.2f} ms"
    if r.recorded_ms:
        extra += (
            f"  lobwife's started_at p50 {percentile(r.recorded_ms, 50):.2f} p99 {percentile(r.recorded_ms, 99):.2f} ms"
        )
    print(
        f"    {r.label:29} n={len(r.lateness_ms):4}/{r.expected:<4} p50 {r.p(50):7.2f} ms  p99 {r.p(99):7.2f} ms  "
        f"max {r.p(100):7.2f} ms{extra}",
        flush=True,
    )
    print(f"    {'':29} {noise_text(r.noise)}", flush=True)
    for n in r.notes:
        print(f"    {'':29} note: {n}", flush=True)


def print_idle(r: Idle) -> None:
    print(
        f"    {r.label:29} ready in {r.startup_seconds:.2f} s; CPU {r.cpu * 100:.2f}% of a core "
        f"(busiest second {r.cpu_max_second * 100:.1f}%); RSS {r.rss_mb:.1f} MB (max {r.rss_max_mb:.1f}); "
        f"{r.threads} threads",
        flush=True,
    )
    print(f"    {'':29} {noise_text(r.noise)}", flush=True)
    for n in r.notes:
        print(f"    {'':29} note: {n}", flush=True)


def results_table(one: list[Lateness], burst: list[Lateness], idle: list[Idle]) -> list[str]:
    def by(rs: list[Lateness], label: str) -> Lateness | None:
        return next((r for r in rs if r.label == label), None)

    def cell(r: Lateness | None, q: float) -> str:
        return fmt_ms(r.p(q)) if r is not None else "-"

    head = ["measurement", "lobwife", "APScheduler no-op", "APScheduler + spawn", "target", "result"]
    rows: list[list[str]] = []
    for title, rs, key in (
        ("1 job every second", one, "one_p99"),
        (f"{BURST_JOBS} jobs at one instant", burst, "burst_p99"),
    ):
        lw, noop, sp = by(rs, "lobwife"), by(rs, "APScheduler no-op"), by(rs, "APScheduler + spawn")
        limit = TARGETS[key]
        for q in (50.0, 99.0):
            row = [f"{title}: start lateness p{q:.0f}", cell(lw, q), cell(noop, q), cell(sp, q)]
            if q == 99.0:
                row += [f"<= {limit:g} ms", verdict(lw.p(q), limit) if lw is not None else "-"]
            else:
                row += ["", ""]
            rows.append(row)
    lw_i = next((r for r in idle if r.label == "lobwife"), None)
    base_i = next((r for r in idle if r.label != "lobwife"), None)

    def icell(r: Idle | None, f: Callable[[Idle], str]) -> str:
        return f(r) if r is not None else "-"

    rows.append(
        [
            f"{IDLE_JOBS:,} idle jobs: CPU (one core = 100%)",
            icell(lw_i, lambda r: f"{r.cpu * 100:.2f}%"),
            icell(base_i, lambda r: f"{r.cpu * 100:.2f}%"),
            "",
            f"<= {TARGETS['idle_cpu'] * 100:g}%",
            verdict(lw_i.cpu, TARGETS["idle_cpu"]) if lw_i is not None else "-",
        ]
    )
    rows.append(
        [
            f"{IDLE_JOBS:,} idle jobs: RSS",
            icell(lw_i, lambda r: f"{r.rss_max_mb:.1f} MB"),
            icell(base_i, lambda r: f"{r.rss_max_mb:.1f} MB"),
            "",
            f"<= {TARGETS['idle_rss']:g} MB",
            verdict(lw_i.rss_max_mb, TARGETS["idle_rss"]) if lw_i is not None else "-",
        ]
    )
    rows.append(
        [
            f"{IDLE_JOBS:,} jobs: start-up to ready",
            icell(lw_i, lambda r: f"{r.startup_seconds:.2f} s"),
            icell(base_i, lambda r: f"{r.startup_seconds:.2f} s"),
            "",
            "",
            "",
        ]
    )
    return md_table(head, rows, {1, 2, 3})


def detail_table(one: list[Lateness], burst: list[Lateness]) -> list[str]:
    head = ["scenario", "scheduler", "runs", "missing", "p50 ms", "p99 ms", "max ms", "spawn->stamp p50/p99 ms",
            "recorded start p50/p99 ms", "server CPU", "other CPU", "RSS MB"]  # fmt: skip
    rows = []
    for title, rs in (("1 job / s", one), (f"{BURST_JOBS} at once", burst)):
        for r in rs:
            ex = f"{percentile(r.exec_ms, 50):.2f} / {percentile(r.exec_ms, 99):.2f}" if r.exec_ms else ""
            rec = f"{percentile(r.recorded_ms, 50):.2f} / {percentile(r.recorded_ms, 99):.2f}" if r.recorded_ms else ""
            rows.append(
                [
                    title,
                    r.label,
                    str(len(r.lateness_ms)),
                    str(r.missing),
                    f"{r.p(50):.2f}",
                    f"{r.p(99):.2f}",
                    f"{r.p(100):.2f}",
                    ex,
                    rec,
                    f"{r.noise.server_cpu * 100:.1f}%",
                    f"{r.noise.other_cpu * 100:.0f}%",
                    f"{r.rss_mb:.1f}",
                ]
            )
    return md_table(head, rows, set(range(2, 12)))


def versions() -> str:
    parts = [f"Python {platform.python_version()}"]
    for dist in ("APScheduler", "uvloop", "grpcio", "protobuf", "aiohttp"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    bash = subprocess.run(["bash", "--version"], capture_output=True, text=True, check=False).stdout.splitlines()
    parts.append(bash[0] if bash else "bash ?")
    return ", ".join(parts)


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
        f"software: {versions()}",
    ]


# --------------------------------------------------------------------------- main


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(duration: int, idle_duration: int, settle: float, kinds: list[str], tmp: Path, procs: list[Proc]) -> None:
    print("\n".join(machine_info()), flush=True)
    one_names = ["lat000"]
    burst_names = [f"lat{i:03d}" for i in range(BURST_JOBS)]
    burst_duration = max(BURST_PERIOD, duration // BURST_PERIOD * BURST_PERIOD)
    runs = 1 + len(kinds)
    estimate = runs * (duration + 6) + runs * (burst_duration + 8) + 2 * (idle_duration + settle) + 12
    print(f"measuring: {duration} s per lateness run, {idle_duration} s idle; about {estimate / 60:.1f} min")

    one: list[Lateness] = []
    print(f"\n1 job, cron {ONE_CRON!r}, {duration} slots:", flush=True)
    one.append(lateness_lobwife(tmp, "one", one_names, ONE_CRON, 1, duration, procs))
    print_lateness(one[-1])
    for kind in kinds:
        one.append(lateness_baseline(tmp, "one", one_names, "*", 1, duration, kind, procs))
        print_lateness(one[-1])

    burst: list[Lateness] = []
    instants = burst_duration // BURST_PERIOD
    print(f"\n{BURST_JOBS} jobs, cron {BURST_CRON!r}, {instants} instants:", flush=True)
    burst.append(lateness_lobwife(tmp, "burst", burst_names, BURST_CRON, BURST_PERIOD, burst_duration, procs))
    print_lateness(burst[-1])
    for kind in kinds:
        second = f"*/{BURST_PERIOD}"
        burst.append(lateness_baseline(tmp, "burst", burst_names, second, BURST_PERIOD, burst_duration, kind, procs))
        print_lateness(burst[-1])

    idle: list[Idle] = []
    print(f"\n{IDLE_JOBS:,} idle jobs (daily cron, none due now), {settle:g} s settle, {idle_duration} s:", flush=True)
    idle.append(idle_lobwife(tmp, settle, idle_duration, procs))
    print_idle(idle[-1])
    idle.append(idle_baseline(tmp, settle, idle_duration, procs))
    print_idle(idle[-1])

    print()
    print("Results (lateness = scheduled time -> the job's process stamping its start; nearest-rank percentiles):")
    print("\n".join(results_table(one, burst, idle)))
    print()
    print("Details:")
    print("\n".join(detail_table(one, burst)))
    print()
    print(
        "spawn->stamp: fork + exec + bash start-up, measured by the spawn baselines (part of every stamp);\n"
        "recorded start: lobwife's own started_at - scheduled_at (after the spawn returned and on_start ran);\n"
        "server CPU includes the jobs it ran; other CPU: everything else on the machine (noise);\n"
        "RSS: the scheduler process at the end of the measurement."
    )
    anomalies = [f"{label}: {n}" for label, rs in (("1 job", one), ("100 jobs", burst)) for r in rs for n in r.notes]
    anomalies += [f"idle {r.label}: {n}" for r in idle for n in r.notes]
    for label, noises in (
        ("1 job", [(r.label, r.noise) for r in one]),
        ("100 jobs", [(r.label, r.noise) for r in burst]),
        ("idle", [(r.label, r.noise) for r in idle]),
    ):
        for who, n in noises:
            if n.other_cpu > 0.25:
                top = f" ({', '.join(n.top_others)})" if n.top_others else ""
                anomalies.append(f"{label}, {who}: other processes used {n.other_cpu * 100:.0f}% CPU{top}: noise")
    if anomalies:
        print("\nAnomalies:")
        print("\n".join(f"  - {a}" for a in dict.fromkeys(anomalies)))
    print(f"\nload average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\nCommands:")
    shown: set[str] = set()
    for proc in procs:
        if proc.name not in shown:
            shown.add(proc.name)
            print(f"  {proc.name}: {shlex.join(proc.cmd)}")
    print(f"  lateness jobs run: {shlex.join(STAMP_CMD)}  (env OUT=<stamp file>)")
    print(f"  (servers run with PYTHONPATH={SERVER_PYTHONPATH}; temp files under {tmp}, removed on exit)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Benchmark lobwife's scheduler (start lateness, idle cost) against a bare APScheduler."
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 10 s per measurement (unless set explicitly)")
    p.add_argument("--duration", type=int, help="seconds of slots per lateness measurement (default 30)")
    p.add_argument("--idle-duration", type=int, help="seconds of idle sampling (default 30)")
    p.add_argument(
        "--loop-spawn",
        action="store_true",
        help="also run a spawn baseline that starts processes with uvloop's subprocess_exec (a fork of the "
        "whole process on the loop thread), the way lobwife's runner did before it moved to Popen in a thread",
    )
    args = p.parse_args(argv)
    duration = args.duration if args.duration is not None else (10 if args.quick else 30)
    idle_duration = args.idle_duration if args.idle_duration is not None else (10 if args.quick else 30)
    settle = 3.0 if args.quick else 5.0
    if duration < 1 or idle_duration < 1:
        p.error("--duration and --idle-duration must be at least 1")

    signal.signal(signal.SIGTERM, _raise_interrupt)  # stop the servers on SIGTERM as on Ctrl-C
    procs: list[Proc] = []
    try:
        with tempfile.TemporaryDirectory(prefix="lobwife-schedbench-") as tmp:
            try:
                kinds = ["noop", "spawn"] + (["spawn-loop"] if args.loop_spawn else [])
                run(duration, idle_duration, settle, kinds, Path(tmp), procs)
            finally:
                for proc in reversed(procs):
                    proc.stop()
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    except (BenchError, subprocess.TimeoutExpired, grpc.RpcError, OSError) as e:
        print(f"\nbench failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
