"""lobwife benchmark for issue 11's vault sync: a first sync of 10,000 tasks, then 10 changed among them.

    python bench/vault_bench.py              # 10,000 tasks, 3 incremental cycles (~1 minute)
    python bench/vault_bench.py --tasks 2000

Real git throughout: a bare repository as the remote and a clone as the vault, in a temp folder.
The library the server runs (``vault.sync.VaultSync``) syncs 10,000 tasks (a full rebuild: 10,000
files written, one commit, a push), then three times 10 changed tasks (5 of them move folder).
Beside each, the floor git itself sets on the same machine: ``git add -A && git commit && git
push`` of the same files written by a plain loop (the first), and of 10 files rewritten (the
incremental). Targets: first sync <= 30 s; an incremental sync of 10 changed tasks <= 1 s.

A measurement, not a test: exit 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "clients" / "python"), str(ROOT / "server")]

from lobwife.v1 import tasks_pb2  # noqa: E402
from lobwife_server.vault.sync import VaultSync  # noqa: E402

FIRST_TARGET_S = 30.0
INCREMENTAL_TARGET_S = 1.0
ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True)


def repos(tmp: Path, name: str) -> Path:
    remote = tmp / f"{name}.git"
    git(tmp, "init", "-q", "--bare", "-b", "main", str(remote))
    seed = tmp / f"{name}-seed"
    git(tmp, "clone", "-q", str(remote), str(seed))
    (seed / "README.md").write_text("# vault\n")
    git(seed, "add", "README.md")
    git(seed, "commit", "-q", "-m", "seed")
    git(seed, "push", "-q", "origin", "HEAD:main")
    vault = tmp / name
    git(tmp, "clone", "-q", str(remote), str(vault))
    return vault


def make_tasks(n: int) -> list[tasks_pb2.Task]:
    statuses = [tasks_pb2.TASK_STATUS_QUEUED, tasks_pb2.TASK_STATUS_ACTIVE, tasks_pb2.TASK_STATUS_COMPLETED]
    out = []
    for i in range(1, n + 1):
        t = tasks_pb2.Task(id=i, name=f"task {i}: fix the thing", status=statuses[i % 3], type="swe", priority="p2")
        t.created_at.FromSeconds(1_770_000_000 + i)
        t.updated_at.FromSeconds(1_770_000_000 + i)
        out.append(t)
    return out


def change(tasks: list[tasks_pb2.Task], round_no: int) -> list[tasks_pb2.Task]:
    changed = []
    for k in range(10):
        t = tasks[(round_no * 97 + k * 1013) % len(tasks)]
        if k < 5:  # a status that moves the file to another folder
            t.status = (
                tasks_pb2.TASK_STATUS_FAILED
                if t.status != tasks_pb2.TASK_STATUS_FAILED
                else tasks_pb2.TASK_STATUS_ACTIVE
            )
        else:
            t.name = f"{t.name} (edited {round_no})"
        t.updated_at.FromSeconds(t.updated_at.seconds + 3600 * (round_no + 1))
        changed.append(t)
    return changed


def git_floor(vault: Path, files: int, round_no: int) -> float:
    """git add/commit/push of ``files`` files written by a plain loop: what git alone costs."""
    t0 = time.monotonic()
    folder = vault / "plain"
    folder.mkdir(exist_ok=True)
    for i in range(files):
        (folder / f"T{i}.md").write_text(f"---\nid: {i}\nround: {round_no}\n---\n")
    git(vault, "add", "-A")
    git(vault, "commit", "-q", "-m", f"round {round_no}")
    git(vault, "push", "-q", "origin", "HEAD:main")
    return time.monotonic() - t0


async def run(n: int, rounds: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lobwife-vault-bench-"))
    try:
        vault, floor_vault = repos(tmp, "vault"), repos(tmp, "floor")
        tasks = make_tasks(n)
        sync = VaultSync(vault)
        t0 = time.monotonic()
        first = await sync.sync(tasks, full=True)
        first_s = time.monotonic() - t0
        if not first.ok or not first.pushed:
            raise SystemExit(f"first sync failed: {first.error}")
        floor_first = git_floor(floor_vault, n, 0)
        verdict = "PASS" if first_s <= FIRST_TARGET_S else "FAIL"
        print(
            f"first sync of {n:,} tasks: {first_s:.2f} s ({len(first.written):,} files, pushed)"
            f"  | git alone, same files: {floor_first:.2f} s  | target <= {FIRST_TARGET_S:g} s: {verdict}"
        )
        times, floors = [], []
        for r in range(1, rounds + 1):
            changed = change(tasks, r)
            t0 = time.monotonic()
            res = await sync.sync(changed)
            times.append(time.monotonic() - t0)
            if not res.ok or not res.pushed:
                raise SystemExit(f"incremental sync failed: {res.error}")
            floors.append(git_floor(floor_vault, 10, r))
            print(
                f"  incremental {r}: {times[-1]:.3f} s ({len(res.written)} written, {len(res.moved)} moved)"
                f"  | git alone, 10 files: {floors[-1]:.3f} s"
            )
        med = statistics.median(times)
        verdict = "PASS" if med <= INCREMENTAL_TARGET_S else "FAIL"
        floor = statistics.median(floors)
        print(
            f"incremental sync of 10 changed tasks among {n:,}: median {med:.3f} s"
            f" (git alone {floor:.3f} s) | target <= {INCREMENTAL_TARGET_S:g} s: {verdict}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if shutil.which("git") is None:
        print("missing: git (sudo apt-get install -y git)", file=sys.stderr)
        return 2
    asyncio.run(run(args.tasks, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
