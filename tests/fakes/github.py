"""A GitHub App API stand-in: a real HTTP server on a free 127.0.0.1 port, in a thread with its own loop.

It speaks the four endpoints the token broker uses, as GitHub does:

* ``POST /app/installations/{id}/access_tokens`` (App JWT): a ``ghs_`` token scoped to
  ``repositories`` (names without the owner) and ``permissions``, expiring ``token_ttl`` ahead;
* ``GET /app/installations/{id}`` (App JWT): the installation, with its account's login;
* ``DELETE /installation/token`` (installation token): revokes that token, 204;
* ``GET /installation/repositories`` (installation token): the token's repositories.

The App JWT is checked the way GitHub checks it: an RS256 signature by the app's key, ``iss`` the app
id (a number or its string), ``iat`` not in the future, ``exp`` in the future and at most ten minutes
after ``iat`` and after now, all against the stand-in's own clock (``clock_skew`` moves it, and its
``Date`` header with it). Failures answer GitHub's own messages (``MSG_*``), so the client's handling
of real answers is what the tests exercise.

Fault knobs (each counted down by the answers it takes): ``fail_next`` (5xx), ``rate_limit_next``
(GitHub's secondary rate limit: 403 with ``Retry-After``), ``reject_next`` (422), ``garbage_next``
(a body that is not JSON); ``delay`` (seconds before every answer) and ``clock_skew``. ``calls``
counts the calls per endpoint (``access_tokens``, ``installation``, ``revoke``, ``repositories``),
``max_in_flight`` the most answered at once. ``token_state``/``token_valid`` say what it issued as a token
and whether it still takes it, ``expire`` ends a token's life early (the git remote of
``tests/fakes/git_http.py`` takes these tokens as GitHub's git does).

Usable from sync tests and from a server process pointed at ``url``::

    with FakeGitHub(key=AppKey.generate()) as gh:
        env = gh.env()  # GH_APP_ID, GH_APP_INSTALL_ID, GH_APP_PEM, LOBWIFE_GITHUB_API_URL
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email.utils
import json
import secrets
import string
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt import api_jws as jws

from tests.fakes._server import LocalServer

DOCS_URL = "https://docs.github.com/rest"

# GitHub's messages, verbatim as its API answers them.
MSG_UNDECODABLE = "A JSON web token could not be decoded"
MSG_EXP_TOO_FAR = "'Expiration time' claim ('exp') is too far in the future"
MSG_EXPIRED = (
    "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion"
    " expires"
)
MSG_IAT = "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
MSG_BAD_CREDENTIALS = "Bad credentials"
MSG_REPOSITORIES = (
    "There is at least one repository that does not exist or is not accessible to the parent installation."
)
MSG_PERMISSIONS = "The permissions requested are not granted to this installation."
MSG_SECONDARY = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
MSG_NOT_FOUND = "Not Found"

#: GitHub's limits on the App JWT: at most ten minutes long; the stand-in forgives this much drift.
JWT_MAX_LIFETIME = 600
JWT_LEEWAY = 30

MAX_REPOSITORIES = 500
LEVELS = {"read": 1, "write": 2, "admin": 3}
DEFAULT_INSTALLATION_PERMISSIONS = {
    "contents": "write",
    "pull_requests": "write",
    "metadata": "read",
    "issues": "write",
    "checks": "read",
}

ENDPOINTS = ("access_tokens", "installation", "revoke", "repositories")


@dataclass(frozen=True)
class AppKey:
    """A GitHub App's RSA key pair, as GitHub hands it out (PKCS#1 PEM)."""

    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> AppKey:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    @property
    def pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )

    @property
    def pem_base64(self) -> str:
        """How the old daemon took the key: ``GH_APP_PEM``, the PEM file base64-encoded."""
        return base64.b64encode(self.pem).decode("ascii")


@dataclass
class Installation:
    """An installation of the app: the account it is on, the repositories it may reach (names without
    the owner) and the most its tokens may be granted."""

    id: int
    account: str
    repositories: list[str]
    permissions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_INSTALLATION_PERMISSIONS))


@dataclass
class IssuedToken:
    installation_id: int
    repositories: tuple[str, ...] | None  # None: all of the installation's
    permissions: dict[str, str]
    expires_at: float  # the stand-in's clock
    revoked: bool = False


