"""The tasks domain and the broker wired as app.py wires them (``tasks.broker = broker``), in process over
a real SQLite file and the GitHub stand-in: expiry reaching the task, the auth TaskDirectory's liveness
(from the cache and from the database), and a TaskService with no broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lobwife.v1 import broker_pb2, tasks_pb2
from lobwife_server.broker.github import GitHubAppConfig
from lobwife_server.broker.settings import BrokerSettings
from lobwife_server.core.timeutil import now_us
from lobwife_server.storage.database import Database
from lobwife_server.tasks.directory import TaskDirectory, task_is_live
from lobwife_server.tasks.service import TaskService
from tests.fakes.github import FakeGitHub
from tests.unit.broker.test_service import Env, ctx, make, new_task, token


@pytest.fixture
async def env(tmp_path: Path, config: GitHubAppConfig, gh: FakeGitHub) -> AsyncIterator[Env]:
    async for e in make(tmp_path, BrokerSettings(github=config, github_timeout=3.0, idle_ttl=3600.0), gh):
        e.tasks.broker = e.broker
        yield e


async def patch(e: Env, number: int, **fields: Any) -> tasks_pb2.UpdateTaskResponse:
    return await e.tasks.UpdateTask(tasks_pb2.UpdateTaskRequest(task_id=f"T{number}", **fields), ctx("UpdateTask"))


async def get(e: Env, number: int) -> tasks_pb2.Task:
    resp = await e.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=f"T{number}"), ctx("GetTask"))
    return resp.to_message().task  # type: ignore[attr-defined, no-any-return]


async def test_an_expired_registration_marks_its_task_expired(env: Env) -> None:
    n = await new_task(env, name="idle worker")
    await patch(env, n, broker_repos=["lobmob/repo1"])
    assert (await token(env, f"T{n}")).token
    assert (await get(env, n)).token_count == 1
    hours_ago = now_us() - 2 * 3600 * 1_000_000
    await env.db.write(
        lambda c, w: c.execute("UPDATE broker_tasks SET last_used_at = ? WHERE task_id = ?", (hours_ago, f"T{n}"))
    )
    assert await env.broker.expire() == [f"T{n}"]
    task = await get(env, n)
    assert task.broker_status == "expired"
    events = await env.tasks.ListTaskEvents(tasks_pb2.ListTaskEventsRequest(task_id=f"T{n}"), ctx())
    assert events.events[0].event_type == "broker_deregistered" and "expired" in events.events[0].detail
    assert not await TaskDirectory(env.tasks).is_live(n)  # its task credential is dead too


async def test_the_directory_says_live_from_the_cache_and_from_the_database(env: Env, tmp_path: Path) -> None:
    numbers = [await new_task(env, name=f"t{i}", assigned_to=f"pod-{i}") for i in range(4)]
    live, completed, deregistered, revoked = numbers
    for n in numbers:
        await patch(env, n, broker_repos=["lobmob/repo1"])
    await patch(env, completed, status=tasks_pb2.TASK_STATUS_COMPLETED)
    await patch(env, deregistered, broker_status="deregistered")
    await patch(env, revoked, broker_status="Revoked")  # a word of the old clients, any case
    want = {live: True, completed: False, deregistered: False, revoked: False, 999: False}
    cached = TaskDirectory(env.tasks)
    assert {n: await cached.is_live(n) for n in want} == want
    # A fresh service over the same database: nothing cached, each answer read from the database.
    cold = TaskDirectory(await TaskService.create(env.db))
    assert len(cold.tasks.cache) == 0  # type: ignore[arg-type]
    assert {n: await cold.is_live(n) for n in want} == want
    assert await cold.task_of_worker(["pod-0"]) == live
    assert await cold.task_of_worker(["pod-2"]) is None  # deregistered: no live task for the pod
    assert await cold.resolve("T7") == 7 and await cold.resolve("slug") is None


def test_task_is_live_reads_status_and_broker_status() -> None:
    assert task_is_live(tasks_pb2.Task(status=tasks_pb2.TASK_STATUS_ACTIVE))
    assert task_is_live(tasks_pb2.Task(status=tasks_pb2.TASK_STATUS_ACTIVE, broker_status="active"))
    assert not task_is_live(tasks_pb2.Task(status=tasks_pb2.TASK_STATUS_ACTIVE, broker_status="expired"))
    assert not task_is_live(tasks_pb2.Task(status=tasks_pb2.TASK_STATUS_CANCELLED))


async def test_without_a_broker_the_fields_are_stored_and_nothing_else(tmp_path: Path) -> None:
    db = Database(tmp_path / "alone.db", commit_delay=0)
    from lobwife_server.storage import migrations

    await db.open(migrations.migrate)
    try:
        tasks = await TaskService.create(db)
        resp = await tasks.CreateTask(tasks_pb2.CreateTaskRequest(name="t"), ctx("CreateTask"))
        n = resp.to_message().task.id  # type: ignore[attr-defined]
        req = tasks_pb2.UpdateTaskRequest(task_id=f"T{n}", broker_repos=["o/a"], broker_status="active")
        out = await tasks.UpdateTask(req, ctx("UpdateTask"))
        assert list(out.updated) == ["broker_repos", "broker_status", "broker_registered_at"]
        assert (list(out.task.broker_repos), out.task.broker_status) == (["o/a"], "active")
        assert await db.read(lambda c: c.execute("SELECT COUNT(*) FROM broker_tasks").fetchone()[0]) == 0
    finally:
        await db.close()


async def test_a_finished_task_is_told_to_the_broker_after_the_commit(env: Env) -> None:
    n = await new_task(env, name="t")
    await patch(env, n, broker_repos=["lobmob/repo2"])
    value = (await token(env, f"T{n}")).token
    await env.tasks.CancelTask(tasks_pb2.CancelTaskRequest(task_id=f"T{n}"), ctx("CancelTask"))
    for _ in range(3):  # the end, then the revocation it starts
        if env.broker._background:
            await asyncio.wait(env.broker._background, timeout=5)
    assert value not in env.gh.live_tokens()
    regs = await env.broker.ListRegistrations(broker_pb2.ListRegistrationsRequest(), ctx())
    assert dict(regs.registrations) == {}
    assert (await get(env, n)).broker_status == "deregistered"
