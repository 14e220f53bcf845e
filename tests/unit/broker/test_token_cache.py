"""The token cache over the real client and stand-in: one GitHub call per scope, shared in flight,
refreshed 5 minutes before expiry, failures not kept, holders released, bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from lobwife_server.broker.github import DEFAULT_PERMISSIONS, GitHubApp, GitHubAppConfig, InstallationToken
from lobwife_server.broker.token_cache import CacheKey, TokenCache, cache_key
from lobwife_server.core.errors import ApiError
from tests.fakes.github import FakeGitHub

INSTALLATION = 1001


def key_of(repos: list[str] | None) -> CacheKey:
    return cache_key(INSTALLATION, repos, DEFAULT_PERMISSIONS)


def fetcher(app: GitHubApp, repos: list[str] | None) -> Callable[[], Awaitable[InstallationToken]]:
    return lambda: app.create_installation_token(repos, DEFAULT_PERMISSIONS)


def test_the_key_ignores_order_and_case() -> None:
    a = cache_key(1, ["lobmob/B", "lobmob/a"], {"metadata": "read", "contents": "write"})
    b = cache_key(1, ["lobmob/a", "lobmob/b"], {"contents": "write", "metadata": "read"})
    assert a == b
    assert a != cache_key(2, ["lobmob/a", "lobmob/b"], {"contents": "write", "metadata": "read"})
    assert a != cache_key(1, ["lobmob/a", "lobmob/b"], {"contents": "read", "metadata": "read"})
    assert cache_key(1, None, {}) != cache_key(1, [], {})


async def test_10000_requests_over_100_tasks_and_10_repository_sets_cost_10_calls(
    app: GitHubApp, gh: FakeGitHub
) -> None:
    cache = TokenCache()
    sets = [[f"lobmob/repo{s}", f"lobmob/repo{s + 10}"] for s in range(10)]
    tasks = [(f"T{t}", sets[t % 10]) for t in range(100)]
    requests = [tasks[i % 100] for i in range(10_000)]
    reused = 0
    started = time.perf_counter()
    for batch in range(0, len(requests), 1000):  # concurrently, 1000 at a time
        results = await asyncio.gather(
            *(
                cache.get(key_of(repos), fetcher(app, repos), holder=task)
                for task, repos in requests[batch : batch + 1000]
            )
        )
        reused += sum(r for _, r in results)
    elapsed = time.perf_counter() - started
    print(f"\n10,000 token requests: {elapsed * 1000:.0f} ms, {gh.calls_of('access_tokens')} access_tokens calls")
    assert gh.calls_of("access_tokens") == 10
    assert gh.calls_of("installation") == 1
    assert reused == 10_000 - 10
    assert (cache.fetches, len(cache)) == (10, 10)
    assert cache.holders(key_of(sets[3])) == {f"T{t}" for t in range(3, 100, 10)}


async def test_concurrent_requests_for_one_scope_share_one_call(app: GitHubApp, gh: FakeGitHub) -> None:
    gh.delay = 0.2
    cache = TokenCache()
    repos = ["lobmob/repo1"]
    results = await asyncio.gather(*(cache.get(key_of(repos), fetcher(app, repos)) for _ in range(50)))
    assert gh.calls_of("access_tokens") == 1
    assert len({token.token for token, _ in results}) == 1
    assert [reused for _, reused in results].count(False) == 1  # the one that asked GitHub
    assert cache.joined == 49


async def test_a_failure_reaches_every_waiter_and_is_not_kept(config: GitHubAppConfig, gh: FakeGitHub) -> None:
    gh.delay = 0.1
    gh.fail_next(1, endpoint="access_tokens")
    cache = TokenCache()
    async with GitHubApp(config, max_attempts=1) as app:
        results = await asyncio.gather(
            *(cache.get(key_of(None), fetcher(app, None)) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, ApiError) and r.code is grpc.StatusCode.UNAVAILABLE for r in results)
        assert gh.calls_of("access_tokens") == 1
        assert len(cache) == 0
        _, reused = await cache.get(key_of(None), fetcher(app, None))
    assert reused is False
    assert gh.calls_of("access_tokens") == 2


async def test_a_cancelled_caller_does_not_cancel_the_shared_call(app: GitHubApp, gh: FakeGitHub) -> None:
    gh.delay = 0.3
    cache = TokenCache()
    leader = asyncio.create_task(cache.get(key_of(None), fetcher(app, None)))
    await asyncio.sleep(0.05)
    follower = asyncio.create_task(cache.get(key_of(None), fetcher(app, None)))
    await asyncio.sleep(0.05)
    leader.cancel()
    token, reused = await follower
    assert leader.cancelled()
    assert reused is True and token.token in gh.live_tokens()
    assert gh.calls_of("access_tokens") == 1
    assert len(cache) == 1  # the shared call still filled the cache


async def test_a_waiters_deadline_bounds_its_wait_only(app: GitHubApp, gh: FakeGitHub) -> None:
    gh.delay = 0.4
    cache = TokenCache()
    started = time.monotonic()
    with pytest.raises(ApiError) as info:
        await cache.get(key_of(None), fetcher(app, None), deadline=time.monotonic() + 0.1)
    assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 0.3
    _, reused = await cache.get(key_of(None), fetcher(app, None))  # joins the call still in flight
    assert reused is True and gh.calls_of("access_tokens") == 1


async def test_a_token_is_refreshed_5_minutes_before_it_expires(app: GitHubApp, gh: FakeGitHub) -> None:
    now = [time.time()]
    cache = TokenCache(clock=lambda: now[0])
    first, reused = await cache.get(key_of(None), fetcher(app, None))
    assert reused is False
    expires = first.expires_at.timestamp()
    now[0] = expires - 301
    again, reused = await cache.get(key_of(None), fetcher(app, None))
    assert (again.token, reused) == (first.token, True)
    now[0] = expires - 299
    fresh, reused = await cache.get(key_of(None), fetcher(app, None))
    assert fresh.token != first.token and reused is False
    assert gh.calls_of("access_tokens") == 2


async def test_a_token_already_due_for_refresh_is_handed_out_but_not_kept(app: GitHubApp, gh: FakeGitHub) -> None:
    gh.token_ttl = 200  # shorter than the 5 minute margin
    cache = TokenCache()
    await cache.get(key_of(None), fetcher(app, None))
    assert len(cache) == 0
    await cache.get(key_of(None), fetcher(app, None))
    assert gh.calls_of("access_tokens") == 2


async def test_release_frees_a_token_only_when_its_last_holder_goes(app: GitHubApp, gh: FakeGitHub) -> None:
    cache = TokenCache()
    repos = ["lobmob/repo1"]
    token, _ = await cache.get(key_of(repos), fetcher(app, repos), holder="T1")
    await cache.get(key_of(repos), fetcher(app, repos), holder="T2")
    service, _ = await cache.get(key_of(None), fetcher(app, None))
    assert cache.release("T1") == []  # T2 still uses it
    assert cache.release("T2") == [token]
    assert await app.revoke(token.token) is True
    assert gh.issued[token.token].revoked and not gh.issued[service.token].revoked
    assert len(cache) == 1
    assert cache.drain() == [service] and len(cache) == 0


def tok(n: int, hours: float = 1.0) -> InstallationToken:
    return InstallationToken(f"ghs_{n}", datetime.now(UTC) + timedelta(hours=hours), None, {"metadata": "read"})


async def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache = TokenCache(max_entries=3)
    keys = [cache_key(i, None, {}) for i in range(5)]

    def fetch_of(n: int) -> Callable[[], Awaitable[InstallationToken]]:
        async def fetch() -> InstallationToken:
            return tok(n)

        return fetch

    for i in range(3):
        await cache.get(keys[i], fetch_of(i))
    await cache.get(keys[0], fetch_of(99))  # a hit: keys[0] is now the most recent
    await cache.get(keys[3], fetch_of(3))
    assert len(cache) == 3
    assert cache.evict(keys[1]) is None  # the least recently used went first
    assert cache.evict(keys[0]) is not None
    assert cache.fetches == 4


async def test_a_token_pushed_out_while_held_is_still_freed_by_its_last_holder() -> None:
    # Pushed out by the bound, or replaced by its scope's next token, a token is no longer handed out;
    # but a task that ends later must still get it revoked, not leave it to live out its hour.
    now = [time.time()]
    cache = TokenCache(max_entries=2, clock=lambda: now[0])
    keys = [cache_key(i, None, {}) for i in range(3)]
    made = iter(range(100))

    async def fetch() -> InstallationToken:
        n = next(made)
        return tok(n, hours=1 + n / 10)  # each one lasts 6 minutes longer than the one before

    held, _ = await cache.get(keys[0], fetch, holder="T1")
    await cache.get(keys[1], fetch, holder="T2")
    await cache.get(keys[2], fetch)  # pushes keys[0] (least recently used) out
    assert cache.evict(keys[0]) is None and cache.retired == 1
    assert cache.release("T1") == [held] and cache.retired == 0
    # Replaced at refresh: the old one stays T2's to release; the new one is nobody's yet.
    old, _ = await cache.get(keys[1], fetch, holder="T2")
    now[0] = old.expires_at.timestamp() - 299  # inside the 5 minute margin
    new, reused = await cache.get(keys[1], fetch, holder="T3")
    assert new.token != old.token and not reused and cache.retired == 1
    assert cache.release("T2") == [old]
    assert cache.release("T3") == [new]
    # A pushed-out token that expired before its holder ended is not returned (nothing to revoke).
    gone, _ = await cache.get(keys[0], fetch, holder="T4")
    await cache.get(keys[1], fetch)
    await cache.get(keys[2], fetch)
    assert cache.retired == 1
    now[0] = gone.expires_at.timestamp() + 1
    assert cache.release("T4") == [] and cache.retired == 0
    # A pushed-out token nobody holds is not kept at all; drain returns retired ones too.
    cache = TokenCache(max_entries=1)
    await cache.get(keys[0], fetch)
    await cache.get(keys[1], fetch)
    assert cache.retired == 0
    kept, _ = await cache.get(keys[2], fetch, holder="T5")
    last, _ = await cache.get(keys[0], fetch)
    assert cache.retired == 1 and {t.token for t in cache.drain()} == {kept.token, last.token}


async def test_a_refused_token_is_dropped_but_a_newer_one_is_kept() -> None:
    cache = TokenCache()
    key = cache_key(1, None, {})
    made = iter(range(100))

    async def fetch() -> InstallationToken:
        return tok(next(made))

    first, _ = await cache.get(key, fetch)
    assert cache.evict_token(key, "ghs_unknown") is None and len(cache) == 1
    assert cache.evict_token(key, first.token) == first and len(cache) == 0
    second, reused = await cache.get(key, fetch)  # fetched again, not the refused one handed out
    assert second.token != first.token and not reused
    # A refusal reported late, after a newer token took its place, leaves the newer one alone.
    assert cache.evict_token(key, first.token) is None
    assert cache.lookup(key) is not None and cache.lookup(key).token == second  # type: ignore[union-attr]
