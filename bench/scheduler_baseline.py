"""Bare APScheduler baseline for bench/scheduler_bench.py (run by it as a subprocess).

The same stack as lobwife's scheduler -- APScheduler 3's AsyncIOScheduler on
uvloop -- with nothing of lobwife's on top: no database, no run records, no
process supervision. Two modes:

    python bench/scheduler_baseline.py lateness --jobs N --second '*/5' --out FILE --ready-file F \
        [--spawn [--spawn-via thread|loop] [--loop asyncio] -- STAMP COMMAND...]
    python bench/scheduler_baseline.py idle --jobs 10000 --ready-file F

``lateness``: N jobs with ``CronTrigger(second=...)`` (every minute, hour and
day), each a coroutine. By default the coroutine does nothing but note the time
it started; with ``--spawn`` it starts the benchmark's stamp command (the same
one lobwife's jobs run) and waits for it to exit, which is the least any
scheduler that starts processes on this stack has to do. By default it starts it
as lobwife's runner does: ``subprocess.Popen`` (vfork) in a worker thread, the
exit seen through a pidfd on the loop. ``--spawn-via loop`` uses the event loop's
``subprocess_exec`` instead (uvloop forks the whole process, on the loop thread;
``--loop asyncio`` spawns through CPython's subprocess module, on the loop thread). Either
way one line per run is appended to ``--out``, in the format the stamp command
writes: ``<epoch seconds> <scheduled RFC 3339> <job> [<epoch seconds just
before the spawn>]``. The scheduled time is the one APScheduler submitted the
run for (from its ``EVENT_JOB_SUBMITTED`` event, dispatched before the
coroutine starts).

``idle``: N jobs with a daily ``CronTrigger`` at times that do not come round
during the measurement (the benchmark passes the hours to leave out), each
pointing at a no-op coroutine; then nothing, until SIGTERM.

Both write ``--ready-file`` once the jobs are scheduled and exit 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from subprocess import DEVNULL, PIPE, STDOUT

from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger


def rfc3339(when: datetime) -> str:
    # As lobwife's runner.rfc3339 formats LOBWIFE_SCHEDULED_AT.
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Lateness:
    def __init__(self, out: Path, stamp: list[str], spawn: bool, via: str = "thread") -> None:
        self.out = out
        self.stamp = stamp
        self.spawn = spawn
        self.via = via
        # Scheduled times submitted and not yet picked up by their coroutine, per job.
        self.pending: dict[str, collections.deque[datetime]] = collections.defaultdict(collections.deque)
        self.lines: list[str] = []
        self.env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "OUT": str(out)}
        if "LANG" in os.environ:
            self.env["LANG"] = os.environ["LANG"]

    def submitted(self, event: JobSubmissionEvent) -> None:
        # Called synchronously inside APScheduler's _process_jobs, before the coroutine runs.
        self.pending[event.job_id].extend(event.scheduled_run_times)

    async def noop(self, name: str) -> None:
        started = time.time_ns()
        slot = self.pending[name].popleft()
        # Kept in memory and written at exit: file I/O here would delay the next coroutines.
        self.lines.append(f"{started / 1e9:.6f} {rfc3339(slot)} {name}\n")

    def flush(self) -> None:
        with open(self.out, "a") as f:
            f.writelines(self.lines)
        self.lines.clear()

    async def spawned(self, name: str) -> None:
        slot = self.pending[name].popleft()
        loop = asyncio.get_running_loop()
        env = {**self.env, "LOBWIFE_SCHEDULED_AT": rfc3339(slot), "LOBWIFE_JOB": name}
        env["SPAWN_AT"] = f"{time.time_ns() / 1e9:.6f}"
        exited: asyncio.Future[None] = loop.create_future()
        if self.via == "loop":
            transport, _ = await loop.subprocess_exec(
                lambda: _Exit(exited), *self.stamp, stdin=DEVNULL, stdout=PIPE, stderr=STDOUT, env=env
            )
            await exited
            transport.close()
            return
        proc = await asyncio.to_thread(
            subprocess.Popen, self.stamp, stdin=DEVNULL, stdout=PIPE, stderr=STDOUT, env=env, start_new_session=True
        )
        pidfd = os.pidfd_open(proc.pid)
        loop.add_reader(pidfd, exited.set_result, None)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        proc.wait()  # exited: reaps at once
        assert proc.stdout is not None
        proc.stdout.close()


class _Exit(asyncio.SubprocessProtocol):
    """Tells when the process exited, as lobwife's runner learns it, without the runner's bookkeeping."""

    def __init__(self, exited: asyncio.Future[None]) -> None:
        self.exited = exited

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


async def run_lateness(args: argparse.Namespace) -> None:
    aps = AsyncIOScheduler(timezone=UTC)
    lat = Lateness(Path(args.out), args.stamp, args.spawn, args.spawn_via)
    aps.add_listener(lat.submitted, EVENT_JOB_SUBMITTED)
    func = lat.spawned if args.spawn else lat.noop
    for i in range(args.jobs):
        name = f"lat{i:03d}"  # as the benchmark names lobwife's jobs
        trigger = CronTrigger(second=args.second, timezone=UTC)
        # Like lobwife's timers: no misfire limit, so a late run is late rather than dropped.
        aps.add_job(func, trigger, args=[name], id=name, misfire_grace_time=None, max_instances=1000)
    aps.start()
    await serve_until_term(aps, Path(args.ready_file))
    lat.flush()


async def idle_noop() -> None:
    return None


async def run_idle(args: argparse.Namespace) -> None:
    aps = AsyncIOScheduler(timezone=UTC)
    skip = {int(h) for h in args.skip_hours.split(",") if h}
    hours = [h for h in range(24) if h not in skip]
    for i in range(args.jobs):
        # The same spread of daily times as the lobwife jobs file (see scheduler_bench.idle_cron).
        minute, hour = i % 60, hours[(i // 60) % len(hours)]
        trigger = CronTrigger(minute=minute, hour=hour, timezone=UTC)
        aps.add_job(idle_noop, trigger, id=f"idle{i:05d}", misfire_grace_time=None)
    aps.start()
    await serve_until_term(aps, Path(args.ready_file))


async def serve_until_term(aps: AsyncIOScheduler, ready_file: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(ready_file.write_text, f"{len(aps.get_jobs())}\n")
    await stop.wait()
    aps.shutdown(wait=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Bare APScheduler (AsyncIOScheduler on uvloop) baseline.")
    sub = p.add_subparsers(dest="mode", required=True)
    lat = sub.add_parser("lateness", help="N jobs on CronTrigger(second=...), noting when each run starts")
    lat.add_argument("--jobs", type=int, required=True)
    lat.add_argument("--second", required=True, help="CronTrigger second field, e.g. '*' or '*/5'")
    lat.add_argument("--out", required=True, help="file the stamp lines are appended to")
    lat.add_argument("--spawn", action="store_true", help="start the stamp command instead of a no-op coroutine")
    lat.add_argument("--ready-file", required=True)
    lat.add_argument(
        "--spawn-via",
        choices=["thread", "loop"],
        default="thread",
        help="thread: Popen in a worker thread, as lobwife's runner (default); loop: the loop's subprocess_exec",
    )
    lat.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop", help="event loop (lobwife uses uvloop; default)"
    )
    lat.add_argument("stamp", nargs="*", help="after --: the stamp command (with --spawn)")
    idle = sub.add_parser("idle", help="N daily jobs that do not fire during the run")
    idle.add_argument("--jobs", type=int, required=True)
    idle.add_argument("--skip-hours", default="", help="UTC hours (comma-separated) no job is scheduled in")
    idle.add_argument("--ready-file", required=True)
    args = p.parse_args(argv)
    if args.mode == "lateness" and args.spawn and not args.stamp:
        p.error("--spawn needs the stamp command after --")
    coro = run_lateness(args) if args.mode == "lateness" else run_idle(args)
    if getattr(args, "loop", "uvloop") == "asyncio":
        asyncio.run(coro)
        return 0
    try:
        import uvloop
    except ImportError:  # lobwife falls back to asyncio too
        asyncio.run(coro)
    else:
        uvloop.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
