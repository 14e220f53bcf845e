"""BrokerService in process, over a real SQLite file, the real TaskService and the GitHub stand-in."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import grpc
import pytest

from lobwife.v1 import broker_pb2, tasks_pb2
from lobwife_server.api.rpc import CallContext
from lobwife_server.broker.github import GitHubApp, GitHubAppConfig
from lobwife_server.broker.service import BrokerService, token_digest
from lobwife_server.broker.settings import BrokerSettings
from lobwife_server.core.errors import ApiError
from lobwife_server.core.timeutil import now_us
from lobwife_server.storage import migrations
from lobwife_server.storage.database import Database
from lobwife_server.tasks.service import TaskService
from tests.fakes.github import FakeGitHub


@dataclasses.dataclass
class Env:
    db: Database
    tasks: TaskService
    broker: BrokerService
    gh: FakeGitHub


def ctx(method: str = "IssueTaskToken", subject: str | None = None) -> CallContext:
    c = CallContext(f"/lobwife.v1.BrokerService/{method}", "grpc", dict, peer="ipv4:127.0.0.1:4000")
    if subject is not None:
        c.identity = SimpleNamespace(subject=subject, role=SimpleNamespace(value="task"))
    return c


def _migrate(conn: Any) -> None:
    migrations.migrate(conn)


async def make(tmp_path: Path, settings: BrokerSettings, gh: FakeGitHub) -> AsyncIterator[Env]:
    db = Database(tmp_path / "lobwife.db", commit_delay=0)
    await db.open(_migrate)
    tasks = await TaskService.create(db)
    app = GitHubApp(settings.github, backoff_base=0.01, backoff_max=0.05) if settings.github else None
    broker = await BrokerService.create(db, settings, tasks.tokens, tasks=tasks, github=app)
    try:
        yield Env(db, tasks, broker, gh)
    finally:
        await broker.close()
        await db.close()


@pytest.fixture
async def env(tmp_path: Path, config: GitHubAppConfig, gh: FakeGitHub) -> AsyncIterator[Env]:
    async for e in make(tmp_path, BrokerSettings(github=config, github_timeout=3.0), gh):
        yield e


async def error_of(call: Awaitable[Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        await call
    return info.value


async def register(e: Env, ref: str, repos: list[str], lobster_type: str = "swe") -> None:
    req = broker_pb2.RegisterTaskRequest(task_id=ref, repos=repos, lobster_type=lobster_type)
    resp = await e.broker.RegisterTask(req, ctx("RegisterTask", "lobboss"))
    assert (resp.status, resp.task_id) == ("registered", ref)


async def token(e: Env, ref: str, subject: str | None = None) -> broker_pb2.IssueTaskTokenResponse:
    return await e.broker.IssueTaskToken(broker_pb2.IssueTaskTokenRequest(task_id=ref), ctx(subject=subject))


async def audit(e: Env, ref: str = "", size: int = 0) -> list[broker_pb2.TokenAuditEntry]:
    req = broker_pb2.ListTokenAuditRequest(task_id=ref, page_size=size)
    return list((await e.broker.ListTokenAudit(req, ctx("ListTokenAudit"))).entries)


async def stored(e: Env) -> tuple[Any, ...]:
    """Everything the broker keeps, to show that a refused call changed none of it."""
    regs = await e.broker.ListRegistrations(broker_pb2.ListRegistrationsRequest(), ctx("ListRegistrations"))
    tasks = await e.db.read(lambda c: c.execute("SELECT * FROM tasks ORDER BY id").fetchall())
    events = await e.db.read(lambda c: c.execute("SELECT * FROM task_events ORDER BY id").fetchall())
    return regs.SerializeToString(deterministic=True), await audit(e), tasks, events


async def new_task(e: Env, **fields: Any) -> int:
    resp = await e.tasks.CreateTask(tasks_pb2.CreateTaskRequest(**fields), ctx("CreateTask"))
    return int(resp.to_message().task.id)  # type: ignore[attr-defined]


async def repositories_seen_by(gh: FakeGitHub, value: str) -> list[str]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(gh.url + "/installation/repositories", headers={"Authorization": f"token {value}"}) as r,
    ):
        assert r.status == 200, await r.text()
        return [x["full_name"] for x in (await r.json())["repositories"]]


async def test_a_token_is_scoped_audited_before_it_is_returned_and_reused_from_the_cache(env: Env) -> None:
    await register(env, "T42", ["lobmob/repo1", "lobmob/repo2"])
    first = await token(env, "T42", subject="worker-1")
    assert first.token.startswith("ghs_") and first.expires_at.seconds > time.time() + 3000
    assert list(first.repos) == ["lobmob/repo1", "lobmob/repo2"]
    assert await repositories_seen_by(env.gh, first.token) == ["lobmob/repo1", "lobmob/repo2"]
    assert env.gh.token_requests[-1]["permissions"] == {
        "contents": "write",
        "pull_requests": "write",
        "metadata": "read",
    }
    again = await token(env, "T42")
    assert again.token == first.token and env.gh.calls_of("access_tokens") == 1
    entries = await audit(env, "T42")
    assert [(x.action, x.reused) for x in entries] == [
        ("token_issued", True),
        ("token_issued", False),
        ("task_registered", False),
    ]
    assert entries[1].identity == "task:worker-1" and entries[0].identity == "anonymous@ipv4:127.0.0.1:4000"
    assert entries[2].identity == "task:lobboss"
    assert entries[0].token_sha256_prefix == entries[1].token_sha256_prefix == token_digest(first.token)
    assert list(entries[0].repos) == ["lobmob/repo1", "lobmob/repo2"]
    regs = (await env.broker.ListRegistrations(broker_pb2.ListRegistrationsRequest(), ctx())).registrations
    assert regs["T42"].token_count == 2 and regs["T42"].status == "active" and regs["T42"].last_used_at.seconds
    summary = await env.broker.summary()
    assert (summary.enabled, summary.app_id, summary.active_tasks, summary.total_tokens_issued) == (True, "4242", 1, 2)
    assert summary.audit_entries == 3


async def test_tasks_sharing_a_repository_set_share_one_github_call(env: Env) -> None:
    sets = [[f"lobmob/repo{i}", f"lobmob/repo{i + 10}"] for i in range(10)]
    for t in range(100):
        await register(env, f"worker-{t}", sets[t % 10])
    env.gh.reset_calls()
    for _ in range(10):
        got = await asyncio.gather(*(token(env, f"worker-{t}") for t in range(100)))
        assert len({g.token for g in got}) == 10
    assert env.gh.calls_of("access_tokens") == 10
    assert len(await audit(env, "worker-7", 1000)) == 11  # its registration and its ten tokens


async def test_registering_a_reference_that_names_a_task_sets_its_broker_fields(env: Env) -> None:
    n1 = await new_task(env, name="fix the build", slug="fix-build")
    n2 = await new_task(env, name="other", assigned_to="lobster-abc")
    for ref, number in (("T1", n1), ("fix-build", n1), ("lobster-abc", n2), ("fix the build", n1)):
        await register(env, ref, ["lobmob/repo3"])
        task = await env.db.read(
            lambda c, n=number: c.execute(  # type: ignore[misc]
                "SELECT broker_repos, broker_status FROM tasks WHERE id = ?", (n,)
            ).fetchone()
        )
        assert task == ('["lobmob/repo3"]', "active")
        regs = (await env.broker.ListRegistrations(broker_pb2.ListRegistrationsRequest(), ctx())).registrations
        assert regs[ref].task == f"T{number}"
    events = await env.db.read(lambda c: c.execute("SELECT task_id, event_type, actor FROM task_events").fetchall())
    assert events.count((n1, "broker_registered", "lobboss")) == 3
    # A reference that names no task is kept on its own, as the old daemon kept it.
    await register(env, "nobody-knows", ["lobmob/repo4"])
    regs = (await env.broker.ListRegistrations(broker_pb2.ListRegistrationsRequest(), ctx())).registrations
    assert regs["nobody-knows"].task == "" and list(regs["nobody-knows"].repos) == ["lobmob/repo4"]
    assert (await token(env, "nobody-knows")).token


async def test_a_finished_task_cannot_register_and_nothing_is_stored(env: Env) -> None:
    number = await new_task(env, name="done", status=tasks_pb2.TASK_STATUS_COMPLETED)
    before = await stored(env)
    err = await error_of(register(env, f"T{number}", ["lobmob/repo1"]))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION and "completed" in err.message
    assert await stored(env) == before


@pytest.mark.parametrize(
    ("repos", "ref", "field"),
    [
        ([], "T9", "repos"),
        ([f"lobmob/r{i}" for i in range(501)], "T9", "repos"),
        (["lobmob/../x"], "T9", "repos[0]"),
        (["lobmob/ok", "owner/../x"], "T9", "repos[1]"),
        (["lobmob/repo1", "someone-else/repo1"], "T9", "repos[1]"),
        (["lobmob/" + "x" * 10_000], "T9", "repos[0]"),
        (["lobmob/repo1"], "x" * 10_000, "task_id"),
        (["lobmob/repo1"], "bad\x00ref", "task_id"),
    ],
)
async def test_bad_registrations_name_the_field_and_store_nothing(
    env: Env, repos: list[str], ref: str, field: str
) -> None:
    before = await stored(env)
    err = await error_of(register(env, ref, repos))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in err.violations] == [field], err.message
    assert len(err.message) < 400
    assert await stored(env) == before


async def test_500_repositories_are_taken(env: Env) -> None:
    env.gh.installations[1001].repositories.extend(f"r{i}" for i in range(500))
    repos = [f"lobmob/r{i}" for i in range(500)]
    await register(env, "big", repos)
    assert len((await token(env, "big")).repos) == 500


async def test_tokens_are_refused_to_unregistered_deregistered_expired_and_finished_tasks(env: Env) -> None:
    err = await error_of(token(env, "T404"))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED and "not registered" in err.message
    # Deregistered: refused, and its cached token revoked at GitHub (no other registration shares it).
    await register(env, "w1", ["lobmob/repo1"])
    await register(env, "w2", ["lobmob/repo1"])
    await register(env, "w3", ["lobmob/repo2"])
    shared, alone = (await token(env, "w1")).token, (await token(env, "w3")).token
    assert (await token(env, "w2")).token == shared
    await env.broker.DeregisterTask(broker_pb2.DeregisterTaskRequest(task_id="w1"), ctx("DeregisterTask"))
    await env.broker.DeregisterTask(broker_pb2.DeregisterTaskRequest(task_id="w3"), ctx("DeregisterTask"))
    assert (await error_of(token(env, "w1"))).code == grpc.StatusCode.PERMISSION_DENIED
    assert (await token(env, "w2")).token == shared  # still held by w2: not revoked under it
    await asyncio.wait(env.broker._background, timeout=5) if env.broker._background else None
    assert alone not in env.gh.live_tokens() and shared in env.gh.live_tokens()
    revoked = [x for x in await audit(env, "w3") if x.action == "token_revoked"]
    assert len(revoked) == 1 and revoked[0].token_sha256_prefix == token_digest(alone)
    assert "revoked" in revoked[0].detail
    # A finished task: refused at its next request, its registration ended.
    number = await new_task(env, name="t")
    await register(env, f"T{number}", ["lobmob/repo5"])
    assert (await token(env, f"T{number}")).token
    await env.tasks.CancelTask(tasks_pb2.CancelTaskRequest(task_id=f"T{number}"), ctx("CancelTask"))
    err = await error_of(token(env, f"T{number}"))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED and "finished" in err.message
    assert (await error_of(token(env, f"T{number}"))).code == grpc.StatusCode.PERMISSION_DENIED
    await asyncio.wait(env.broker._background, timeout=5) if env.broker._background else None
    actions = [x.action for x in await audit(env, f"T{number}")]
    # The revocation of its token is audited in the background, so its place among the others varies.
    assert sorted(actions) == sorted(
        ["token_denied", "token_denied", "token_revoked", "task_deregistered", "token_issued", "task_registered"]
    )
    assert actions[-2:] == ["token_issued", "task_registered"]


async def test_idle_registrations_expire(tmp_path: Path, config: GitHubAppConfig, gh: FakeGitHub) -> None:
    async for e in make(tmp_path, BrokerSettings(github=config, idle_ttl=3600.0), gh):
        await register(e, "idle", ["lobmob/repo1"])
        await register(e, "busy", ["lobmob/repo2"])
        await register(e, "legacy", ["lobmob/repo3"])
        await token(e, "idle")
        await token(e, "busy")
        hours_ago = now_us() - 2 * 3600 * 1_000_000
        await e.db.write(
            lambda c, w, at=hours_ago: c.execute(  # type: ignore[misc]
                "UPDATE broker_tasks SET last_used_at = ? WHERE task_id = 'idle'", (at,)
            )
        )
        # The old daemon's rows have no last_used_at: idle since their registered_at (its text).
        await e.db.write(
            lambda c, w: c.execute(
                "UPDATE broker_tasks SET last_used_at = NULL, registered_at = '2020-01-01 00:00:00'"
                " WHERE task_id = 'legacy'"
            )
        )
        job, run = e.broker.expiry_job()
        assert job.name == "lobwife-broker-expire" and job.interval.seconds == 600
        assert await run() == "expired 2 registration(s) idle for more than 3600 s"
        assert (await error_of(token(e, "legacy"))).code == grpc.StatusCode.PERMISSION_DENIED
        assert (await error_of(token(e, "idle"))).code == grpc.StatusCode.PERMISSION_DENIED
        assert (await token(e, "busy")).token
        regs = (await e.broker.ListRegistrations(broker_pb2.ListRegistrationsRequest(), ctx())).registrations
        assert regs["idle"].status == "expired" and regs["busy"].status == "active"
        actions = [x.action for x in await audit(e, "idle")]
        assert actions[0] == "token_denied" and "registration_expired" in actions


async def test_not_configured_answers_unavailable(tmp_path: Path, gh: FakeGitHub) -> None:
    async for e in make(tmp_path, BrokerSettings(), gh):
        await register(e, "T1", ["lobmob/repo1"])  # registration works without GitHub
        for call in (
            token(e, "T1"),
            e.broker.IssueServiceToken(broker_pb2.IssueServiceTokenRequest(service="lobboss"), ctx()),
        ):
            err = await error_of(call)
            assert err.code == grpc.StatusCode.UNAVAILABLE and "not configured" in err.message
        s = await e.broker.summary()
        assert (s.enabled, s.HasField("app_id"), s.active_tasks) == (False, False, 1)


async def test_service_tokens_cover_the_installation_and_are_audited(env: Env) -> None:
    resp = await env.broker.IssueServiceToken(broker_pb2.IssueServiceTokenRequest(service="lobboss"), ctx())
    assert len(await repositories_seen_by(env.gh, resp.token)) == 21
    entry = (await audit(env, "lobboss"))[0]
    assert (entry.action, entry.token_sha256_prefix) == ("service_token_issued", token_digest(resp.token))
    err = await error_of(env.broker.IssueServiceToken(broker_pb2.IssueServiceTokenRequest(service="x" * 300), ctx()))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.violations[0][0] == "service"


async def test_github_failures_are_clear_and_leave_no_audit_of_a_token(env: Env) -> None:
    await register(env, "T1", ["lobmob/repo1"])
    await register(env, "T2", ["lobmob/repo2"])
    await register(env, "T3", ["lobmob/repo3"])
    await register(env, "ghost", ["lobmob/ghost-repo"])
    err = await error_of(token(env, "ghost"))  # GitHub's 422
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION and "lobmob/ghost-repo" in err.message
    env.gh.garbage_next(5, endpoint="access_tokens")
    err = await error_of(token(env, "T1"))
    assert err.code == grpc.StatusCode.UNAVAILABLE and "not a JSON object" in err.message
    env.gh.clear_faults()
    env.gh.delay = 10.0  # hanging
    t0 = time.monotonic()
    err = await error_of(token(env, "T2"))
    assert err.code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    assert time.monotonic() - t0 < 4.5  # the broker's GitHub timeout is 3 s here
    env.gh.delay = 0.0
    assert [x.action for x in await audit(env)].count("token_issued") == 0
    assert (await token(env, "T3")).token


async def test_the_audit_pages_newest_first(env: Env) -> None:
    await register(env, "T1", ["lobmob/repo1"])
    for _ in range(5):
        await token(env, "T1")
    seen: list[str] = []
    page_token = ""
    while True:
        req = broker_pb2.ListTokenAuditRequest(task_id="T1", page_size=2, page_token=page_token)
        resp = await env.broker.ListTokenAudit(req, ctx("ListTokenAudit"))
        seen += [x.action for x in resp.entries]
        if not resp.next_page_token:
            break
        page_token = resp.next_page_token
    assert seen == ["token_issued"] * 5 + ["task_registered"]
    other = broker_pb2.ListTokenAuditRequest(task_id="T2", page_token=page_token or "x")
    assert (await error_of(env.broker.ListTokenAudit(other, ctx()))).code == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_cached_token_costs_little(env: Env) -> None:
    await register(env, "T1", ["lobmob/repo1"])
    await token(env, "T1")
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n // 64):
        await asyncio.gather(*(token(env, "T1") for _ in range(64)))
    per_call = (time.perf_counter() - t0) / (n // 64 * 64)
    assert env.gh.calls_of("access_tokens") == 1
    assert per_call < 0.002, f"{per_call * 1e6:.0f} µs a cached token"
