"""lobwife benchmark for issue 11's vault sync: a first sync of 10,000 tasks, then 10 changed among them.

    python bench/vault_bench.py              # 10,000 tasks, 3 incremental cycles (~1 minute)
    python bench/vault_bench.py --quick      # 2,000 tasks, 2 incremental cycles: smoke run
    python bench/vault_bench.py --tasks 2000 --rounds 5

Real git throughout: a bare repository as the remote and a clone as the vault, in a temp folder.
Three measurements, each of a first sync of N tasks (a full rebuild: N files written, one commit,
a push), then three times 10 changed tasks (5 of them move folder):

1. **The library** the server runs (``vault.sync.VaultSync``), over Task messages in memory.
2. **The server's cycle** (``vault.runner.VaultRunner.run_once``, what the built-in job and
   TriggerSync run): a real SQLite database (``storage.database.Database``, migrated) holding the N
   tasks, created through ``TaskService.CreateTask`` on it, 10,000 cost events over the last 30
   days and 200 open findings, so the summary pages (``_costs.md``, ``_audits.md``) have content.
   Its first cycle finds no cursor and rebuilds from every task; each incremental one follows 10
   ``UpdateTask`` calls (5 status changes across folders, 5 renames: each logs the task event the
   cursor sees) and one cost event (so the costs page changes too), and reads the changed tasks,
   both pages' data, syncs, and moves the cursor.
3. **git alone** on the same machine: ``git add -A && git commit && git push`` of as many files
   written by a plain loop (the first), and of 10 files rewritten (the incremental): the floor.

Targets (the server's cycle is what they are about): first sync <= 30 s; an incremental sync of 10
changed tasks <= 1 s (the median of the rounds).

A measurement, not a test: exit 0 whatever the figures; non-zero only when the harness cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "clients" / "python"), str(ROOT / "server")]

from google.protobuf import field_mask_pb2  # noqa: E402

from lobwife.v1 import tasks_pb2  # noqa: E402
from lobwife_server.api.rpc import CallContext  # noqa: E402
from lobwife_server.costs.prices import PriceTable  # noqa: E402
from lobwife_server.storage import audit_store, cost_store, migrations, vault_store  # noqa: E402
from lobwife_server.storage.cost_store import DAY_US  # noqa: E402
from lobwife_server.storage.database import Database  # noqa: E402
from lobwife_server.tasks.service import TaskService  # noqa: E402
from lobwife_server.vault.runner import VaultRunner, VaultSettings  # noqa: E402
from lobwife_server.vault.sync import SyncResult, VaultSync  # noqa: E402

FIRST_TARGET_S = 30.0
INCREMENTAL_TARGET_S = 1.0
CHANGED = 10
MOVED = 5
COST_EVENTS = 10_000
OPEN_FINDINGS = 200
RESOLVED_FINDINGS = 20
MODELS = ["claude-opus-4-5-20251101", "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001", "gpt-unpriced"]
ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}
STATUSES = [tasks_pb2.TASK_STATUS_QUEUED, tasks_pb2.TASK_STATUS_ACTIVE, tasks_pb2.TASK_STATUS_COMPLETED]


class BenchError(Exception):
    """The harness cannot produce a meaningful figure (a sync that failed, a check that did not hold)."""


@dataclass
class Figures:
    """One measurement's seconds: the first sync and each incremental round."""

    first: float = 0.0
    rounds: list[float] = field(default_factory=list)

    @property
    def incremental(self) -> float:
        return statistics.median(self.rounds)


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


