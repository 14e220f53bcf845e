"""IssueTaskToken's write as a batch kind: tokens that meet in one commit are counted and audited with a few
multi-row statements, and leave the database and the task cache exactly as the same tokens one by one.
Real SQLite file, the real TaskService and the GitHub stand-in."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from lobwife.v1 import broker_pb2, tasks_pb2
from lobwife_server.broker.github import GitHubAppConfig, InstallationToken
from lobwife_server.broker.service import token_digest
from lobwife_server.broker.settings import BrokerSettings
from lobwife_server.broker.token_cache import TokenCache, cache_key
from lobwife_server.core.timeutil import from_us, now_us, to_us
from lobwife_server.storage import broker_store, migrations, task_store
from lobwife_server.storage.database import BatchKind
from lobwife_server.tasks.cache import TaskCache
from tests.fakes.github import FakeGitHub
from tests.unit.broker.test_service import Env, ctx, error_of, make, new_task, register, token


@pytest.fixture
async def env(tmp_path: Path, config: GitHubAppConfig, gh: FakeGitHub) -> AsyncIterator[Env]:
    async for e in make(tmp_path / "a", BrokerSettings(github=config, github_timeout=3.0), gh):
        yield e


def spy_batches(e: Env) -> list[int]:
    """The sizes of the groups the issue kind's ``many`` ran (a group of one is ``one``)."""
    sizes: list[int] = []
    kind = e.broker._issue_kind

    def many(conn: Any, items: list[Any]) -> list[bool]:
        sizes.append(len(items))
        return kind.many(conn, items)

    e.broker._issue_kind = BatchKind(kind.one, many)
    return sizes


async def setup(e: Env) -> dict[str, int]:
    """Tasks T1, T2 (T2 registered twice: as T2 and by its slug) and a registration of no task."""
    one = await new_task(e, name="one")
    two = await new_task(e, name="two", slug="two-slug")
    await register(e, f"T{one}", ["lobmob/repo1"])
    await register(e, f"T{two}", ["lobmob/repo2"])
    await register(e, "two-slug", ["lobmob/repo2"])
    await register(e, "loose", ["lobmob/repo3"])
    for ref in (f"T{one}", f"T{two}", "two-slug", "loose"):
        await token(e, ref)  # fills the token cache: the calls below are all hits
    return {"one": one, "two": two}


async def state(e: Env, numbers: dict[str, int]) -> dict[str, Any]:
    """What the tokens change, with each token's digest by its order of first appearance."""
    regs = await e.db.read(broker_store.list_registrations)
    rows = await e.db.read(lambda c: broker_store.list_audit(c, None, None, 1000))
    names: dict[str, str] = {}
    audit = [
        (r.task_id, r.action, r.identity, names.setdefault(r.token_sha256, f"token{len(names)}"), r.reused, r.detail)
        for r in reversed(rows)
    ]
    tasks = {}
    for name, number in numbers.items():
        stored = await e.db.read(lambda c, n=number: task_store.get_task(c, n))  # type: ignore[misc]
        assert stored is not None
        tasks[name] = stored.token_count
    events = await e.db.read(lambda c: c.execute("SELECT COUNT(*) FROM task_events").fetchone()[0])
    return {
        "registrations": {r.ref: (r.token_count, r.status) for r in regs},
        "audit": audit,
        "tasks": tasks,
        "events": events,
    }


async def cached_equals_stored(e: Env, number: int) -> tasks_pb2.Task:
    """GetTask (the write-through cache) answers exactly the stored row; returns it."""
    resp = await e.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=f"T{number}"), ctx("GetTask"))
    shown = resp.to_message().task  # type: ignore[attr-defined]
    stored = await e.db.read(lambda c: task_store.get_task(c, number))
    assert shown == stored
    return stored  # type: ignore[return-value]


async def test_a_batch_of_tokens_leaves_what_the_same_tokens_one_by_one_leave(
    tmp_path: Path, config: GitHubAppConfig, gh: FakeGitHub
) -> None:
    rng = random.Random(7)
    settings = BrokerSettings(github=config, github_timeout=3.0)
    async for seq in make(tmp_path / "seq", settings, gh):
        async for par in make(tmp_path / "par", settings, gh):
            numbers = await setup(seq)
            assert await setup(par) == numbers
            refs = [f"T{numbers['one']}", f"T{numbers['two']}", "two-slug", "loose"]
            calls = [(rng.choice(refs), rng.choice([None, "w1", "w2"])) for _ in range(120)]
            task_of = {refs[0]: numbers["one"], refs[1]: numbers["two"], refs[2]: numbers["two"]}
            before = {n: await cached_equals_stored(par, n) for n in numbers.values()}
            events = (await state(par, numbers))["events"]
            for ref, who in calls:
                await token(seq, ref, subject=who)
            sizes = spy_batches(par)
            got = await asyncio.gather(*(token(par, ref, subject=who) for ref, who in calls))
            assert all(g.token for g in got)
            assert max(sizes) > 1, f"no batch formed: {sizes}"  # else this test shows nothing
            assert sum(sizes) == len(calls)
            after = await state(par, numbers)
            assert after == await state(seq, numbers)
            assert after["events"] == events  # no task event per token
            assert sum(after["registrations"][r][0] for r in refs) == len(calls) + len(refs)
            for number in numbers.values():
                shown = await cached_equals_stored(par, number)
                n = sum(1 for ref, _ in calls if task_of.get(ref) == number)
                assert n and shown.token_count == before[number].token_count + n
                assert to_us(shown.updated_at) >= to_us(before[number].updated_at) + n


