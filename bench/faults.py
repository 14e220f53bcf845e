"""lobwife scheduler fault injection at length: kill -9 loops (and full disks), then the same checks as CI.

    python bench/faults.py --kills 200 --seconds 600        # the long run (about 10 minutes)
    python bench/faults.py --kills 20 --seconds 60          # smoke run
    python bench/faults.py --kills 200 --seconds 600 --disk-fills 10   # then 10 full-disk cycles (root)
    python bench/faults.py --kills 50 --seconds 120 --keep /tmp/faults  # keep the logs and the databases

The harness is ``tests/faults.py`` (the short CI version is ``tests/e2e/test_faults.py``). One real server
(``python -m lobwife_server`` over a fresh state folder in a temporary directory) runs 9 jobs, every
second, one per overlap policy (forbid | allow | replace) x catch-up policy (skip | once | all), each
``sh -c`` that marks its start, prints, sleeps 0.7, 1.6 or 2.6 s and prints. Then, until ``--kills`` kills
or ``--seconds`` seconds, whichever comes first: let it run (a random 0.3-2.5 s, or until 0-50 ms after a
slot for ``--near-slot`` of the kills), kill -9, stay down 0-3 s, start again. After each restart, once
it reports gRPC SERVING, no process of an earlier run may be alive. At the end a clean stop (SIGTERM),
and the SQLite file (read read-only), the jobs' own start marks and /proc are checked.

With ``--disk-fills N`` (needs root, to mount a tmpfs), a second server keeps its state on a 16 MiB
tmpfs and runs one every-second job; N times: fill the disk for 3 s, free it, the job must fire again
within 6 s; then a restart. Its counts are added to the same report (``disk_no_resume`` too).

Prints, at the end: kills (near a slot), restarts, failed restarts, duplicate slots, unrecorded slots,
runs left running, orphans (after restarts, after the stop), runs that started but are recorded as never
started, false "missed while lobwife was down" records; with examples of each. Exit status 0 when every
problem count is 0, 1 when one is not (it is a soak test, unlike the other benchmarks), 2 when the
harness itself cannot run.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults import (  # noqa: E402  (after the path set-up above)
    PROBLEMS,
    FaultHarness,
    FaultJob,
    Report,
    RestartFailed,
    TmpfsUnavailable,
    disk_full_cycle,
    policy_jobs,
    successes_after,
    tmpfs,
    wait_until,
)


def kill_run(work: Path, args: argparse.Namespace) -> Report:
    h = FaultHarness(work / "kills", policy_jobs(), seed=args.seed, log=lambda m: print(m, flush=True))
    try:
        try:
            h.kill_loop(kills=args.kills, seconds=args.seconds, near_slot=args.near_slot)
        except RestartFailed as e:
            # A crash loop: what it left is still worth counting, with no server to stop.
            print(str(e).splitlines()[0], flush=True)
            return h.analyse(expect_stopped=False)
        rc = h.stop()
        if rc != 0:
            h.report.note("failed_restarts", f"the final clean stop exited {rc}")
        return h.analyse()
    finally:
        h.close()


def disk_run(work: Path, cycles: int) -> tuple[Report, int]:
    """``cycles`` fill-free cycles on a tmpfs, each followed by a restart; returns (report, cycles without resume)."""
    no_resume = 0
    with tmpfs(work / "disk", "16m") as disk:
        h = FaultHarness(work / "disk-work", [FaultJob("tick", "forbid", "skip", 0.1)], state_dir=disk)
        try:
            if not h.start(restart=False):
                raise RuntimeError("the tmpfs server did not start")
            wait_until(lambda: successes_after(h.db, "tick", 0), 6)
            for i in range(cycles):
                out = disk_full_cycle(h, "tick")
                no_resume += not out.fired_again
                for p in out.problems:
                    print(f"disk cycle {i + 1}: {p}", flush=True)
                if h.srv is not None:
                    h.stop()
                if not h.start():
                    break
                time.sleep(1.5)
                if out.first_after_free is not None:
                    print(f"disk cycle {i + 1}: fired again {out.first_after_free:.1f} s after the free", flush=True)
            if h.srv is not None:
                h.stop()
            return h.analyse(), no_resume
        finally:
            h.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=200, help="kill -9 cycles at most (default 200)")
    p.add_argument("--seconds", type=float, default=600.0, help="time for the kill loop at most (default 600)")
    p.add_argument("--near-slot", type=float, default=0.5, help="share of kills 0-50 ms after a slot (default 0.5)")
    p.add_argument("--disk-fills", type=int, default=0, help="full-disk cycles on a tmpfs afterwards (root; default 0)")
    p.add_argument("--seed", type=int, default=None, help="random seed, to replay a run's choices")
    p.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (logs, databases, marks)")
    args = p.parse_args()
    if args.kills < 0 or args.seconds <= 0 or not 0 <= args.near_slot <= 1 or args.disk_fills < 0:
        p.error("--kills and --disk-fills must be >= 0, --seconds > 0, --near-slot within 0..1")

    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            work = args.keep
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lobwife-faults-")))
        try:
            rep = kill_run(work, args)
        except RuntimeError as e:
            print(f"harness could not run: {e}", file=sys.stderr)
            return 2
        disk_no_resume = 0
        if args.disk_fills:
            try:
                disk, disk_no_resume = disk_run(work, args.disk_fills)
            except TmpfsUnavailable as e:
                print(f"disk cycles skipped: {e}", file=sys.stderr)
            else:
                print("\n== full-disk cycles\n" + disk.summary())
                for k in PROBLEMS:
                    setattr(rep, k, getattr(rep, k) + getattr(disk, k))
    print(f"\n== lobwife fault injection, {time.monotonic() - t0:.0f} s")
    print(rep.summary())
    print(f"disk_no_resume={disk_no_resume}")
    return 0 if rep.ok and not disk_no_resume else 1


if __name__ == "__main__":
    sys.exit(main())
