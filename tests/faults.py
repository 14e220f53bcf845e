"""Fault injection for the scheduler: kill -9 loops and full disks, and the checks that say what they broke.

Used by ``tests/test_faults.py`` (a short CI run) and ``bench/faults.py`` (the same checks at length).
It drives the real server (``tests.conftest.start_server``) over a real SQLite file, and judges it by
three independent witnesses:

* **the database**, read read-only (``mode=ro``) after the server is stopped or killed: every run record;
* **the job processes themselves**: each job's command appends ``start JOB SLOT RUN_ID PID`` to a marks
  file outside the state folder before anything else, so a run that really started is known even when
  the server died before recording it;
* **/proc**: each job carries a per-harness tag in its environment (``LOBWIFE_FAULT_TAG``), so the
  processes of this harness's runs are found (and only those) whatever the server recorded.

What counts as broken (each is a count in :class:`Report`; all must be 0):

* ``failed_restarts``: a start after a kill that exited or never reached gRPC SERVING;
* ``duplicate_slots``: a (job, slot) that started more than one run (retries are not counted);
* ``unrecorded_slots``: a slot between a job's first and last recorded slot with no record;
* ``left_open``: runs still ``pending``/``running`` after the final clean stop;
* ``orphans_after_restart``: a run of a previous server with a process still alive once the restarted
  server reports SERVING (recovery is done by then, so nothing it should have ended may be left);
* ``orphans_after_stop``: a run with a process alive after the final clean stop (both counted per run);
* ``misrecorded_starts``: a run whose process started (it wrote its mark) but whose record says it never
  did (``skipped``, still ``pending``, or "stopped before the run started");
* ``false_missed``: a slot recorded "missed while lobwife was down" although a server was up and serving
  at that time (with a margin at each end of every up period).

Slots of an ``every = "Ns"`` job fall on multiples of N seconds since 2000-01-01T00:00:00Z, so a 1 s
job's slots are whole seconds: the harness can aim kills just after a slot.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import secrets
import shlex
import signal
import sqlite3
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ServerProcess, start_server

TAG_VAR = "LOBWIFE_FAULT_TAG"
CONCURRENCY = ("forbid", "allow", "replace")
CATCH_UP = ("skip", "once", "all")
DOWN_REASON = "missed while lobwife was down"
#: A slot this close to the start or the end of an up period may honestly be missed (start-up, kill).
UP_MARGIN = 0.5
#: How many examples of each problem a report keeps.
EXAMPLES = 8


# --- jobs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultJob:
    name: str
    concurrency: str = "forbid"
    catch_up: str = "skip"
    sleep: float = 0.7
    every: int = 1  # seconds
    catch_up_window: str = "1h"


def policy_jobs(sleeps: Sequence[float] = (0.7, 1.6, 2.6)) -> list[FaultJob]:
    """One every-second job per concurrency x catch-up policy (9 jobs).

    Each concurrency policy and each catch-up policy gets each run length once, so every policy has
    runs longer than the interval (overlap matters) and one shorter.
    """
    return [
        FaultJob(f"f-{c}-{k}", c, k, sleeps[(i + j) % len(sleeps)])
        for i, c in enumerate(CONCURRENCY)
        for j, k in enumerate(CATCH_UP)
    ]


def _toml_str(s: str) -> str:
    # A JSON string is a valid TOML basic string for what is used here (printable text, quotes, backslashes).
    return json.dumps(s)


def job_command(job: FaultJob, marks: Path) -> list[str]:
    """The job's argv: mark the start (before anything else), print, sleep, print."""
    script = (
        f'echo "start $LOBWIFE_JOB $LOBWIFE_SCHEDULED_AT $LOBWIFE_RUN_ID $$" >> {shlex.quote(str(marks))}; '
        f"echo start $LOBWIFE_RUN_ID; sleep {job.sleep:g}; echo end"
    )
    return ["sh", "-c", script]


