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


def builtin_jobs(db: Database, state_dir: Path, cfg: MaintenanceConfig) -> dict[str, tuple[jobs_pb2.Job, Builtin]]:
    async def backup() -> str:
        return await db.backup(state_dir / "backups", cfg.backup_keep)

    async def prune() -> str:
        cutoff = now_us() - int(cfg.run_retention_days * 86400 * 1_000_000)
        n = await db.write(lambda c, w: job_store.prune_runs(c, older_than=cutoff, keep_per_job=cfg.runs_kept_per_job))
        return (
            f"deleted {n} finished run(s) older than {cfg.run_retention_days:g} days or beyond "
            f"the newest {cfg.runs_kept_per_job} per job"
        )

    async def checkpoint() -> str:
        return await db.checkpoint()

    return {
        "lobwife-backup": (
            _job("lobwife-backup", f"Online database backup, keeping {cfg.backup_keep}", cron="17 3 * * *"),
            backup,
        ),
        "lobwife-prune": (_job("lobwife-prune", "Prune job run history and output", cron="23 * * * *"), prune),
        "lobwife-wal-checkpoint": (_job("lobwife-wal-checkpoint", "Passive WAL checkpoint", every=300), checkpoint),
    }
