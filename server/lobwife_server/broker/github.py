"""The GitHub App client: App JWTs, installation access tokens and their revocation.

Configured the old daemon's way (:meth:`GitHubAppConfig.from_env`): ``GH_APP_ID``,
``GH_APP_INSTALL_ID``, ``GH_APP_PEM`` (the PEM file base64-encoded) or ``GH_APP_PEM_PATH``, and
``LOBWIFE_GITHUB_API_URL`` for GitHub Enterprise (``https://HOST/api/v3``) and for tests.

Every failure a caller sees is an :class:`ApiError`:

* bad input (a repository name, a permission, more than 500 repositories): INVALID_ARGUMENT naming it;
* a repository outside the installation's account (checked before GitHub is asked) or one GitHub
  says the installation cannot reach (422), permissions it was not granted: FAILED_PRECONDITION;
* GitHub rejecting the App JWT, unreachable, answering garbage, failing (5xx) or rate limiting past
  the caller's deadline: UNAVAILABLE, the message saying which;
* no answer before the caller's deadline: DEADLINE_EXCEEDED.

5xx answers, rate limits (``Retry-After`` honoured), timeouts and connection failures are retried
with backoff while the deadline allows. An App JWT refused for its times (GitHub's ``iat``/``exp``
messages: the host's clock is off) is retried once with the offset of GitHub's ``Date`` header,
which later JWTs keep.

Secrets: the key lives in :class:`GitHubAppConfig` (hidden from its repr); a token only in
:class:`InstallationToken` (hidden from its repr). No error text or log line carries either, nor
the App JWT; exceptions from the HTTP stack are summarised, not chained, as their text may quote a
request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import grpc
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lobwife_server.core.errors import ApiError, failed_precondition, invalid_argument, unavailable

log = logging.getLogger("lobwife.broker")

DEFAULT_API_URL = "https://api.github.com"
#: What a task's token may do unless its lobster type says otherwise (never more than this by default).
DEFAULT_PERMISSIONS: Mapping[str, str] = {"contents": "write", "pull_requests": "write", "metadata": "read"}
#: GitHub scopes an installation token to at most this many repositories.
MAX_REPOSITORIES = 500
PERMISSION_LEVELS = {"read": 1, "write": 2, "admin": 3}

#: ``iat`` this far in the past, as GitHub recommends against drift.
JWT_BACKDATE = 60
#: ``exp`` this far ahead: GitHub's limit is 10 minutes, and exactly 10 fails on a host whose clock
#: runs ahead of GitHub's.
JWT_LIFETIME = 540
#: A signed JWT is reused until this close to its ``exp`` (signing costs ~1 ms of CPU on the loop).
JWT_REUSE_MARGIN = 120

DEFAULT_DEADLINE = 20.0  # seconds, when the caller gives none
DEFAULT_ATTEMPT_TIMEOUT = 10.0  # seconds one HTTP exchange may take before it is retried
DEFAULT_MAX_ATTEMPTS = 5
#: GitHub asks integrators not to fire many requests at once (secondary rate limits punish it):
#: at most this many exchanges are open at a time; the rest queue (within their deadline).
DEFAULT_MAX_CONCURRENT = 4
#: Without ``Retry-After`` GitHub asks for at least a minute after a secondary rate limit.
RATE_LIMIT_DEFAULT_WAIT = 60.0

ENV_APP_ID = "GH_APP_ID"
ENV_INSTALL_ID = "GH_APP_INSTALL_ID"
ENV_PEM = "GH_APP_PEM"
ENV_PEM_PATH = "GH_APP_PEM_PATH"
ENV_API_URL = "LOBWIFE_GITHUB_API_URL"

_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
_REPO_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_PERMISSION = re.compile(r"[a-z][a-z_]{0,63}")
_APP_ID = re.compile(r"[A-Za-z0-9.]{1,64}")  # the numeric App id, or a client id (Iv1.…)
# What may be sent back in an Authorization header: printable ASCII, no space.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]{1,1024}")


# -- configuration --------------------------------------------------------------------------------


class GitHubConfigError(ValueError):
    """A bad ``GH_APP_*`` / ``LOBWIFE_GITHUB_API_URL`` value; the message names the variable and never
    carries key material."""


def not_configured() -> ApiError:
    """What a token request gets when the broker has no App configured (HTTP 503, legacy text)."""
    return unavailable(
        f"GitHub token broker not configured: set {ENV_APP_ID}, {ENV_INSTALL_ID} and {ENV_PEM} or {ENV_PEM_PATH}"
    )


def load_private_key(data: bytes, source: str) -> rsa.RSAPrivateKey:
    """The App's RSA key from PEM bytes; ``source`` names where they came from for the error."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # `from None`: the library's error says nothing secret today, but it is not ours to promise.
        raise GitHubConfigError(
            f"{source}: not a PEM private key (expected the GitHub App's unencrypted RSA key)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise GitHubConfigError(f"{source}: not an RSA key (GitHub App keys are RSA, signed RS256)")
    return key


@dataclass(frozen=True)
class GitHubAppConfig:
    """The GitHub App the broker acts as (from ``GH_APP_*``); the key is never shown in a repr."""

    app_id: str
    installation_id: int
    private_key: rsa.RSAPrivateKey = field(repr=False)
    api_url: str = DEFAULT_API_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GitHubAppConfig | None:
        """The App from the environment, or None when none of ``GH_APP_*`` is set (the broker then
        answers :func:`not_configured`). Half a configuration is an error naming what is missing, so
        that a typo does not silently turn the broker off. Reads ``GH_APP_PEM_PATH`` (call it at
        start, not on the event loop)."""
        env = os.environ if env is None else env
        raw = {k: (env.get(k) or "").strip() for k in (ENV_APP_ID, ENV_INSTALL_ID, ENV_PEM, ENV_PEM_PATH)}
        if not any(raw.values()):
            return None
        app_id = raw[ENV_APP_ID]
        if not app_id:
            raise GitHubConfigError(f"{ENV_APP_ID}: not set (the other GH_APP_* variables are)")
        if not _APP_ID.fullmatch(app_id):
            raise GitHubConfigError(f"{ENV_APP_ID}={app_id!r}: expected the GitHub App's id (digits) or client id")
        install = raw[ENV_INSTALL_ID]
        if not install:
            raise GitHubConfigError(f"{ENV_INSTALL_ID}: not set (the other GH_APP_* variables are)")
        if not install.isdigit() or int(install) <= 0:
            raise GitHubConfigError(f"{ENV_INSTALL_ID}={install!r}: expected the installation's numeric id")
        pem, pem_path = raw[ENV_PEM], raw[ENV_PEM_PATH]
        if pem and pem_path:
            raise GitHubConfigError(f"{ENV_PEM} and {ENV_PEM_PATH}: both set; set one")
        if pem:
            key = load_private_key(_decode_pem_env(pem), ENV_PEM)
        elif pem_path:
            try:
                data = Path(pem_path).expanduser().read_bytes()
            except OSError as exc:
                raise GitHubConfigError(f"{ENV_PEM_PATH}={pem_path!r}: cannot read: {exc.strerror}") from None
            key = load_private_key(data, ENV_PEM_PATH)
        else:
            raise GitHubConfigError(f"{ENV_PEM} or {ENV_PEM_PATH}: not set (the other GH_APP_* variables are)")
        return cls(app_id=app_id, installation_id=int(install), private_key=key, api_url=_api_url(env))


def _decode_pem_env(value: str) -> bytes:
    # A PEM pasted as is is taken too: it cannot be mistaken for base64 (it starts with dashes).
    if value.startswith("-----BEGIN"):
        return value.encode()
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise GitHubConfigError(f"{ENV_PEM}: not base64 (expected the PEM file, base64-encoded)") from None


def _api_url(env: Mapping[str, str]) -> str:
    url = (env.get(ENV_API_URL) or "").strip() or DEFAULT_API_URL
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
        raise GitHubConfigError(f"{ENV_API_URL}={url!r}: expected an http(s) URL such as {DEFAULT_API_URL}")
    return url.rstrip("/")


# -- input rules ----------------------------------------------------------------------------------


def validate_repositories(repositories: Sequence[str]) -> tuple[str, ...]:
    """``owner/name`` full names, checked and deduplicated (GitHub names are case-insensitive), in order."""
    if isinstance(repositories, str):
        raise invalid_argument("repositories", "expected a list of owner/name, not one string")
    if not repositories:
        # GitHub reads an empty list as "every repository": never let one through.
        raise invalid_argument("repositories", "must not be empty (a service token is asked for with None)")
    seen: dict[str, str] = {}
    for i, repo in enumerate(repositories):
        if not isinstance(repo, str):
            raise invalid_argument(f"repositories[{i}]", "expected a string owner/name")
        owner, slash, name = repo.partition("/")
        if not slash or not _OWNER.fullmatch(owner) or not _REPO_NAME.fullmatch(name) or name in (".", ".."):
            raise invalid_argument(f"repositories[{i}]", f"{repo[:120]!r} is not a GitHub repository owner/name")
        seen.setdefault(repo.lower(), repo)
    if len(seen) > MAX_REPOSITORIES:
        raise invalid_argument(
            "repositories", f"{len(seen)} repositories; GitHub scopes a token to at most {MAX_REPOSITORIES}"
        )
    return tuple(seen.values())


def validate_permissions(permissions: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(permissions, Mapping) or not permissions:
        raise invalid_argument("permissions", "expected a non-empty map of permission to read|write|admin")
    out: dict[str, str] = {}
    for name, level in permissions.items():
        if not isinstance(name, str) or not _PERMISSION.fullmatch(name):
            raise invalid_argument("permissions", f"{str(name)[:64]!r} is not a GitHub permission name")
        if level not in PERMISSION_LEVELS:
            raise invalid_argument(f"permissions.{name}", f"{str(level)[:32]!r}: expected read, write or admin")
        out[name] = level
    return out


def wider_permissions(requested: Mapping[str, str], ceiling: Mapping[str, str]) -> list[str]:
    """The requested permissions ``ceiling`` does not allow (absent, or at a lower level), sorted."""
    return sorted(
        name
        for name, level in requested.items()
        if name not in ceiling or PERMISSION_LEVELS.get(level, 99) > PERMISSION_LEVELS.get(ceiling[name], 0)
    )


def foreign_repositories(repositories: Sequence[str], account: str) -> list[str]:
    """The full names whose owner is not the installation's account."""
    return [r for r in repositories if r.partition("/")[0].lower() != account.lower()]


# -- the token ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstallationToken:
    """An installation access token. Its value is never in a repr (and so in no log or error that
    formats the object)."""

    token: str = field(repr=False)
    #: When it expires, on this host's clock (GitHub's time corrected by the learned offset).
    expires_at: datetime
    #: The full names it is scoped to, or None for all of the installation's repositories.
    repositories: tuple[str, ...] | None
    permissions: Mapping[str, str]

    def __repr__(self) -> str:
        return (
            f"InstallationToken(token=<redacted>, expires_at={self.expires_at.isoformat()}, "
            f"repositories={self.repositories!r}, permissions={dict(self.permissions)!r})"
        )

    __str__ = __repr__


# -- the client -----------------------------------------------------------------------------------


@dataclass
class _Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def message(self) -> str:
        """GitHub's ``message``, shortened and stripped of control characters, or ''."""
        try:
            data = json.loads(self.body)
        except ValueError:
            return ""
        text = data.get("message") if isinstance(data, dict) else None
        return re.sub(r"[\x00-\x1f\x7f]+", " ", text)[:300].strip() if isinstance(text, str) else ""

    def json_object(self, what: str) -> dict[str, Any]:
        try:
            data = json.loads(self.body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise unavailable(f"GitHub answered {what} with a body that is not a JSON object (HTTP {self.status})")
        return data


def _deadline_exceeded(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, message)


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _is_clock_complaint(message: str) -> bool:
    return "('iat')" in message or "('exp')" in message


def _rate_limited(reply: _Reply, message: str) -> bool:
    if reply.status == 429:
        return True
    return reply.status == 403 and (
        "rate limit" in message.lower() or reply.headers.get("x-ratelimit-remaining") == "0"
    )


class GitHubApp:
    """One GitHub App installation's client. Open it with ``async with`` (or call :meth:`close`).

    ``clock`` (epoch seconds) and ``sleep`` are injectable for tests; ``deadline`` arguments are
    :func:`time.monotonic` instants (e.g. ``time.monotonic() + context.time_remaining()``).
    """

    def __init__(
        self,
        config: GitHubAppConfig,
        *,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_base: float = 0.25,
        backoff_max: float = 5.0,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        clock: Callable[[], float] = time.time,
        trust_env: bool = False,
    ) -> None:
        self.config = config
        self._attempt_timeout = attempt_timeout
        self._max_attempts = max(1, max_attempts)
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._clock = clock
        self._trust_env = trust_env
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(max(1, max_concurrent))
        #: GitHub's clock minus ours, learned from a refused JWT's ``Date``; 0 until then.
        self.clock_offset = 0.0
        self._jwt: tuple[str, float] | None = None  # (signed JWT, reuse until, on GitHub's clock)
        self._account: str | None = None
        self._account_lock = asyncio.Lock()

    def __repr__(self) -> str:
        c = self.config
        return f"GitHubApp(app_id={c.app_id!r}, installation={c.installation_id}, url={c.api_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={
                    "Accept": "application/vnd.github+json",
                    "X-GitHub-Api-Version": "2022-11-28",
                    "User-Agent": "lobwife-broker",
                },
                timeout=aiohttp.ClientTimeout(total=None),  # each attempt has its own, below
                trust_env=self._trust_env,
            )
        return self._session

    # -- the App JWT ------------------------------------------------------------------------------

    def app_jwt(self) -> str:
        """A signed App JWT on GitHub's clock as far as it is known: ``iat`` 60 s ago, ``exp`` 9 min ahead."""
        now = self._clock() + self.clock_offset
        if self._jwt is not None and now < self._jwt[1]:
            return self._jwt[0]
        iat, exp = int(now) - JWT_BACKDATE, int(now) + JWT_LIFETIME
        # ``iss`` as a string: GitHub takes the App id either way, PyJWT only a string.
        claims = {"iat": iat, "exp": exp, "iss": self.config.app_id}
        signed = jwt.encode(claims, self.config.private_key, algorithm="RS256")
        self._jwt = (signed, exp - JWT_REUSE_MARGIN)
        return signed

    def _learn_offset(self, reply: _Reply) -> bool:
        github_now = _http_date(reply.headers.get("Date"))
        if github_now is None:
            return False
        self.clock_offset = github_now - self._clock()
        self._jwt = None
        log.warning(
            "GitHub refused the App JWT's times; the clock offset of GitHub's Date header is used from now on",
            extra={"clock_offset_s": round(self.clock_offset, 1)},
        )
        return True

    # -- calls ------------------------------------------------------------------------------------

    def _deadline(self, deadline: float | None) -> float:
        return time.monotonic() + DEFAULT_DEADLINE if deadline is None else deadline

    async def installation_account(self, *, deadline: float | None = None) -> str:
        """The login of the account the installation is on (asked once, then kept)."""
        if self._account is not None:
            return self._account
        async with self._account_lock:
            if self._account is None:
                path = f"/app/installations/{self.config.installation_id}"
                reply = await self._call("installation", "GET", path, deadline=self._deadline(deadline))
                account = reply.json_object("the installation").get("account")
                login = account.get("login") if isinstance(account, dict) else None
                if not isinstance(login, str) or not login:
                    raise unavailable("GitHub's installation answer names no account login")
                self._account = login
            return self._account

    async def create_installation_token(
        self,
        repositories: Sequence[str] | None,
        permissions: Mapping[str, str] = DEFAULT_PERMISSIONS,
        *,
        deadline: float | None = None,
    ) -> InstallationToken:
        """A token for ``repositories`` (``owner/name``; None: all of the installation's, for services)
        with ``permissions``. Owners are checked against the installation's account before GitHub is
        asked for a token."""
        perms = validate_permissions(permissions)
        repos = validate_repositories(repositories) if repositories is not None else None
        end = self._deadline(deadline)
        body: dict[str, Any] = {"permissions": perms}
        if repos is not None:
            account = await self.installation_account(deadline=end)
            if foreign := foreign_repositories(repos, account):
                raise failed_precondition(
                    f"repositories {', '.join(foreign[:20])}: not on {account}, the GitHub App installation's account",
                    reason="GITHUB_REPOSITORY_NOT_IN_INSTALLATION",
                )
            body["repositories"] = [r.partition("/")[2] for r in repos]
        path = f"/app/installations/{self.config.installation_id}/access_tokens"
        reply = await self._call("access_tokens", "POST", path, json_body=body, deadline=end, repositories=repos)
        return self._token_of(reply, repos, perms)

    async def revoke(self, token: str, *, deadline: float | None = None) -> bool:
        """Revokes ``token`` at GitHub: True once revoked, False when GitHub no longer knew it (expired
        or already revoked). Other failures raise, as for any call."""
        if not _TOKEN_CHARS.fullmatch(token):
            raise invalid_argument("token", "not an installation token")
        reply = await self._call(
            "revoke", "DELETE", "/installation/token", token=token, deadline=self._deadline(deadline), accept={401}
        )
        return reply.status != 401

    def _token_of(self, reply: _Reply, repos: tuple[str, ...] | None, perms: dict[str, str]) -> InstallationToken:
        data = reply.json_object("the token request")
        token = data.get("token")
        if not isinstance(token, str) or not _TOKEN_CHARS.fullmatch(token):
            raise unavailable("GitHub's token answer has no usable token")
        try:
            expires = datetime.fromisoformat(str(data.get("expires_at")).replace("Z", "+00:00"))
        except ValueError:
            raise unavailable("GitHub's token answer has no readable expires_at") from None
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        expires -= timedelta(seconds=self.clock_offset)
        granted = data.get("permissions")
        if isinstance(granted, dict) and all(isinstance(v, str) for v in granted.values()):
            perms = {str(k): v for k, v in granted.items()}
        scoped: tuple[str, ...] | None = repos
        listed = data.get("repositories")
        if repos is not None and isinstance(listed, list):
            names = [r.get("full_name") for r in listed if isinstance(r, dict)]
            if names and all(isinstance(n, str) for n in names):
                scoped = tuple(str(n) for n in names)
        log.debug(
            "GitHub installation token created",
            extra={"repositories": len(scoped) if scoped is not None else "all", "expires_at": expires.isoformat()},
        )
        return InstallationToken(token=token, expires_at=expires, repositories=scoped, permissions=perms)

    async def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        deadline: float,
        json_body: dict[str, Any] | None = None,
        token: str | None = None,
        accept: set[int] | frozenset[int] = frozenset(),
        repositories: tuple[str, ...] | None = None,
    ) -> _Reply:
        """One GitHub call with its retries, within ``deadline``; a 2xx reply (or one in ``accept``)."""
        url = self.config.api_url + path
        attempt = 0
        clock_retried = False
        last = ""
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _deadline_exceeded(f"GitHub {endpoint}: deadline exceeded" + (f" ({last})" if last else ""))
            limit = min(self._attempt_timeout, remaining)
            auth = f"token {token}" if token is not None else f"Bearer {self.app_jwt()}"
            wait: float | None = None
            try:
                reply = await self._send(method, url, auth, json_body, limit)
            except TimeoutError:
                if limit >= remaining:
                    raise _deadline_exceeded(
                        f"GitHub {endpoint}: no answer within the deadline ({remaining:.1f}s)"
                    ) from None
                last = f"no answer within {limit:.1f}s"
            except aiohttp.ClientError as exc:
                # The class and the host only: the exception's text may quote the request.
                last = f"unreachable at {self.config.api_url} ({type(exc).__name__})"
            else:
                if 200 <= reply.status < 300 or reply.status in accept:
                    return reply
                message = reply.message()
                if reply.status == 401 and token is None:
                    if _is_clock_complaint(message) and not clock_retried and self._learn_offset(reply):
                        clock_retried = True
                        attempt -= 1  # the correction is not one of the retries
                        continue
                    raise unavailable(
                        f"GitHub rejected the App JWT: check {ENV_APP_ID} and the key"
                        + (f" (GitHub said: {message})" if message else "")
                    )
                if _rate_limited(reply, message):
                    wait = self._server_wait(reply)
                    if wait is None:
                        wait = RATE_LIMIT_DEFAULT_WAIT
                    last = f"rate limited (HTTP {reply.status}, retry after {wait:.0f}s)"
                elif reply.status >= 500:
                    wait = self._server_wait(reply)
                    last = f"HTTP {reply.status}"
                else:
                    raise self._refusal(endpoint, reply, message, repositories)
            if attempt >= self._max_attempts:
                raise unavailable(f"GitHub {endpoint} failed after {attempt} attempts: {last}")
            if wait is None:
                # Backoff with jitter, so that many callers do not return together.
                wait = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            if time.monotonic() + wait >= deadline:
                raise unavailable(f"GitHub {endpoint} failed: {last}; no time left to retry before the deadline")
            log.warning(
                "GitHub call failed; retrying",
                extra={"endpoint": endpoint, "attempt": attempt, "error": last, "retry_in_s": round(wait, 2)},
            )
            await asyncio.sleep(wait)

    async def _send(self, method: str, url: str, auth: str, body: dict[str, Any] | None, limit: float) -> _Reply:
        async with (
            asyncio.timeout(limit),  # the wait for a slot counts: it is part of the caller's time
            self._slots,
            self._http().request(
                method, url, json=body, headers={"Authorization": auth}, allow_redirects=False
            ) as resp,
        ):
            data = await resp.read()
            return _Reply(resp.status, resp.headers, data)

    def _server_wait(self, reply: _Reply) -> float | None:
        """Seconds GitHub asked us to wait: ``Retry-After`` (seconds or a date), else the rate-limit reset."""
        value = reply.headers.get("Retry-After")
        if value:
            if value.strip().isdigit():
                return float(value.strip())
            at = _http_date(value)
            if at is not None:
                now = _http_date(reply.headers.get("Date")) or self._clock()
                return max(0.0, at - now)
        reset = reply.headers.get("x-ratelimit-reset")
        if reset and reset.isdigit() and reply.headers.get("x-ratelimit-remaining") == "0":
            return max(0.0, int(reset) - (self._clock() + self.clock_offset))
        return None

    def _refusal(self, endpoint: str, reply: _Reply, message: str, repositories: tuple[str, ...] | None) -> ApiError:
        said = f" (GitHub said: {message})" if message else ""
        if endpoint in ("installation", "access_tokens") and reply.status == 404:
            return unavailable(
                f"GitHub knows no installation {self.config.installation_id} of this app: check {ENV_INSTALL_ID}"
            )
        if endpoint == "access_tokens" and reply.status == 422:
            if "permission" in message.lower():
                return failed_precondition(
                    f"GitHub refused the token: the permissions asked are not granted to the installation{said}",
                    reason="GITHUB_PERMISSIONS_NOT_GRANTED",
                )
            named = ", ".join(repositories[:20]) + (" …" if len(repositories) > 20 else "") if repositories else "all"
            return failed_precondition(
                f"GitHub refused a token for repositories {named}: at least one does not exist or the App"
                f" installation cannot reach it{said}",
                reason="GITHUB_REPOSITORY_NOT_ACCESSIBLE",
            )
        if 300 <= reply.status < 400:
            return unavailable(f"GitHub {endpoint} answered a redirect (HTTP {reply.status}): check {ENV_API_URL}")
        return failed_precondition(f"GitHub refused {endpoint} (HTTP {reply.status}){said}")
