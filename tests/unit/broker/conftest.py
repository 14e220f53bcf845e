"""The broker's tests run against the real GitHub stand-in (tests/fakes/github.py) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from lobwife_server.broker.github import GitHubApp, GitHubAppConfig
from tests.fakes.github import FakeGitHub


@pytest.fixture
def config(gh: FakeGitHub) -> GitHubAppConfig:
    cfg = GitHubAppConfig.from_env(gh.env())
    assert cfg is not None
    return cfg


@pytest.fixture
async def app(config: GitHubAppConfig) -> AsyncIterator[GitHubApp]:
    # Short backoff: the tests exercise the retries, not their patience.
    async with GitHubApp(config, backoff_base=0.01, backoff_max=0.05) as client:
        yield client