def changed_index(n: int, round_no: int, k: int) -> int:
    """The k-th task (0-based index) changed in a round: spread evenly over the whole range (so never the
    same task twice in a round), and other tasks each round."""
    return (round_no * 97 + k * (n // CHANGED)) % n


def other_folder(status: tasks_pb2.TaskStatus.ValueType) -> tasks_pb2.TaskStatus.ValueType:
    """A status whose file lives in another folder (failed/ for active/ and completed/, active/ for failed/)."""
    return tasks_pb2.TASK_STATUS_ACTIVE if status == tasks_pb2.TASK_STATUS_FAILED else tasks_pb2.TASK_STATUS_FAILED


def make_tasks(n: int) -> list[tasks_pb2.Task]:
    out = []
    for i in range(1, n + 1):
        t = tasks_pb2.Task(id=i, name=f"task {i}: fix the thing", status=STATUSES[i % 3], type="swe", priority="p2")
        t.created_at.FromSeconds(1_770_000_000 + i)
        t.updated_at.FromSeconds(1_770_000_000 + i)
        out.append(t)
    return out


def change(tasks: list[tasks_pb2.Task], round_no: int) -> list[tasks_pb2.Task]:
    changed = []
    for k in range(CHANGED):
        t = tasks[changed_index(len(tasks), round_no, k)]
        if k < MOVED:
            t.status = other_folder(t.status)
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


def check(res: SyncResult, what: str, moved: int | None = None) -> None:
    if not res.ok or not res.pushed:
        raise BenchError(f"{what} failed: {res.error or 'not pushed'}")
    if moved is not None and len(res.moved) != moved:
        raise BenchError(f"{what}: {len(res.moved)} files moved, {moved} expected")


def verdict(seconds: float, target: float) -> str:
    return "PASS" if seconds <= target else "FAIL"


async def library(tmp: Path, n: int, rounds: int) -> tuple[Figures, Figures]:
    """VaultSync over in-memory tasks, and git alone beside it: (library, git) figures."""
    vault, floor_vault = repos(tmp, "vault"), repos(tmp, "floor")
    tasks = make_tasks(n)
    sync = VaultSync(vault)
    lib, floor = Figures(), Figures()
    t0 = time.monotonic()
    first = await sync.sync(tasks, full=True)
    lib.first = time.monotonic() - t0
    check(first, "library: first sync")
    floor.first = git_floor(floor_vault, n, 0)
    print(
        f"library, first sync of {n:,} tasks: {lib.first:.2f} s ({len(first.written):,} files, pushed)"
        f"  | git alone, same files: {floor.first:.2f} s"
    )
    for r in range(1, rounds + 1):
        changed = change(tasks, r)
        t0 = time.monotonic()
        res = await sync.sync(changed)
        lib.rounds.append(time.monotonic() - t0)
        check(res, f"library: incremental {r}", MOVED)
        floor.rounds.append(git_floor(floor_vault, CHANGED, r))
        print(
            f"  incremental {r}: {lib.rounds[-1]:.3f} s ({len(res.written)} written, {len(res.moved)} moved)"
            f"  | git alone, {CHANGED} files: {floor.rounds[-1]:.3f} s"
        )
    return lib, floor


# --- the server's cycle -------------------------------------------------------------------------


def _migrate(conn: sqlite3.Connection) -> None:
    migrations.migrate(conn)


def _ctx(method: str) -> CallContext:
    return CallContext(f"/lobwife.v1.TaskService/{method}", "grpc", dict, peer="ipv4:127.0.0.1:1")


async def create_tasks(tasks: TaskService, n: int) -> None:
    """n tasks through CreateTask, 256 in flight: the writer takes them as batches, as under a busy fleet."""
    ctx = _ctx("CreateTask")
    for start in range(1, n + 1, 256):
        reqs = [
            tasks_pb2.CreateTaskRequest(name=f"task {i}: fix the thing", status=STATUSES[i % 3], type="swe", actor="b")
            for i in range(start, min(start + 256, n + 1))
        ]
        await asyncio.gather(*(tasks.CreateTask(req, ctx) for req in reqs))


def _cost(prices: PriceTable, rnd: random.Random, task: int, at: int) -> cost_store.NewCost:
    model = rnd.choice(MODELS)
    counts = (rnd.randrange(100, 5000), rnd.randrange(10, 2000), rnd.randrange(0, 50_000), rnd.randrange(0, 5000))
    price = prices.find(model, at)
    return cost_store.NewCost(
        request_id=None, request_fp=None, task_number=task, provider="anthropic", model=model,
        input_tokens=counts[0], output_tokens=counts[1], cache_read_tokens=counts[2], cache_write_tokens=counts[3],
        reasoning_tokens=0, caller_cost_usd=None, computed_cost_usd=None if price is None else price.cost(*counts),
        price_id=price.id if price is not None else "", cost_note="" if price else "no price", occurred_at=at,
    )  # fmt: skip


def _record(c: sqlite3.Connection, w: object, new: cost_store.NewCost) -> None:
    """One more cost, as RecordCost stores one (a task at work spends while it changes)."""
    cost_store.insert_cost(c, new, new.occurred_at)


async def add_costs(db: Database, n_tasks: int, events: int, now: int) -> None:
    """Cost events over the 30 days before ``now``, with the store code RecordCost uses (rollups by trigger)."""
    prices = PriceTable.load()
    rnd = random.Random(11)
    batch = 2000
    for done in range(0, events, batch):
        news = [
            _cost(prices, rnd, rnd.randrange(1, n_tasks + 1), now - rnd.randrange(30 * DAY_US))
            for _ in range(min(batch, events - done))
        ]

        def write(c: sqlite3.Connection, w: object, news: list[cost_store.NewCost] = news) -> None:
            for new in news:
                cost_store.insert_cost(c, new, new.occurred_at)

        await db.write(write)


async def add_findings(db: Database, n_tasks: int, now: int) -> None:
    """Open findings of every severity (some about a task), and some resolved ones the page leaves out."""

    def write(c: sqlite3.Connection, w: object) -> None:
        for i in range(OPEN_FINDINGS + RESOLVED_FINDINGS):
            task = i * 37 % n_tasks + 1 if i % 2 else None
            new = audit_store.NewFinding(
                f"fp-{i}", "security", i % 5 + 1, f"finding {i}: token in a log", "", f"T{task}" if task else "org/app",
                task, "audit",
            )  # fmt: skip
            row = audit_store.insert_finding(c, new, now - i * 60_000_000)
            if i >= OPEN_FINDINGS:
                audit_store.set_status(c, row.id, "resolved", "fixed", "", "ops", now)

    await db.write(write)


async def update_tasks(
    tasks: TaskService, n: int, round_no: int, status: dict[int, tasks_pb2.TaskStatus.ValueType]
) -> None:
    """10 UpdateTask calls: 5 status changes to another folder, 5 renames (each logs an `updated` event)."""
    ctx = _ctx("UpdateTask")
    for k in range(CHANGED):
        number = changed_index(n, round_no, k) + 1
        req = tasks_pb2.UpdateTaskRequest(task_id=f"T{number}", actor="bench")
        if k < MOVED:
            status[number] = other_folder(status[number])
            req.status = status[number]
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=["status"]))
        else:
            req.name = f"task {number}: fix the thing (edited {round_no})"
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=["name"]))
        await tasks.UpdateTask(req, ctx)


