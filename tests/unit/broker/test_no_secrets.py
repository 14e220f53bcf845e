"""No GitHub token, App JWT or key material in a log line, an error or a repr, whatever path was taken."""

from __future__ import annotations

import dataclasses
import logging
import socket
from typing import Any

import pytest

from lobwife_server.broker.github import GitHubApp, GitHubAppConfig
from lobwife_server.broker.token_cache import TokenCache, cache_key
from lobwife_server.core.errors import ApiError
from lobwife_server.core.logs import JsonFormatter, TextFormatter
from tests.fakes.github import AppKey, FakeGitHub


async def test_no_secret_reaches_a_log_an_error_or_a_repr(
    config: GitHubAppConfig, gh: FakeGitHub, app_key: AppKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, aiohttp's included
    errors: list[ApiError] = []
    tokens: list[Any] = []

    async def attempt(call: Any) -> None:
        try:
            tokens.append(await call)
        except ApiError as exc:
            errors.append(exc)

    cache = TokenCache()
    async with GitHubApp(config, backoff_base=0.01, backoff_max=0.02) as app:
        gh.clock_skew = 900.0  # a JWT correction, logged
        await attempt(app.create_installation_token(None))
        gh.clock_skew = 0.0
        app.clock_offset = 0.0
        gh.fail_next(1)  # a retry, logged
        gh.rate_limit_next(1, retry_after=0)
        await attempt(app.create_installation_token(["lobmob/repo1"]))
        await attempt(app.create_installation_token(["lobmob/ghost"]))  # 422
        gh.garbage_next(1)
        await attempt(app.create_installation_token(["lobmob/repo2"]))
        await attempt(app.create_installation_token(["other/repo2"]))
        repos = ["lobmob/repo3"]
        token, _ = await cache.get(
            cache_key(1001, repos, {"metadata": "read"}),
            lambda: app.create_installation_token(repos, {"metadata": "read"}),
        )
        tokens.append(token)
        gh.fail_next(10, endpoint="revoke")
        await attempt(app.revoke(token.token))  # fails after its attempts
        await attempt(app.revoke(tokens[0].token))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with GitHubApp(dataclasses.replace(config, api_url=f"http://127.0.0.1:{port}"), max_attempts=2) as gone:
        await attempt(gone.revoke(tokens[1].token))  # unreachable, with a token in hand
    async with GitHubApp(dataclasses.replace(config, app_id="999")) as wrong:
        await attempt(wrong.create_installation_token(None))

    issued = list(gh.issued)
    assert len(issued) >= 3 and len(errors) >= 5
    assert any("GitHub call failed; retrying" in r.getMessage() for r in caplog.records)
    secrets = [*issued, app_key.pem_base64[40:80], app_key.pem.decode().splitlines()[5]]
    rendered = [caplog.text]
    for record in caplog.records:
        rendered += [JsonFormatter().format(record), TextFormatter().format(record)]
    for err in errors:
        rendered += [str(err), repr(err), str(err.to_status())]
    for tok in tokens:
        rendered += [repr(tok), str(tok), f"{tok}", repr(cache)]
    rendered += [repr(config), repr(app)]
    text = "\n".join(rendered)
    for secret in secrets:
        assert secret not in text
    assert "eyJ" not in text  # the start of every JWT (base64 of '{"')
    assert "<redacted>" in repr(tokens[0])