def jobs_toml(jobs: Sequence[FaultJob], tag: str, marks: Path) -> str:
    out = []
    for job in jobs:
        argv = ", ".join(_toml_str(a) for a in job_command(job, marks))
        out.append(
            f"[jobs.{job.name}]\n"
            f"command = [{argv}]\n"
            f'every = "{job.every}s"\n'
            f'concurrency = "{job.concurrency}"\n'
            f'catch_up = "{job.catch_up}"\n'
            f'catch_up_window = "{job.catch_up_window}"\n'
            'timeout = "30s"\n'
            f"env = {{ {TAG_VAR} = {_toml_str(tag)} }}\n"
        )
    return "\n".join(out)


# --- processes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobProcess:
    pid: int
    run_id: int | None
    job: str
    cmdline: str


def _proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (comm) state ...": comm may hold spaces and parentheses.
    rest = stat[stat.rfind(b")") + 2 :].split()
    return rest[0].decode() if rest else None


def job_processes(tag: str) -> list[JobProcess]:
    """Live (not zombie) processes whose environment carries ``LOBWIFE_FAULT_TAG=tag``."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if needle not in env:
            continue
        state = _proc_state(pid)
        if state is None or state in "ZX":
            continue
        values = dict(v.split(b"=", 1) for v in env if b"=" in v)
        run = values.get(b"LOBWIFE_RUN_ID", b"")
        found.append(
            JobProcess(
                pid=pid,
                run_id=int(run) if run.isdigit() else None,
                job=values.get(b"LOBWIFE_JOB", b"").decode(errors="replace"),
                cmdline=cmdline,
            )
        )
    return found


def kill_job_processes(tag: str) -> int:
    """SIGKILL every live process of this tag (they are all this harness's); returns how many."""
    n = 0
    for p in job_processes(tag):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
            n += 1
    return n


# --- the database and the marks -------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    id: int
    job_name: str
    trigger: str
    status: str
    scheduled_at: int | None  # microseconds
    attempt: int
    started_at: int | None
    finished_at: int | None
    pid: int | None
    reason: str | None


def read_runs(db: Path) -> list[Run]:
    """Every job run, read-only (a read-only connection never checkpoints nor writes the file)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT id, job_name, trigger, status, scheduled_at, attempt, started_at, finished_at, pid, reason"
            " FROM job_runs ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return [Run(*r) for r in rows]


def max_run_id(db: Path) -> int:
    runs = read_runs(db)
    return runs[-1].id if runs else 0


@dataclass(frozen=True)
class Mark:
    job: str
    slot: str  # LOBWIFE_SCHEDULED_AT, RFC 3339
    run_id: int
    pid: int


def read_marks(path: Path) -> list[Mark]:
    if not path.exists():
        return []
    marks = []
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        # A line cut short by a kill is ignored: the run id is what matters, and it must be whole.
        if len(parts) == 5 and parts[0] == "start" and parts[3].isdigit() and parts[4].isdigit():
            marks.append(Mark(parts[1], parts[2], int(parts[3]), int(parts[4])))
    return marks


# --- reports --------------------------------------------------------------------------------------


COUNTS = (
    "kills",
    "kills_near_slot",
    "restarts",
    "failed_restarts",
    "duplicate_slots",
    "unrecorded_slots",
    "left_open",
    "orphans_after_restart",
    "orphans_after_stop",
    "misrecorded_starts",
    "false_missed",
)
#: The counts that are failures when not 0.
PROBLEMS = COUNTS[3:]


@dataclass
class Report:
    kills: int = 0
    kills_near_slot: int = 0
    restarts: int = 0
    failed_restarts: int = 0
    duplicate_slots: int = 0
    unrecorded_slots: int = 0
    left_open: int = 0
    orphans_after_restart: int = 0
    orphans_after_stop: int = 0
    misrecorded_starts: int = 0
    false_missed: int = 0
    runs: int = 0
    started_runs: int = 0
    summarised_slots: int = 0  # gaps covered by a "more than N slots missed" record
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def note(self, what: str, example: str, n: int = 1) -> None:
        setattr(self, what, getattr(self, what) + n)
        if len(self.examples[what]) < EXAMPLES:
            self.examples[what].append(example)

    @property
    def problems(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in PROBLEMS if getattr(self, k)}

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [
            "  ".join(f"{k}={getattr(self, k)}" for k in COUNTS)
            + f"  runs={self.runs} started={self.started_runs} summarised_slots={self.summarised_slots}"
        ]
        for what, examples in self.examples.items():
            lines.append(f"{what}:")
            lines += [f"  - {e}" for e in examples]
        return "\n".join(lines)


def _iso(us: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(us // 1_000_000))


def _describe(run: Run | None) -> str:
    if run is None:
        return "no record"
    return f"recorded {run.status} ({run.trigger}, pid {run.pid}, started_at {run.started_at}): {run.reason}"


# --- the harness ----------------------------------------------------------------------------------


class RestartFailed(RuntimeError):
    """Every attempt to start the server again after a kill failed (each is counted in the report)."""


class FaultHarness:
    """One lobwife server over one state folder, killed and restarted on demand, and its checks.

    ``state_dir`` may be given (e.g. a tmpfs mount point); by default ``workdir/state``. The server log
    goes to the state folder's parent (conftest's rule), so a state folder on a small tmpfs should be
    the mount point itself, or its log fills the disk too.
    """

    def __init__(
        self,
        workdir: Path,
        jobs: Sequence[FaultJob],
        *,
        state_dir: Path | None = None,
        seed: int | None = None,
        server_args: Sequence[str] = (),
        log: Callable[[str], None] | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.jobs = list(jobs)
        self.state_dir = state_dir or workdir / "state"
        self.db = self.state_dir / "lobwife.db"
        self.marks = workdir / "marks.log"
        self.jobs_file = workdir / "jobs.toml"
        self.tag = f"fault-{os.getpid()}-{secrets.token_hex(4)}"
        self.jobs_file.write_text(jobs_toml(self.jobs, self.tag, self.marks))
        self.rng = random.Random(seed)
        self.server_args = list(server_args)
        self.log = log or (lambda _msg: None)
        self.srv: ServerProcess | None = None
        self.report = Report()
        #: Wall-clock (serving since, down from) of every server that reached SERVING.
        self.up_periods: list[tuple[float, float]] = []
        self._up_since: float | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self, *, restart: bool = True, attempts: int = 3, timeout: float = 30.0) -> bool:
        """Start the server; True once it is SERVING. Each failed attempt is counted when ``restart``."""
        for _ in range(attempts):
            old_max = max_run_id(self.db)
            srv = start_server(self.state_dir, "--jobs", str(self.jobs_file), *self.server_args, wait=False)
            if restart:
                self.report.restarts += 1
            try:
                srv.wait_ready(timeout=timeout)
            except (RuntimeError, TimeoutError):
                if srv.proc.poll() is None:
                    srv.proc.kill()
                    srv.proc.wait(timeout=10)
                text = srv.log()
                if "address already in use" in text.lower():
                    if restart:
                        self.report.restarts -= 1  # the harness's port race, not the server's failure
                    continue
                why = _exit_text(srv.proc.returncode) + ": " + _first_error(text) + f" (log: {srv.log_path})"
                if restart:
                    self.report.note("failed_restarts", why)
                self.log(f"start failed: {why}")
                continue
            self.srv = srv
            self._up_since = time.time()
            if restart:
                self._check_orphans(old_max)
            return True
        return False

    def _went_down(self) -> None:
        if self._up_since is not None:
            self.up_periods.append((self._up_since, time.time()))
            self._up_since = None

    def kill9(self) -> None:
        assert self.srv is not None
        self._went_down()
        self.srv.kill9()
        self.report.kills += 1
        self.srv = None

    def stop(self) -> int:
        """Clean stop (SIGTERM); then no job process of this harness may be left."""
        assert self.srv is not None
        self._went_down()
        rc = self.srv.terminate(timeout=30)
        self.srv = None
        left: dict[int | None, list[JobProcess]] = defaultdict(list)
        for p in job_processes(self.tag):
            left[p.run_id].append(p)
        for run_id, procs in left.items():
            pids = ", ".join(f"{p.pid} ({p.cmdline[:40]})" for p in procs)
            self.report.note("orphans_after_stop", f"run {run_id} of {procs[0].job}: pids {pids} alive after the stop")
        kill_job_processes(self.tag)
        return rc

    def close(self) -> None:
        """Teardown: end the server and every job process of this harness, whatever state they are in."""
        if self.srv is not None and self.srv.proc.poll() is None:
            self.srv.proc.kill()
            self.srv.proc.wait(timeout=10)
        self.srv = None
        kill_job_processes(self.tag)

    def _check_orphans(self, old_max: int) -> None:
        """Processes of runs recorded before this start (ids never reused) must be gone by SERVING."""
        left = [p for p in job_processes(self.tag) if p.run_id is not None and p.run_id <= old_max]
        if not left:
            return
        by_id = {r.id: r for r in read_runs(self.db)}
        by_run: dict[int, list[JobProcess]] = defaultdict(list)
        for p in left:
            by_run[p.run_id or 0].append(p)
        for run_id, procs in sorted(by_run.items()):
            pids = ", ".join(f"{p.pid} ({p.cmdline[:40]})" for p in procs)
            self.report.note(
                "orphans_after_restart",
                f"run {run_id} of {procs[0].job}: pids {pids} alive after restart reached SERVING; "
                + _describe(by_id.get(run_id)),
            )
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)  # one of ours; ended so that it is counted once

    # -- faults ------------------------------------------------------------------------------------

    def sleep_to_slot(self, offset: float, *, min_up: float = 0.3) -> None:
        """Sleep until ``offset`` seconds after a whole second at least ``min_up`` seconds from now."""
        now = time.time()
        target = int(now + min_up) + 1 + offset
        time.sleep(max(0.0, target - time.time()))

    def kill_loop(
        self,
        *,
        kills: int,
        seconds: float,
        near_slot: float = 0.5,
        downs: Sequence[float] = (0.0, 0.3, 1.0, 2.2, 3.0),
        up: tuple[float, float] = (0.3, 2.5),
    ) -> None:
        """Up to ``kills`` kill -9 + restart cycles within ``seconds``.

        A share ``near_slot`` of the kills land 0-50 ms after a slot (the window between recording a
        slot's run and recording its process), the others after a random ``up`` time. After each kill
        the server stays down for one of ``downs`` seconds (2 s or more misses two slots or more).
        """
        if self.srv is None and not self.start(restart=False):
            raise RuntimeError(f"server did not start:\n{self._last_log()}")
        deadline = time.monotonic() + seconds
        for i in range(kills):
            if time.monotonic() >= deadline:
                break
            if self.rng.random() < near_slot:
                self.sleep_to_slot(self.rng.uniform(0.0, 0.05))
                self.report.kills_near_slot += 1
            else:
                time.sleep(self.rng.uniform(*up))
            self.kill9()
            time.sleep(self.rng.choice(list(downs)))
            if not self.start():
                raise RestartFailed(f"no restart succeeded after kill {i + 1}; the last log:\n{self._last_log()}")
            self.log(f"kill {i + 1}: {self.report.restarts} restarts, {self.report.failed_restarts} failed")

    def _last_log(self) -> str:
        logs = sorted(self.state_dir.parent.glob("server-*.log"), key=lambda p: p.stat().st_mtime)
        return logs[-1].read_text(errors="replace")[-4000:] if logs else ""

    # -- checks ------------------------------------------------------------------------------------

    def analyse(self, *, expect_stopped: bool = True) -> Report:
        """Read the database and the marks; fill in the slot and record counts of :attr:`report`."""
        rep = self.report
        runs = [r for r in read_runs(self.db) if r.job_name in {j.name for j in self.jobs}]
        by_id = {r.id: r for r in runs}
        rep.runs = len(runs)
        marks = read_marks(self.marks)
        started_ids = {m.run_id for m in marks}
        rep.started_runs = len(started_ids)

        # Runs that started twice for one slot: per the database, and per the processes' own marks.
        starts: dict[tuple[str, int], set[int]] = defaultdict(set)
        for r in runs:
            if r.scheduled_at is None or r.trigger in ("retry", "manual", "startup"):
                continue
            if r.started_at is not None or r.pid is not None or r.id in started_ids:
                starts[(r.job_name, r.scheduled_at)].add(r.id)
        for m in marks:
            rec = by_id.get(m.run_id)
            if rec is not None and rec.trigger not in ("retry", "manual", "startup") and rec.scheduled_at is not None:
                starts[(m.job, rec.scheduled_at)].add(m.run_id)
        for (name, slot), ids in sorted(starts.items()):
            if len(ids) > 1:
                rep.note("duplicate_slots", f"{name} slot {_iso(slot)} started runs {sorted(ids)}")

        # Every slot between a job's first and last recorded slot has a record.
        for job in self.jobs:
            mine = [r for r in runs if r.job_name == job.name]
            slots = {r.scheduled_at for r in mine if r.scheduled_at is not None}
            if not slots:
                continue
            summarised = any(r.scheduled_at is None and r.trigger == "catch-up" for r in mine)
            step = job.every * 1_000_000
            missing = [s for s in range(min(slots), max(slots) + 1, step) if s not in slots]
            if not missing:
                continue
            if summarised:
                rep.summarised_slots += len(missing)
                continue
            rep.note(
                "unrecorded_slots",
                f"{job.name}: {len(missing)} slot(s) without a record, e.g. " + ", ".join(_iso(s) for s in missing[:5]),
                len(missing),
            )

        if expect_stopped:
            for r in runs:
                if r.status in ("pending", "running"):
                    rep.note("left_open", f"run {r.id} of {r.job_name} left {r.status}: {r.reason}")

        # A run whose process wrote its start mark must not be recorded as never started.
        for m in marks:
            rec = by_id.get(m.run_id)
            pending = rec is not None and rec.status == "pending"
            never = rec is None or rec.status == "skipped" or "before the run started" in (rec.reason or "")
            if never or (pending and expect_stopped):
                rep.note(
                    "misrecorded_starts",
                    f"run {m.run_id} of {m.job} (slot {m.slot}) started as pid {m.pid} but is " + _describe(rec),
                )

        # "Missed while lobwife was down" for a slot at which a server was up and serving is false.
        periods = [*self.up_periods]
        if self._up_since is not None:
            periods.append((self._up_since, time.time()))
        for r in runs:
            if r.scheduled_at is None or DOWN_REASON not in (r.reason or ""):
                continue
            at = r.scheduled_at / 1e6
            if any(a + UP_MARGIN <= at <= b - UP_MARGIN for a, b in periods):
                rep.note("false_missed", f"run {r.id} of {r.job_name} slot {_iso(r.scheduled_at)}: {r.reason}")
        return rep


def _exit_text(rc: int | None) -> str:
    if rc is None:
        return "never SERVING"
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-rc).name}"
    return f"exit {rc}"


def _first_error(log_text: str) -> str:
    """Why a start failed: the exception a traceback started with, else the last error-level log line."""
    lines = [ln for ln in log_text.splitlines() if ln.strip()]
    if "Traceback" in log_text:
        # The first "SomeError: ..." line after a traceback is the original exception; later ones are
        # what went wrong while unwinding (e.g. "Event loop is closed").
        for ln in lines:
            head = ln.split(":", 1)[0].strip()
            is_exception = head.replace(".", "").isidentifier() and head.endswith(("Error", "Exception", "Interrupt"))
            if ":" in ln and not ln.startswith((" ", "{")) and is_exception:
                return ln.strip()
    for ln in reversed(lines):
        try:
            obj = json.loads(ln)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("level") in ("error", "critical"):
            return str(obj.get("msg"))
    return lines[-1] if lines else "(no output)"


# --- full disks -----------------------------------------------------------------------------------


class TmpfsUnavailable(Exception):
    """A tmpfs could not be mounted (not root, no mount(8), or not allowed in this container)."""


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. ``"16m"``) at ``path`` for the block; always unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TmpfsUnavailable(f"mount -t tmpfs failed: {e}") from e
    if r.returncode != 0:
        raise TmpfsUnavailable(f"mount -t tmpfs failed (exit {r.returncode}): {r.stderr.strip()}")
    try:
        yield path
    finally:
        # Lazy as a fallback: a process still holding a file there must not leave the mount behind.
        u = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
        if u.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill_disk(directory: Path, *, limit: int = 1 << 30) -> Path:
    """Write a file in ``directory`` until the file system is full (ENOSPC); returns its path.

    Real bytes, not a sparse or fallocated file, so the space is really used; at most ``limit`` bytes.
    """
    path = directory / "filler"
    written = 0
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            chunk = b"\0" * size
            while written < limit:
                try:
                    n = f.write(chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
                written += n or 0
                if not n:
                    break
    return path


def wait_until(what: Callable[[], object], timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(every)
    return bool(what())


def successes_after(db: Path, job: str, after: float) -> list[Run]:
    """Successful runs of ``job`` for slots at or after ``after`` (wall-clock seconds)."""
    return [
        r
        for r in read_runs(db)
        if r.job_name == job and r.status == "success" and r.scheduled_at is not None and r.scheduled_at >= after * 1e6
    ]


@dataclass
class DiskFullOutcome:
    fired_again: bool
    first_after_free: float | None  # seconds from the free to the first successful slot after it
    problems: list[str]


def disk_full_cycle(h: FaultHarness, job: str, *, full_for: float = 3.0, resume_within: float = 6.0) -> DiskFullOutcome:
    """With ``h``'s state folder on a tmpfs and the server up: fill the disk for ``full_for`` seconds,
    free it, and see that ``job`` fires again within ``resume_within`` seconds."""
    problems: list[str] = []
    filler = fill_disk(h.state_dir)
    time.sleep(full_for)
    filler.unlink()
    freed = time.time()
    fired = wait_until(lambda: successes_after(h.db, job, freed), resume_within)
    got = successes_after(h.db, job, freed)
    first = min(r.scheduled_at for r in got if r.scheduled_at is not None) / 1e6 - freed if got else None
    if not fired:
        problems.append(f"{job} did not fire within {resume_within:g}s after the disk was freed")
    if h.srv is not None and h.srv.proc.poll() is not None:
        problems.append(f"the server exited ({h.srv.proc.returncode}) on the full disk")
    return DiskFullOutcome(fired, first, problems)


def start_on_full_disk(h: FaultHarness, *, timeout: float = 30.0) -> list[str]:
    """Start ``h``'s server on its (already full) state folder; what is wrong with how it failed."""
    problems: list[str] = []
    srv = start_server(h.state_dir, "--jobs", str(h.jobs_file), *h.server_args, wait=False)
    try:
        rc = srv.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            health = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING"}.get(srv.health(), "?")
        except Exception as e:  # the point is to report, whatever the failure
            health = f"no answer ({type(e).__name__})"
        srv.proc.kill()
        srv.proc.wait(timeout=10)
        why = _first_error(srv.log())
        return [f"still running {timeout:g}s after starting on a full disk (health: {health}); last error: {why}"]
    text = srv.log()
    if rc == 0:
        problems.append("exited 0 on a full disk")
    if "Traceback" in text:
        tb = text[text.index("Traceback") :].strip().splitlines()
        problems.append(f"a traceback on stderr, ending: {tb[-1] if tb else ''}")
    errors, raw = [], []
    for ln in text.splitlines():
        try:
            obj = json.loads(ln)
        except ValueError:
            raw.append(ln)
            continue
        if isinstance(obj, dict) and obj.get("level") in ("error", "critical"):
            errors.append(str(obj.get("msg")))
    if raw and "Traceback" not in text:
        problems.append(f"{len(raw)} stderr line(s) that are not log lines, e.g. {raw[0]!r}")
    if not errors:
        problems.append("no error line says why it did not start")
    elif not any(w in errors[-1].lower() for w in ("full", "space", "disk")):
        problems.append(f"the last error line does not say the disk is full: {errors[-1]!r}")
    return problems