async def server(tmp: Path, n: int, rounds: int, floor: Figures) -> Figures:
    """VaultRunner.run_once over a real database: the full first cycle, then incremental ones."""
    vault = repos(tmp, "server-vault")
    db = Database(tmp / "lobwife.db")
    await db.open(_migrate)
    try:
        tasks = await TaskService.create(db)
        t0 = time.monotonic()
        await create_tasks(tasks, n)
        now = int(time.time() * 1_000_000)
        await add_costs(db, n, COST_EVENTS, now)
        await add_findings(db, n, now)
        print(
            f"server database: {n:,} tasks (CreateTask), {COST_EVENTS:,} cost events, {OPEN_FINDINGS} open findings"
            f" in {time.monotonic() - t0:.1f} s"
        )
        status = {i: STATUSES[i % 3] for i in range(1, n + 1)}
        runner = VaultRunner(db, VaultSettings(path=vault, remote="origin"))
        await runner.check()
        fig = Figures()
        t0 = time.monotonic()
        first = await runner.run_once()
        fig.first = time.monotonic() - t0
        check(first, "server: first cycle")
        if not runner.last_full or await db.read(vault_store.cursor) is None:
            raise BenchError("server: the first cycle was not a full one, or left no cursor")
        pages = [p for p in first.written if p.endswith(("_costs.md", "_audits.md"))]
        if len(pages) != 2:
            raise BenchError(f"server: the first cycle wrote {pages} of the two summary pages")
        print(
            f"server cycle, first sync of {n:,} tasks: {fig.first:.2f} s ({len(first.written):,} files, pushed;"
            f" the library's part {first.duration_s:.2f} s, the database's {fig.first - first.duration_s:.2f} s)"
        )
        prices, rnd = PriceTable.load(), random.Random(12)
        for r in range(1, rounds + 1):
            await update_tasks(tasks, n, r, status)
            await db.write(functools.partial(_record, new=_cost(prices, rnd, 1, int(time.time() * 1_000_000))))
            t0 = time.monotonic()
            res = await runner.run_once()
            fig.rounds.append(time.monotonic() - t0)
            check(res, f"server: incremental {r}", MOVED)
            task_files = [p for p in res.written if "/_" not in p]
            if len(task_files) != CHANGED or runner.last_full:
                raise BenchError(f"server: incremental {r} wrote {len(task_files)} task files, {CHANGED} expected")
            print(
                f"  incremental {r}: {fig.rounds[-1]:.3f} s ({len(res.written)} written: {len(task_files)} tasks"
                f" + {', '.join(p.rsplit('/', 1)[1] for p in res.written if '/_' in p) or 'no page'};"
                f" {len(res.moved)} moved; the library's part {res.duration_s:.3f} s)"
                f"  | git alone, {CHANGED} files: {floor.rounds[r - 1]:.3f} s"
            )
        return fig
    finally:
        await db.close()


