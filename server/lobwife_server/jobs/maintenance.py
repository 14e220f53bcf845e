"""Built-in maintenance jobs, listed and run like any other job (source ``builtin``).

- ``lobwife-backup``: an online copy of the database with SQLite's backup API
  into ``<state>/backups``, keeping the newest ``keep`` copies.
- ``lobwife-prune``: deletes finished job runs (and their output) older than the
  retention age, and beyond the newest N per job.
- ``lobwife-wal-checkpoint``: a passive WAL checkpoint (never blocks writers),
  so the WAL file does not grow without bound between SQLite's own checkpoints.

Their schedules can be paused through the API like any job; the ``lobwife-``
prefix is reserved for them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import duration_pb2

from lobwife.v1 import jobs_pb2
from lobwife_server.core.timeutil import now_us
from lobwife_server.jobs.scheduler import Builtin
from lobwife_server.storage import job_store
from lobwife_server.storage.database import Database

RESERVED_PREFIX = "lobwife-"


@dataclass(frozen=True)
class MaintenanceConfig:
    """Bounds of the built-in maintenance jobs: backups kept, run history kept."""

    backup_keep: int = 7
    run_retention_days: float = 30.0
    runs_kept_per_job: int = 1000


def _job(name: str, description: str, *, cron: str | None = None, every: float | None = None) -> jobs_pb2.Job:
    job = jobs_pb2.Job(
        name=name,
        description=description,
        command=[f"builtin:{name}"],
        enabled=True,
        concurrency=jobs_pb2.CONCURRENCY_POLICY_FORBID,
        catch_up=jobs_pb2.CATCH_UP_POLICY_ONCE,
        source=jobs_pb2.JOB_SOURCE_BUILTIN,
    )
    job.timeout.CopyFrom(duration_pb2.Duration(seconds=1800))
    if cron is not None:
        job.cron = cron
    else:
        job.interval.CopyFrom(duration_pb2.Duration(seconds=int(every or 300)))
    return job


def backup_once(db_path: Path, dest_dir: Path, keep: int) -> str:
    dest_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = dest_dir / f"lobwife-{stamp}.db"
    tmp = dest.with_suffix(".db.partial")
    src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    out = sqlite3.connect(tmp)
    try:
        src.backup(out)  # consistent snapshot while the server keeps writing
    finally:
        src.close()
        out.close()
    tmp.rename(dest)
    copies = sorted(dest_dir.glob("lobwife-*.db"))
    removed = copies[:-keep] if keep > 0 else []
    for old in removed:
        old.unlink(missing_ok=True)
    return f"backed up to {dest} ({dest.stat().st_size} bytes); removed {len(removed)} old backup(s)"


def checkpoint_once(db_path: Path) -> str:
    conn = sqlite3.connect(db_path, timeout=5)
    try:
        busy, log_pages, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    return f"checkpointed {done} of {log_pages} WAL pages" + (" (readers kept some)" if busy else "")


def builtin_jobs(db: Database, state_dir: Path, cfg: MaintenanceConfig) -> dict[str, tuple[jobs_pb2.Job, Builtin]]:
    async def backup() -> str:
        return await asyncio.to_thread(backup_once, db.path, state_dir / "backups", cfg.backup_keep)

    async def prune() -> str:
        cutoff = now_us() - int(cfg.run_retention_days * 86400 * 1_000_000)
        n = await db.write(lambda c, w: job_store.prune_runs(c, older_than=cutoff, keep_per_job=cfg.runs_kept_per_job))
        return (
            f"deleted {n} finished run(s) older than {cfg.run_retention_days:g} days or beyond "
            f"the newest {cfg.runs_kept_per_job} per job"
        )

    async def checkpoint() -> str:
        return await asyncio.to_thread(checkpoint_once, db.path)

    return {
        "lobwife-backup": (
            _job("lobwife-backup", f"Online database backup, keeping {cfg.backup_keep}", cron="17 3 * * *"),
            backup,
        ),
        "lobwife-prune": (_job("lobwife-prune", "Prune job run history and output", cron="23 * * * *"), prune),
        "lobwife-wal-checkpoint": (_job("lobwife-wal-checkpoint", "Passive WAL checkpoint", every=300), checkpoint),
    }