async def test_tokens_of_a_registration_ended_while_github_was_asked_are_refused_in_their_batch(
    env: Env, gh: FakeGitHub
) -> None:
    number = await new_task(env, name="kept")
    await register(env, "gone", ["lobmob/repo4"])
    await register(env, f"T{number}", ["lobmob/repo4"])  # the same scope: one GitHub call for both
    sizes = spy_batches(env)
    before = await cached_equals_stored(env, number)
    gh.delay = 0.5
    try:
        calls = [asyncio.ensure_future(token(env, ref)) for ref in ["gone", f"T{number}"] * 3]
        await asyncio.sleep(0.2)  # every call is waiting for GitHub's answer
        assert gh.in_flight == 1
        await env.broker.DeregisterTask(broker_pb2.DeregisterTaskRequest(task_id="gone"), ctx("DeregisterTask"))
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        gh.delay = 0.0
    assert gh.calls_of("access_tokens") == 1
    denied, issued = results[0::2], results[1::2]
    for err in denied:
        assert getattr(err, "code", None) == grpc.StatusCode.PERMISSION_DENIED
        assert "ended while the token was fetched" in err.message  # type: ignore[union-attr]
    assert all(isinstance(r, broker_pb2.IssueTaskTokenResponse) and r.token for r in issued)
    assert max(sizes) > 1, f"no batch formed: {sizes}"
    digest = token_digest(issued[0].token)  # type: ignore[union-attr]
    rows = list(reversed(await env.db.read(lambda c: broker_store.list_audit(c, None, None, 100))))
    last = [(r.task_id, r.action, r.token_sha256, r.detail) for r in rows[-6:]]
    assert (
        last
        == [
            ("gone", "token_denied", digest, "not registered"),
            (f"T{number}", "token_issued", digest, ""),
        ]
        * 3
    )
    assert await env.db.read(lambda c: broker_store.get_registration(c, "gone")) is None
    kept = await env.db.read(lambda c: broker_store.get_registration(c, f"T{number}"))
    assert kept is not None and kept.token_count == 3 and kept.last_used_at is not None
    after = await cached_equals_stored(env, number)
    assert after.token_count == before.token_count + 3  # the refused tokens counted nowhere
    # A finished task's token is still refused, and its registration ended (the status from the cache).
    await env.tasks.CancelTask(tasks_pb2.CancelTaskRequest(task_id=f"T{number}"), ctx("CancelTask"))
    err = await error_of(token(env, f"T{number}"))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED and "finished" in err.message


async def test_the_task_cache_follows_a_token_count_whatever_it_held() -> None:
    cache = TaskCache()
    task = tasks_pb2.Task(id=5, task_id="T5", name="five", token_count=2, status=tasks_pb2.TASK_STATUS_ACTIVE)
    task.updated_at.FromMicroseconds(1_000)
    cache.put(task)
    assert cache.status(5) == tasks_pb2.TASK_STATUS_ACTIVE and cache.status(6) is None
    cache.put_token_count(5, 3, 1_001)  # the version just before: made from it
    got = cache.get(5)
    assert got is not None and (got.token_count, to_us(got.updated_at), got.name) == (3, 1_001, "five")
    assert cache.get_bytes(5) == got.SerializeToString()
    assert cache.peek_bytes(5, 1_001) is not None and cache.peek_bytes(5, 1_000) is None
    newer = tasks_pb2.Task()
    newer.CopyFrom(got)
    newer.status = tasks_pb2.TASK_STATUS_COMPLETED
    newer.updated_at.FromMicroseconds(1_005)
    cache.put(newer)
    cache.put_token_count(5, 3, 1_001)  # the cache already holds a newer version: left alone
    assert cache.get(5) == newer
    # Not cached: nothing put, and a read that began before the commit may not fill its older version.
    mark = cache.mark()
    cache.put_token_count(7, 1, 2_000)
    assert cache.get(7) is None
    old = tasks_pb2.Task(id=7, task_id="T7", token_count=0)
    old.updated_at.FromMicroseconds(1_999)
    cache.fill(old, mark)
    assert cache.get(7) is None
    cache.fill(old, cache.mark())  # a read begun after it may
    assert cache.get(7) is not None