async def run(tmp: Path, n: int, rounds: int) -> None:
    lib, floor = await library(tmp, n, rounds)
    srv = await server(tmp, n, rounds, floor)

    def rounds_of(f: Figures) -> str:
        return ", ".join(f"{s:.3f}" for s in f.rounds)

    print(f"\nvault sync, {n:,} tasks, {CHANGED} changed ({MOVED} move folder) per incremental cycle:")
    print("| measurement | library | server cycle | git alone | target | result (server cycle) |")
    print("|---|--:|--:|--:|---|---|")
    print(
        f"| first sync | {lib.first:.2f} s | {srv.first:.2f} s | {floor.first:.2f} s | <= {FIRST_TARGET_S:g} s"
        f" | {verdict(srv.first, FIRST_TARGET_S)} |"
    )
    print(
        f"| incremental, median of {rounds} | {lib.incremental:.3f} s | {srv.incremental:.3f} s"
        f" | {floor.incremental:.3f} s | <= {INCREMENTAL_TARGET_S:g} s"
        f" | {verdict(srv.incremental, INCREMENTAL_TARGET_S)} |"
    )
    print(f"rounds: library {rounds_of(lib)}; server cycle {rounds_of(srv)}; git alone {rounds_of(floor)}")
    # The lines bench/state_store_bench.py reads: keep their form.
    print(
        f"server cycle first sync: {srv.first:.3f} s (target <= {FIRST_TARGET_S:g} s:"
        f" {verdict(srv.first, FIRST_TARGET_S)})"
    )
    print(
        f"server cycle incremental sync: {srv.incremental:.3f} s (target <= {INCREMENTAL_TARGET_S:g} s:"
        f" {verdict(srv.incremental, INCREMENTAL_TARGET_S)})"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--tasks", type=int, help="tasks to sync (default 10,000; --quick 2,000)")
    p.add_argument("--rounds", type=int, help="incremental cycles (default 3; --quick 2)")
    p.add_argument("--quick", action="store_true", help="2,000 tasks, 2 incremental cycles: a smoke run")
    args = p.parse_args(argv)
    n = args.tasks if args.tasks is not None else (2000 if args.quick else 10_000)
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 3)
    if n < 100 or rounds < 1:
        p.error("--tasks must be at least 100 and --rounds at least 1")
    if shutil.which("git") is None:
        print("missing: git (sudo apt-get install -y git)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="lobwife-vault-bench-"))
    try:
        asyncio.run(run(tmp, n, rounds))
    except (BenchError, subprocess.CalledProcessError, OSError) as e:
        print(f"\nbench failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        # Removed once asyncio.run has returned: it waits for the loop's worker threads, and a sync
        # cut short may still be writing files from one of them (a removal then leaves the folder).
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
