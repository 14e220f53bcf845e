"""The scheduler's stop on a real database: a slot recorded as the server stops is ended, not left open."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lobwife_server.jobs import jobs_file
from lobwife_server.jobs.scheduler import Scheduler
from lobwife_server.storage import migrations
from lobwife_server.storage.database import Database


async def test_a_slot_recorded_as_the_server_stops_is_ended_not_left_pending(tmp_path: Path) -> None:
    # CI's kill -9 loop saw one run per job left ``pending`` after a clean stop: their timers had
    # recorded the slot, stop() did not wait for them, and the runs were spawned after it returned.
    marker = tmp_path / "ran"
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(f'[jobs.tick]\nevery = "1h"\ncommand = ["touch", "{marker}"]\n')
    db = Database(tmp_path / "lobwife.db")
    await db.open(migrations.migrate)
    sched = Scheduler(db, url="http://127.0.0.1:9")
    try:
        await sched.start(jobs_file.load(jobs))
        slot = sched.jobs["tick"].next_fire_at
        assert slot is not None
        firing = asyncio.create_task(sched._on_timer("tick", slot))
        await asyncio.sleep(0)  # the firing is now inside its write
        await sched.stop(grace=5)
        assert firing.done(), "stop() returned with a timer still recording its slot"
        runs = await sched.list_runs("tick", None, 10)
        assert [(r.status, r.reason, r.scheduled_at) for r in runs] == [
            ("abandoned", "not started: lobwife shutting down", slot)
        ]
        assert not marker.exists()  # the command never ran
    finally:
        await db.close()