def test_add_tokens_is_add_token_n_times(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    migrations.migrate(conn)
    now = now_us()
    first = task_store.insert_rows(conn, "tasks", ["name", "created_at", "updated_at"], [("t", now, now)] * 4)
    ids = [first + i for i in range(4)]
    # Stamps before and after the rows' own updated_at: MAX picks one or the other.
    for at in (now - 10, now + 1_000):
        for number in ids[:2]:
            for _ in range(3 if number == ids[0] else 1):
                task_store.add_token(conn, number, at)
        got = task_store.add_tokens(conn, [(ids[2], 3), (ids[3], 1), (999, 2)], at)
        rows = {r[0]: r[1:] for r in conn.execute("SELECT id, token_count, updated_at FROM tasks")}
        assert rows[ids[2]] == rows[ids[0]] and rows[ids[3]] == rows[ids[1]]
        assert sorted(got) == sorted([(ids[2], *rows[ids[2]]), (ids[3], *rows[ids[3]])])  # no task 999
    assert task_store.add_tokens(conn, [], now) == []


def test_count_tokens_counts_active_registrations_only(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    migrations.migrate(conn)
    for ref in ("a", "b", "c"):
        broker_store.upsert_registration(conn, ref, ["lobmob/repo1"], "swe", None, "test", 100)
    conn.execute("UPDATE broker_tasks SET status = 'expired' WHERE task_id = 'b'")
    assert broker_store.count_tokens(conn, [("a", 3, 500), ("b", 2, 600), ("c", 1, 700), ("zz", 1, 1)]) == {"a", "c"}
    assert broker_store.count_tokens(conn, [("a", 1, 800)]) == {"a"}
    assert broker_store.count_tokens(conn, []) == set()
    regs = {r.ref: (r.token_count, r.last_used_at, r.status) for r in broker_store.list_registrations(conn)}
    assert regs == {"a": (4, 800, "active"), "b": (0, 100, "expired"), "c": (1, 700, "active")}


def test_insert_audits_is_insert_audit_for_each(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    migrations.migrate(conn)
    now = now_us()
    rows = [
        broker_store.NewAudit("T1", ["lobmob/repo1"], "token_issued", now, "w", "abc", True),
        broker_store.NewAudit("T2", None, "token_denied", now - now % 1_000_000, None, "def", False, "not registered"),
        broker_store.NewAudit("T1", ("lobmob/repo1",), "token_issued", now + 1, "w", "abc", False),
    ]
    first = broker_store.insert_audits(conn, rows)
    for r in rows:
        broker_store.insert_audit(
            conn, r.task_id, r.repos, r.action, r.now,
            identity=r.identity, token_sha256=r.token_sha256, reused=r.reused, detail=r.detail,
        )  # fmt: skip
    stored = conn.execute("SELECT * FROM token_audit ORDER BY id").fetchall()
    assert [r[0] for r in stored[:3]] == [first, first + 1, first + 2]
    assert [r[1:] for r in stored[:3]] == [r[1:] for r in stored[3:]]


def test_stamp_text_is_the_isoformat_of_the_time() -> None:
    rng = random.Random(3)
    now = now_us()
    values = [0, 1, -1, 999_999, 1_000_000, now, now - now % 1_000_000, now + 1]
    values += [rng.randrange(-(10**15), 4 * 10**15) for _ in range(5_000)]
    values += [now + rng.randrange(0, 3_000_000) for _ in range(1_000)]  # many in the same second
    for us in values:
        assert broker_store.stamp_text(us) == from_us(us).isoformat(), us


async def test_a_cache_hit_is_synchronous_with_its_digest_and_expiry_made_once() -> None:
    clock = [1_000.0]
    cache = TokenCache(clock=lambda: clock[0])
    key = cache_key(1001, ["lobmob/repo1"], {"contents": "write"})
    expires = datetime(2026, 12, 1, 12, 0, 5, 250, tzinfo=UTC)
    value = "ghs_" + "x" * 36

    async def fetch() -> InstallationToken:
        return InstallationToken(value, expires, ("lobmob/repo1",), {"contents": "write"})

    clock[0] = expires.timestamp() - 3600
    assert cache.lookup(key, "T1") is None  # nothing kept: get() fetches
    await cache.get(key, fetch)
    hit = cache.lookup(key, "T1")
    assert hit is not None and hit.token.token == value and cache.hits == 1
    assert hit.sha256 == token_digest(value)
    stamp = Timestamp()
    stamp.FromDatetime(expires)
    assert hit.expires_us == to_us(stamp)
    assert cache.lookup(key, "T2") is hit  # made once per token
    assert cache.holders(key) == {"T1", "T2"} and cache.hits == 2
    assert value not in repr(hit)
    clock[0] = expires.timestamp() - 299  # within the refresh margin: no longer handed out
    assert cache.lookup(key) is None and cache.hits == 2