@dataclass
class _Fault:
    kind: str  # "5xx" | "rate_limit" | "422" | "garbage"
    endpoint: str | None  # None: whichever endpoint is called next
    status: int = 502
    retry_after: float | None = None


def _body(message: str, status: int) -> dict[str, str]:
    return {"message": message, "documentation_url": DOCS_URL, "status": str(status)}


def _iso_z(at: float) -> str:
    return datetime.fromtimestamp(int(at), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeGitHub(LocalServer):
    """The GitHub App endpoints the broker calls, checking what GitHub checks; fault knobs; call counts."""

    name = "FakeGitHub"

    def __init__(
        self,
        *,
        key: AppKey,
        app_id: int = 4242,
        installations: Iterable[Installation] | None = None,
        token_ttl: float = 3600.0,
    ) -> None:
        self.key = key
        self.app_id = app_id
        if installations is None:
            installations = [Installation(1001, "lobmob", [f"repo{i}" for i in range(20)] + ["lobwife"])]
        self.installations = {i.id: i for i in installations}
        self.token_ttl = token_ttl
        #: Seconds every answer waits before it is given.
        self.delay = 0.0
        #: Seconds the stand-in's clock (its JWT checks, token expiry and ``Date`` header) runs ahead.
        self.clock_skew = 0.0
        self.calls: Counter[str] = Counter()
        #: Requests being answered now, and the most there ever were at once.
        self.in_flight = 0
        self.max_in_flight = 0
        #: The claims of every App JWT that passed the signature check, in order.
        self.jwt_claims: list[dict[str, Any]] = []
        #: Every token issued, by its value.
        self.issued: dict[str, IssuedToken] = {}
        #: Every access_tokens request body, in order.
        self.token_requests: list[dict[str, Any]] = []
        self._faults: deque[_Fault] = deque()
        self._lock = threading.Lock()
        super().__init__()

    # -- life cycle --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("FakeGitHub is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def installation_id(self) -> int:
        """The first installation's id (the one most tests use)."""
        return next(iter(self.installations))

    def env(self, installation_id: int | None = None) -> dict[str, str]:
        """The broker's environment pointing at this stand-in."""
        return {
            "GH_APP_ID": str(self.app_id),
            "GH_APP_INSTALL_ID": str(installation_id or self.installation_id),
            "GH_APP_PEM": self.key.pem_base64,
            "LOBWIFE_GITHUB_API_URL": self.url,
        }

    def _runner_options(self) -> dict[str, Any]:
        # handler_cancellation: a client that gives up on a slow answer ends its handler (as a real
        # server would stop caring); shutdown_timeout: stop() does not wait on sleepers.
        return {"handler_cancellation": True, "access_log": None, "shutdown_timeout": 1.0}

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/app/installations/{id}/access_tokens", self._wrap("access_tokens", self._access_tokens))
        app.router.add_get("/app/installations/{id}", self._wrap("installation", self._installation))
        app.router.add_delete("/installation/token", self._wrap("revoke", self._revoke))
        app.router.add_get("/installation/repositories", self._wrap("repositories", self._repositories))
        return app

    # -- knobs -------------------------------------------------------------------------------------

    def now(self) -> float:
        """The stand-in's clock: the host's, moved by ``clock_skew``."""
        return time.time() + self.clock_skew

    def fail_next(self, n: int = 1, *, status: int = 502, endpoint: str | None = None) -> None:
        self._add(n, _Fault("5xx", endpoint, status=status))

    def rate_limit_next(self, n: int = 1, *, retry_after: float | None = 1, endpoint: str | None = None) -> None:
        """GitHub's secondary rate limit: 403, ``Retry-After`` (whole seconds, as GitHub sends) unless None."""
        self._add(n, _Fault("rate_limit", endpoint, status=403, retry_after=retry_after))

    def reject_next(self, n: int = 1, *, endpoint: str | None = "access_tokens") -> None:
        """422 with GitHub's inaccessible-repository message, whatever was asked."""
        self._add(n, _Fault("422", endpoint, status=422))

    def garbage_next(self, n: int = 1, *, endpoint: str | None = None) -> None:
        """A success status whose body is not JSON (a proxy's page, a cut-off answer)."""
        self._add(n, _Fault("garbage", endpoint, status=200))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def calls_of(self, endpoint: str) -> int:
        with self._lock:
            return self.calls[endpoint]

    def live_tokens(self) -> list[str]:
        now = self.now()
        with self._lock:
            return [t for t, i in self.issued.items() if not i.revoked and i.expires_at > now]

    def token_state(self, token: str) -> IssuedToken | None:
        """A copy of what the stand-in issued as ``token`` (scope, permissions, expiry on its clock, revoked),
        None for a token it never issued: for stand-ins that take its tokens (``git_http.py``) and tests."""
        with self._lock:
            issued = self.issued.get(token)
            return dataclasses.replace(issued, permissions=dict(issued.permissions)) if issued else None

    def token_valid(self, token: str) -> IssuedToken | None:
        """``token_state`` when the token is still good (issued here, not revoked, not expired), else None."""
        issued = self.token_state(token)
        if issued is None or issued.revoked or issued.expires_at <= self.now():
            return None
        return issued

    def expire(self, token: str) -> None:
        """Ends ``token``'s life now on the stand-in's clock, as if its hour were up, while its holders (the
        broker's cache) still believe it good."""
        with self._lock:
            self.issued[token].expires_at = self.now() - 1

    def _add(self, n: int, fault: _Fault) -> None:
        if fault.endpoint is not None and fault.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {fault.endpoint!r}; one of {ENDPOINTS}")
        with self._lock:
            self._faults.extend(fault for _ in range(n))

    def _take_fault(self, endpoint: str) -> _Fault | None:
        for i, fault in enumerate(self._faults):
            if fault.endpoint in (None, endpoint):
                del self._faults[i]
                return fault
        return None

    # -- answering ---------------------------------------------------------------------------------

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)

    def _error_reply(self, status: int, message: str) -> web.Response:
        return self._json(status, _body(message, status))

    def _wrap(
        self, endpoint: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            with self._lock:
                self.calls[endpoint] += 1
                fault = self._take_fault(endpoint)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if self.delay > 0:
                    await asyncio.sleep(self.delay)
            finally:
                with self._lock:
                    self.in_flight -= 1
            if fault is None:
                resp = await handler(request)
            elif fault.kind == "5xx":
                resp = self._json(fault.status, {"message": "Server Error"})
            elif fault.kind == "rate_limit":
                headers = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after is not None else {}
                resp = self._json(403, _body(MSG_SECONDARY, 403), headers)
            elif fault.kind == "422":
                resp = self._error_reply(422, MSG_REPOSITORIES)
            else:
                resp = web.Response(
                    status=fault.status, body=b"<html><body>upstream hiccup", content_type="application/json"
                )
            # GitHub's Date is GitHub's clock: the client learns its offset from it.
            resp.headers["Date"] = email.utils.formatdate(self.now(), usegmt=True)
            return resp

        return handle

    def _check_app_jwt(self, request: web.Request) -> web.Response | None:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credential:
            return self._error_reply(401, MSG_UNDECODABLE)
        try:
            # The signature only: the claims are checked below, against the stand-in's clock, with
            # GitHub's messages and GitHub's leniency (``iss`` a number or a string).
            claims = json.loads(jws.decode(credential, self.key.public_key, algorithms=["RS256"]))
        except (jwt.PyJWTError, ValueError):
            return self._error_reply(401, MSG_UNDECODABLE)
        if not isinstance(claims, dict):
            return self._error_reply(401, MSG_UNDECODABLE)
        iss = claims.get("iss")
        # GitHub finds the key by ``iss``; another app's id means the signature cannot be checked.
        if isinstance(iss, bool) or not isinstance(iss, int | str) or str(iss) != str(self.app_id):
            return self._error_reply(401, MSG_UNDECODABLE)
        now = self.now()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or isinstance(iat, bool) or iat > now + JWT_LEEWAY:
            return self._error_reply(401, MSG_IAT)
        if not isinstance(exp, int) or isinstance(exp, bool) or exp <= now:
            return self._error_reply(401, MSG_EXPIRED)
        if exp - iat > JWT_MAX_LIFETIME or exp > now + JWT_MAX_LIFETIME + JWT_LEEWAY:
            return self._error_reply(401, MSG_EXP_TOO_FAR)
        with self._lock:
            self.jwt_claims.append(claims)
        return None

    def _installation_of(self, request: web.Request) -> Installation | None:
        try:
            return self.installations.get(int(request.match_info["id"]))
        except ValueError:
            return None

    def _repo_json(self, inst: Installation, name: str) -> dict[str, Any]:
        return {
            "id": 100_000 + inst.repositories.index(name),
            "name": name,
            "full_name": f"{inst.account}/{name}",
            "private": True,
            "owner": {"login": inst.account, "type": "Organization"},
        }

    async def _installation(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._check_app_jwt(request)) is not None:
            return denied
        inst = self._installation_of(request)
        if inst is None:
            return self._error_reply(404, MSG_NOT_FOUND)
        return self._json(
            200,
            {
                "id": inst.id,
                "app_id": self.app_id,
                "account": {"login": inst.account, "id": 9000 + inst.id, "type": "Organization"},
                "target_type": "Organization",
                "repository_selection": "selected",
                "permissions": inst.permissions,
            },
        )

    async def _access_tokens(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._check_app_jwt(request)) is not None:
            return denied
        inst = self._installation_of(request)
        if inst is None:
            return self._error_reply(404, MSG_NOT_FOUND)
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return self._error_reply(400, "Problems parsing JSON")
        if not isinstance(body, dict):
            return self._error_reply(400, "Problems parsing JSON")
        with self._lock:
            self.token_requests.append(body)

        names = body.get("repositories")
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            return self._error_reply(
                422, "Invalid request.\n\nFor 'properties/repositories', it is not an array of strings."
            )
        scope: tuple[str, ...] | None = None
        # As GitHub does: an empty list is no restriction at all (the client must never send one).
        if names:
            if len(names) > MAX_REPOSITORIES:
                return self._error_reply(
                    422, f"Invalid request.\n\nThe maximum number of repositories is {MAX_REPOSITORIES}."
                )
            known = {r.lower(): r for r in inst.repositories}
            if any(n.lower() not in known for n in names):
                return self._error_reply(422, MSG_REPOSITORIES)
            scope = tuple(dict.fromkeys(known[n.lower()] for n in names))

        asked = body.get("permissions")
        if asked is None:
            permissions = dict(inst.permissions)
        else:
            if not isinstance(asked, dict):
                return self._error_reply(422, "Invalid request.\n\nFor 'properties/permissions', it is not an object.")
            for name, level in asked.items():
                allowed = inst.permissions.get(name)
                if allowed is None or level not in LEVELS or LEVELS[level] > LEVELS[allowed]:
                    return self._error_reply(422, MSG_PERMISSIONS)
            permissions = dict(asked)

        token = "ghs_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(36))
        expires_at = self.now() + self.token_ttl
        with self._lock:
            self.issued[token] = IssuedToken(inst.id, scope, permissions, expires_at)
        out: dict[str, Any] = {
            "token": token,
            "expires_at": _iso_z(expires_at),
            "permissions": permissions,
            "repository_selection": "selected" if scope is not None else "all",
        }
        if scope is not None:
            out["repositories"] = [self._repo_json(inst, n) for n in scope]
        return self._json(201, out)

    def _check_token(self, request: web.Request) -> tuple[str, IssuedToken] | web.Response:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        with self._lock:
            issued = self.issued.get(credential) if scheme.lower() in ("token", "bearer") else None
        if issued is None or issued.revoked or issued.expires_at <= self.now():
            return self._error_reply(401, MSG_BAD_CREDENTIALS)
        return credential, issued

    async def _revoke(self, request: web.Request) -> web.StreamResponse:
        checked = self._check_token(request)
        if isinstance(checked, web.Response):
            return checked
        with self._lock:
            checked[1].revoked = True
        return web.Response(status=204)

    async def _repositories(self, request: web.Request) -> web.StreamResponse:
        checked = self._check_token(request)
        if isinstance(checked, web.Response):
            return checked
        issued = checked[1]
        inst = self.installations[issued.installation_id]
        names = issued.repositories if issued.repositories is not None else tuple(inst.repositories)
        return self._json(
            200,
            {
                "total_count": len(names),
                "repository_selection": "selected" if issued.repositories is not None else "all",
                "repositories": [self._repo_json(inst, n) for n in names],
            },
        )
