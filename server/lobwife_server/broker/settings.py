"""The broker's settings, read at start the old daemon's way (environment variables).

- ``GH_APP_ID``, ``GH_APP_INSTALL_ID``, ``GH_APP_PEM`` / ``GH_APP_PEM_PATH``, ``LOBWIFE_GITHUB_API_URL``:
  the GitHub App (:meth:`GitHubAppConfig.from_env`); none set means the broker is not configured.
- ``LOBWIFE_BROKER_IDLE_TTL``: seconds a registration may go without a token request before the
  built-in ``lobwife-broker-expire`` job expires it (default 86400, 24 h).
- ``LOBWIFE_BROKER_GITHUB_TIMEOUT``: seconds a call waits for GitHub at most (default 20).
- ``LOBWIFE_BROKER_PERMISSIONS``: JSON, per lobster type, the permissions its tokens get, e.g.
  ``{"qa": {"contents": "read", "metadata": "read"}}``. Each must be within the default
  (``contents: write, pull_requests: write, metadata: read``): a type is never given more.

Every bad value is a :class:`GitHubConfigError` naming its variable (never key material).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from lobwife_server.broker.github import (
    DEFAULT_PERMISSIONS,
    GitHubAppConfig,
    GitHubConfigError,
    validate_permissions,
    wider_permissions,
)
from lobwife_server.core.errors import ApiError

ENV_IDLE_TTL = "LOBWIFE_BROKER_IDLE_TTL"
ENV_GITHUB_TIMEOUT = "LOBWIFE_BROKER_GITHUB_TIMEOUT"
ENV_PERMISSIONS = "LOBWIFE_BROKER_PERMISSIONS"

DEFAULT_IDLE_TTL = 24 * 3600.0
DEFAULT_GITHUB_TIMEOUT = 20.0


@dataclass(frozen=True)
class BrokerSettings:
    """The broker's configuration; ``github`` None: not configured (token calls answer 503)."""

    github: GitHubAppConfig | None = None
    idle_ttl: float = DEFAULT_IDLE_TTL
    github_timeout: float = DEFAULT_GITHUB_TIMEOUT
    #: Per lobster type; a type not listed gets DEFAULT_PERMISSIONS.
    permissions: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))

    def permissions_for(self, lobster_type: str) -> Mapping[str, str]:
        return self.permissions.get(lobster_type, DEFAULT_PERMISSIONS)


def _seconds(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise GitHubConfigError(f"{name}={raw[:40]!r}: expected a number of seconds") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise GitHubConfigError(f"{name}={raw[:40]!r}: must be between {lo:g} and {hi:g} seconds")
    return value


def _permissions(env: Mapping[str, str]) -> Mapping[str, Mapping[str, str]]:
    raw = (env.get(ENV_PERMISSIONS) or "").strip()
    if not raw:
        return MappingProxyType({})
    try:
        data = json.loads(raw)
    except ValueError:
        raise GitHubConfigError(
            f"{ENV_PERMISSIONS}: not JSON (expected {{lobster type: {{permission: level}}}})"
        ) from None
    if not isinstance(data, dict):
        raise GitHubConfigError(f"{ENV_PERMISSIONS}: expected a JSON object keyed by lobster type")
    out: dict[str, Mapping[str, str]] = {}
    for lobster_type, perms in data.items():
        try:
            checked = validate_permissions(perms)
        except ApiError as e:
            raise GitHubConfigError(f"{ENV_PERMISSIONS}[{lobster_type[:40]!r}]: {e.message}") from None
        if wider := wider_permissions(checked, DEFAULT_PERMISSIONS):
            raise GitHubConfigError(
                f"{ENV_PERMISSIONS}[{lobster_type[:40]!r}]: {', '.join(wider)} wider than the default"
                f" {dict(DEFAULT_PERMISSIONS)}; a lobster type is never given more"
            )
        out[lobster_type] = MappingProxyType(checked)
    return MappingProxyType(out)


def from_env(env: Mapping[str, str] | None = None) -> BrokerSettings:
    """The settings from the environment (reads ``GH_APP_PEM_PATH``: call it at start, off the loop)."""
    env = os.environ if env is None else env
    return BrokerSettings(
        github=GitHubAppConfig.from_env(env),
        idle_ttl=_seconds(env, ENV_IDLE_TTL, DEFAULT_IDLE_TTL, 1, 365 * 86400),
        github_timeout=_seconds(env, ENV_GITHUB_TIMEOUT, DEFAULT_GITHUB_TIMEOUT, 0.5, 600),
        permissions=_permissions(env),
    )
