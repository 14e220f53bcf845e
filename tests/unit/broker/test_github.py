"""The GitHub App client against the real stand-in: JWT, skew correction, retries within the deadline,
GitHub's refusals as lobwife errors, input rules checked before GitHub is asked, revocation."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import grpc
import jwt
import pytest

from lobwife_server.broker.github import (
    DEFAULT_PERMISSIONS,
    JWT_BACKDATE,
    JWT_LIFETIME,
    GitHubApp,
    GitHubAppConfig,
    wider_permissions,
)
from lobwife_server.core.errors import ApiError
from tests.fakes import github as fake
from tests.fakes.github import AppKey, FakeGitHub

REPOS = ["lobmob/repo1", "lobmob/repo2"]


async def error_of(call: Awaitable[Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        await call
    return info.value


def soon(seconds: float) -> float:
    return time.monotonic() + seconds


async def test_the_app_jwt_has_githubs_claims(app: GitHubApp, gh: FakeGitHub, app_key: AppKey) -> None:
    signed = app.app_jwt()
    assert jwt.get_unverified_header(signed)["alg"] == "RS256"
    claims = jwt.decode(signed, app_key.public_key, algorithms=["RS256"])
    now = time.time()
    assert claims["iss"] == "4242"
    assert abs(claims["iat"] - (now - JWT_BACKDATE)) <= 2
    assert abs(claims["exp"] - (now + JWT_LIFETIME)) <= 2
    assert claims["exp"] - claims["iat"] == 600
    # And GitHub (the stand-in) takes it.
    token = await app.create_installation_token(REPOS, DEFAULT_PERMISSIONS)
    assert token.repositories == tuple(REPOS)
    assert dict(token.permissions) == dict(DEFAULT_PERMISSIONS)
    assert gh.jwt_claims[-1]["iss"] == "4242"
    assert 3590 < (token.expires_at - datetime.now(UTC)).total_seconds() <= 3600


@pytest.mark.parametrize("skew", [900.0, -900.0])
async def test_a_skewed_github_clock_costs_one_retry_then_none(app: GitHubApp, gh: FakeGitHub, skew: float) -> None:
    gh.clock_skew = skew
    token = await app.create_installation_token(None)  # a service token: no installation lookup
    assert gh.calls_of("access_tokens") == 2  # refused for its times, then accepted
    assert abs(app.clock_offset - skew) <= 2
    # expires_at is on this host's clock: an hour from now here, whatever GitHub's clock says.
    assert abs((token.expires_at - datetime.now(UTC)).total_seconds() - 3600) <= 3
    # The offset is kept: the next JWTs are right the first time.
    await app.create_installation_token(REPOS)
    assert (gh.calls_of("installation"), gh.calls_of("access_tokens")) == (1, 3)


async def test_a_jwt_still_refused_after_the_correction_is_unavailable(config: GitHubAppConfig, gh: FakeGitHub) -> None:
    # A host clock that jumps 1000 s at every reading: no offset learned from Date can fix it.
    readings = iter(range(10))

    def jumpy() -> float:
        return time.time() - 900 + 1000 * next(readings)

    async with GitHubApp(config, clock=jumpy) as app:
        err = await error_of(app.create_installation_token(None))
    # One correction, then the refusal is reported; no loop.
    assert err.code is grpc.StatusCode.UNAVAILABLE
    assert err.message.startswith("GitHub rejected the App JWT: check GH_APP_ID and the key")
    assert gh.calls_of("access_tokens") == 2


async def test_5xx_is_retried_then_succeeds(app: GitHubApp, gh: FakeGitHub) -> None:
    gh.fail_next(2, status=502, endpoint="access_tokens")
    await app.create_installation_token(None)
    assert gh.calls_of("access_tokens") == 3


async def test_5xx_that_persists_is_unavailable_after_the_attempts(config: GitHubAppConfig, gh: FakeGitHub) -> None:
    gh.fail_next(10, status=503)
    async with GitHubApp(config, max_attempts=3, backoff_base=0.01) as app:
        err = await error_of(app.create_installation_token(None))
    assert err.code is grpc.StatusCode.UNAVAILABLE
    assert err.message == "GitHub access_tokens failed after 3 attempts: HTTP 503"
    assert gh.calls_of("access_tokens") == 3


async def test_a_secondary_rate_limit_waits_its_retry_after(app: GitHubApp, gh: FakeGitHub) -> None:
    gh.rate_limit_next(1, retry_after=1, endpoint="access_tokens")
    started = time.monotonic()
    await app.create_installation_token(None, deadline=soon(5))
    waited = time.monotonic() - started
    assert 0.95 <= waited < 2.5
    assert gh.calls_of("access_tokens") == 2


async def test_a_retry_after_beyond_the_deadline_fails_at_once(app: GitHubApp, gh: FakeGitHub) -> None:
    gh.rate_limit_next(1, retry_after=30)
    started = time.monotonic()
    err = await error_of(app.create_installation_token(None, deadline=soon(3)))
    assert time.monotonic() - started < 1.0
    assert err.code is grpc.StatusCode.UNAVAILABLE
    assert "rate limited" in err.message and "deadline" in err.message
    assert gh.calls_of("access_tokens") == 1


async def test_a_hanging_github_returns_by_the_deadline(app: GitHubApp, gh: FakeGitHub) -> None:
    gh.delay = 5.0
    started = time.monotonic()
    err = await error_of(app.create_installation_token(None, deadline=soon(0.5)))
    assert time.monotonic() - started < 1.0
    assert err.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "no answer within the deadline" in err.message


async def test_a_slow_attempt_is_retried_within_the_deadline(config: GitHubAppConfig, gh: FakeGitHub) -> None:
    gh.delay = 5.0
    async with GitHubApp(config, attempt_timeout=0.2, backoff_base=0.01) as app:
        started = time.monotonic()
        err = await error_of(app.create_installation_token(None, deadline=soon(1.0)))
    assert time.monotonic() - started < 1.5
    assert err.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert gh.calls_of("access_tokens") >= 3


async def test_a_repository_the_installation_lacks_is_failed_precondition_naming_it(
    app: GitHubApp, gh: FakeGitHub
) -> None:
    err = await error_of(app.create_installation_token(["lobmob/repo1", "lobmob/ghost"]))
    assert err.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "lobmob/repo1, lobmob/ghost" in err.message
    assert fake.MSG_REPOSITORIES in err.message
    assert err.reason == "GITHUB_REPOSITORY_NOT_ACCESSIBLE"
    assert gh.calls_of("access_tokens") == 1  # not retried


async def test_permissions_the_installation_lacks_are_failed_precondition(app: GitHubApp, gh: FakeGitHub) -> None:
    err = await error_of(app.create_installation_token(REPOS, {"administration": "write"}))
    assert err.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "permissions" in err.message and err.reason == "GITHUB_PERMISSIONS_NOT_GRANTED"


@pytest.mark.parametrize("which", ["app id", "key"])
async def test_a_rejected_app_jwt_is_unavailable_with_a_clear_message(
    config: GitHubAppConfig, gh: FakeGitHub, which: str
) -> None:
    if which == "app id":
        bad = dataclasses.replace(config, app_id="999")
    else:
        bad = dataclasses.replace(config, private_key=AppKey.generate().private_key)
    async with GitHubApp(bad) as app:
        err = await error_of(app.create_installation_token(REPOS))
    assert err.code is grpc.StatusCode.UNAVAILABLE
    assert err.message == (
        f"GitHub rejected the App JWT: check GH_APP_ID and the key (GitHub said: {fake.MSG_UNDECODABLE})"
    )
    assert gh.calls_of("installation") == 1 and gh.calls_of("access_tokens") == 0


async def test_an_unknown_installation_is_unavailable_naming_the_variable(
    config: GitHubAppConfig, gh: FakeGitHub
) -> None:
    async with GitHubApp(dataclasses.replace(config, installation_id=77)) as app:
        err = await error_of(app.create_installation_token(None))
    assert err.code is grpc.StatusCode.UNAVAILABLE and "GH_APP_INSTALL_ID" in err.message


@pytest.mark.parametrize("endpoint", ["installation", "access_tokens"])
async def test_garbage_from_github_is_unavailable(app: GitHubApp, gh: FakeGitHub, endpoint: str) -> None:
    gh.garbage_next(1, endpoint=endpoint)
    err = await error_of(app.create_installation_token(REPOS))
    assert err.code is grpc.StatusCode.UNAVAILABLE
    assert "not a JSON object" in err.message


async def test_an_unreachable_github_is_unavailable(config: GitHubAppConfig) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gone = dataclasses.replace(config, api_url=f"http://127.0.0.1:{port}")
    async with GitHubApp(gone, max_attempts=3, backoff_base=0.01) as app:
        started = time.monotonic()
        err = await error_of(app.create_installation_token(None, deadline=soon(5)))
    assert time.monotonic() - started < 2
    assert err.code is grpc.StatusCode.UNAVAILABLE
    assert f"unreachable at http://127.0.0.1:{port}" in err.message


async def test_another_owners_repository_is_refused_before_github_is_asked(app: GitHubApp, gh: FakeGitHub) -> None:
    err = await error_of(app.create_installation_token(["lobmob/repo1", "someone-else/repo1"]))
    assert err.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "someone-else/repo1" in err.message and "lobmob" in err.message
    assert gh.calls_of("access_tokens") == 0
    # The account is asked once, then kept; owners compare case-insensitively as GitHub logins do.
    await app.create_installation_token(["LobMob/repo1"])
    assert (gh.calls_of("installation"), gh.calls_of("access_tokens")) == (1, 1)


@pytest.mark.parametrize(
    ("repositories", "field"),
    [
        ([], "repositories"),
        (["noslash"], "repositories[0]"),
        (["lobmob/repo1", "a/b/c"], "repositories[1]"),
        (["lobmob/.."], "repositories[0]"),
        (["-bad/x"], "repositories[0]"),
        ([f"lobmob/r{i}" for i in range(501)], "repositories"),
    ],
)
async def test_bad_repositories_are_invalid_argument_before_any_call(
    app: GitHubApp, gh: FakeGitHub, repositories: list[str], field: str
) -> None:
    err = await error_of(app.create_installation_token(repositories))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.violations[0][0] == field
    assert sum(gh.calls.values()) == 0


async def test_501_names_that_dedupe_to_500_pass_the_limit(app: GitHubApp, gh: FakeGitHub) -> None:
    names = [f"lobmob/r{i}" for i in range(500)] + ["LOBMOB/R0"]
    err = await error_of(app.create_installation_token(names))
    # Past the limit check: GitHub was asked (and lacks these repositories).
    assert err.code is grpc.StatusCode.FAILED_PRECONDITION
    assert len(gh.token_requests[-1]["repositories"]) == 500


@pytest.mark.parametrize("permissions", [{}, {"contents": "own"}, {"Contents!": "read"}])
async def test_bad_permissions_are_invalid_argument(
    app: GitHubApp, gh: FakeGitHub, permissions: dict[str, str]
) -> None:
    err = await error_of(app.create_installation_token(REPOS, permissions))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert sum(gh.calls.values()) == 0


async def test_a_service_token_covers_all_repositories_and_never_sends_an_empty_list(
    app: GitHubApp, gh: FakeGitHub
) -> None:
    token = await app.create_installation_token(None)
    assert token.repositories is None
    assert "repositories" not in gh.token_requests[-1]
    assert gh.issued[token.token].repositories is None
    assert gh.calls_of("installation") == 0


async def test_the_scope_sent_is_names_without_owner(app: GitHubApp, gh: FakeGitHub) -> None:
    token = await app.create_installation_token(["lobmob/repo3", "lobmob/REPO3", "lobmob/repo4"])
    assert gh.token_requests[-1] == {
        "repositories": ["repo3", "repo4"],
        "permissions": dict(DEFAULT_PERMISSIONS),
    }
    assert gh.issued[token.token].repositories == ("repo3", "repo4")


async def test_revoke_revokes_at_github(app: GitHubApp, gh: FakeGitHub) -> None:
    token = await app.create_installation_token(REPOS)
    assert token.token in gh.live_tokens()
    assert await app.revoke(token.token) is True
    assert gh.issued[token.token].revoked
    # Revoking again is no error: GitHub no longer knows it.
    assert await app.revoke(token.token) is False
    assert gh.calls_of("revoke") == 2


def test_wider_permissions() -> None:
    ceiling = {"contents": "write", "metadata": "read"}
    assert wider_permissions({"contents": "read", "metadata": "read"}, ceiling) == []
    assert wider_permissions({"contents": "admin", "issues": "read", "metadata": "read"}, ceiling) == [
        "contents",
        "issues",
    ]


async def test_at_most_max_concurrent_calls_are_open_at_once(config: GitHubAppConfig, gh: FakeGitHub) -> None:
    gh.delay = 0.1
    async with GitHubApp(config, max_concurrent=2) as app:
        tokens = await asyncio.gather(*(app.create_installation_token(None) for _ in range(6)))
    assert len({t.token for t in tokens}) == 6
    assert gh.max_in_flight == 2
