"""Issue 11's four state-store targets in one run: the cost bench and the vault bench, then one table.

    python bench/state_store_bench.py            # costs_bench.py in full, then vault_bench.py (~3.5 minutes)
    python bench/state_store_bench.py --quick    # both in their quick modes (~1 minute): smoke run

Runs ``bench/costs_bench.py`` and ``bench/vault_bench.py`` one after the other, each as a
subprocess of this interpreter (so neither shares a process, a loop or a GIL with the other, and
each cleans up after itself as when run alone), prints their output as it comes, and ends with
the four targets: RecordCost >= 0.9x CreateTask at 64 in flight, the cost summary by day over
1,000,000 events p99 <= 50 ms, the server's first vault sync of 10,000 tasks <= 30 s and its
incremental sync of 10 changed tasks <= 1 s.

A measurement, not a test: exit 0 whatever the figures; non-zero only when the harness cannot run
(a bench that fails, or that prints no figure for a target).
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Target:
    """One target: which bench measures it, the line its figure is read from, and how it is shown."""

    bench: str
    label: str
    pattern: str  # group 1: the figure; group 2: PASS or FAIL, as the bench judged it
    unit: str


TARGETS = (
    Target(
        "costs_bench.py",
        "RecordCost / CreateTask rate, 64 in flight (>= 0.9)",
        r"^RecordCost / CreateTask rate: ([\d.]+) .*?target >= [\d.]+: (PASS|FAIL)",
        "x",
    ),
    Target(
        "costs_bench.py",
        "SummarizeCosts by day, 1,000,000 events, p99 (<= 50 ms)",
        r"^by-day summary p99: ([\d.]+) ms \(target <= [\d.]+ ms: (PASS|FAIL)\)",
        " ms",
    ),
    Target(
        "vault_bench.py",
        "server vault cycle, first sync of 10,000 tasks (<= 30 s)",
        r"^server cycle first sync: ([\d.]+) s \(target <= [\d.]+ s: (PASS|FAIL)\)",
        " s",
    ),
    Target(
        "vault_bench.py",
        "server vault cycle, 10 changed tasks, median (<= 1 s)",
        r"^server cycle incremental sync: ([\d.]+) s \(target <= [\d.]+ s: (PASS|FAIL)\)",
        " s",
    ),
)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_bench(script: str, args: list[str]) -> tuple[int, str]:
    """Run one bench, echoing its output as it comes; (exit code, its stdout)."""
    cmd = [sys.executable, str(BENCH / script), *args]
    print(f"$ {' '.join(['python', f'bench/{script}', *args])}", flush=True)
    # Own session: a Ctrl-C in the terminal reaches only this script, which passes it on once, so
    # a second SIGINT never cuts short the bench's own clean-up (its servers, its temp folders).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1, start_new_session=True)
    out: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            out.append(line)
        return proc.wait(), "".join(out)
    except KeyboardInterrupt:
        # The bench stops its servers in its finally blocks on SIGINT (KeyboardInterrupt); a Ctrl-C
        # or a SIGTERM to this script is passed on as one.
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)  # a server's stop waits up to 15 s before it kills it
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--quick", action="store_true", help="both benches in their quick modes: a smoke run")
    args = p.parse_args(argv)
    passed = ["--quick"] if args.quick else []
    signal.signal(signal.SIGTERM, _interrupt)
    # Python's own SIGINT handler, even when started with SIGINT ignored (from a shell's `&`, a
    # nohup): a caught signal is reset to the default in the benches at exec, where an ignored one
    # stays ignored, and a bench that ignores SIGINT cannot be asked to stop its servers.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    outputs: dict[str, str] = {}
    failed: list[str] = []
    try:
        for script in dict.fromkeys(t.bench for t in TARGETS):
            rc, out = run_bench(script, passed)
            outputs[script] = out
            if rc != 0:
                failed.append(f"{script} exited {rc}")
            print(flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    rows: list[tuple[str, str, str]] = []
    for t in TARGETS:
        m = re.search(t.pattern, outputs.get(t.bench, ""), re.MULTILINE)
        if m is None:
            rows.append((t.label, "not measured", "-"))
            failed.append(f"{t.bench} printed no figure for: {t.label}")
        else:
            rows.append((t.label, f"{m.group(1)}{t.unit}", m.group(2)))
    mode = " (--quick: 1 round, 200,000 events, 2,000 tasks; indicative only)" if args.quick else ""
    print(f"issue 11, state store targets{mode}, {time.monotonic() - started:.0f} s:")
    width = max(len(r[0]) for r in rows)
    print(f"| {'target':<{width}} | {'figure':>12} | result |")
    print(f"|{'-' * (width + 2)}|{'-' * 13}:|--------|")
    for label, figure, result in rows:
        print(f"| {label:<{width}} | {figure:>12} | {result:<6} |")
    if failed:
        print("\nthe harness could not measure everything:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
