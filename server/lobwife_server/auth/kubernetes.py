"""Kubernetes projected service-account tokens as lobwife credentials.

A pod asks the kubelet for a token with audience ``lobwife`` (a ``serviceAccountToken``
projected volume); the API server signs it with the cluster's service-account key,
whose public half the cluster publishes as OIDC discovery + a JWKS. lobwife checks
the token against those keys (a JWKS URL, found by discovery from the issuer when
not given, or a file), its issuer and audience, and maps it:

- to a role by ``namespace/serviceaccount`` (the role map; ``namespace/*`` matches
  every account of a namespace; an account it does not name gets no role: 403);
- for the task role, to a task by the pod the token is bound to: its name or UID
  (the token's ``kubernetes.io.pod`` claims, which the API server writes) must be
  what the task's ``assigned_to`` recorded when it was registered. Never labels or
  env, which anyone who may patch the pod could change.

Keys are cached. A token with an unknown ``kid`` refetches them (a rotated cluster
key), at most once per ``refetch_interval`` however many such tokens arrive, and
the cache is refreshed when older than ``max_age``. Fetching never blocks the
event loop (aiohttp; a file is read in a thread). When keys cannot be had at all,
calls answer UNAVAILABLE rather than blaming the credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import jwt

from lobwife_server.auth.policy import Role
from lobwife_server.auth.tokens import LEEWAY, AuthError, Identity, Source, decode

log = logging.getLogger("lobwife.auth")

AUDIENCE = "lobwife"
#: The algorithms Kubernetes signs service-account tokens with.
ALGORITHMS = frozenset({"RS256", "ES256"})
_REQUIRED = ["exp", "iat", "iss", "aud", "sub"]
FETCH_TIMEOUT = 5.0
MAX_JWKS_BYTES = 1 << 20


class WorkerDirectory(Protocol):
    """Finds the live task a worker pod was registered for."""

    async def task_of_worker(self, names: Sequence[str]) -> int | None:
        """The one live task whose ``assigned_to`` is one of ``names`` (pod name, pod UID); else None."""
        ...


@dataclass(frozen=True)
class KubernetesSettings:
    """How to trust the cluster's tokens (``--k8s-*`` options)."""

    issuer: str
    jwks_url: str | None = None
    jwks_file: Path | None = None
    #: CA bundle for the JWKS URL (in a cluster: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt).
    ca_file: Path | None = None
    #: A bearer token file sent when fetching keys (the API server's JWKS wants one unless anonymous).
    fetch_token_file: Path | None = None
    #: ``namespace/serviceaccount`` (or ``namespace/*``) -> role.
    roles: Mapping[str, Role] = field(default_factory=dict)
    audience: str = AUDIENCE
    refetch_interval: float = 30.0
    max_age: float = 3600.0


def load_role_map(path: Path) -> dict[str, Role]:
    """A TOML role map: a ``[roles]`` table of ``"namespace/serviceaccount" = "role"``. ValueError naming the entry."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"{path}: cannot read the role map: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    table = data.get("roles")
    if not isinstance(table, dict):
        raise ValueError(f'{path}: expected a [roles] table of "namespace/serviceaccount" = "role"')
    return parse_role_map(table.items(), str(path))


def parse_role_map(entries: Any, where: str) -> dict[str, Role]:
    out: dict[str, Role] = {}
    for key, value in entries:
        ns, slash, sa = str(key).partition("/")
        if not slash or not ns or not sa or "/" in sa:
            raise ValueError(f"{where}: {key!r}: expected namespace/serviceaccount (or namespace/*)")
        try:
            out[f"{ns}/{sa}"] = Role(value)
        except ValueError:
            raise ValueError(f"{where}: {key!r}: role must be one of admin, service, task, reader") from None
    return out


class JwksSource:
    """The cluster's signing keys by ``kid``: fetched, cached, refetched on an unknown kid (rate-limited)."""

    def __init__(self, settings: KubernetesSettings, clock: Any = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._jwks_url = settings.jwks_url
        #: Completed fetches (tests and the docs' claim that refetch is bounded).
        self.fetches = 0

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key for ``kid``; AuthError ``unknown_key``, or ``keys_unavailable`` when none can be had."""
        now = self.clock()
        stale = self._fetched_at is None or now - self._fetched_at > self.settings.max_age
        found = self._keys.get(kid)
        if found is not None and not stale:
            return found
        async with self._lock:
            found = self._keys.get(kid)
            now = self.clock()
            due = self._fetched_at is None or now - self._fetched_at >= self.settings.refetch_interval
            if (found is None or stale) and due:
                await self._refresh()
            found = self._keys.get(kid)
        if found is not None:
            return found
        if not self._keys:
            raise AuthError("keys_unavailable", "the cluster's signing keys cannot be fetched")
        raise AuthError("unknown_key", "the token's signing key is not one of the cluster's")

    async def _refresh(self) -> None:
        self._fetched_at = self.clock()  # a failed fetch waits its turn too: no hammering a broken endpoint
        try:
            doc = await self._fetch()
        except (TimeoutError, OSError, aiohttp.ClientError, ValueError) as e:
            log.warning("cannot fetch the cluster's signing keys; keeping the ones cached", extra={"error": str(e)})
            return
        keys: dict[str, jwt.PyJWK] = {}
        for entry in doc.get("keys", []) if isinstance(doc, dict) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or not isinstance(entry.get("kid"), str):
                continue
            try:
                jwk = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue  # a key of a kind lobwife does not verify with: skipped, not fatal
            if jwk.algorithm_name in ALGORITHMS:
                keys[entry["kid"]] = jwk
        self.fetches += 1
        if not keys:
            log.warning("the cluster's JWKS has no usable signing key (RS256 or ES256)")
            return
        self._keys = keys

    async def _fetch(self) -> Any:
        s = self.settings
        if s.jwks_file is not None:
            text = await asyncio.to_thread(s.jwks_file.read_bytes)
            return _json(text)
        if self._jwks_url is None:
            discovery = await self._get_json(s.issuer.rstrip("/") + "/.well-known/openid-configuration")
            uri = discovery.get("jwks_uri") if isinstance(discovery, dict) else None
            if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
                raise ValueError("the issuer's discovery document has no jwks_uri")
            self._jwks_url = uri
        return await self._get_json(self._jwks_url)

    async def _get_json(self, url: str) -> Any:
        s = self.settings
        if self._session is None:
            ctx = ssl.create_default_context(cafile=str(s.ca_file)) if s.ca_file else None
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT),
                connector=aiohttp.TCPConnector(ssl=ctx) if ctx is not None else None,
            )
        headers = {"Accept": "application/json"}
        if s.fetch_token_file is not None:
            token = (await asyncio.to_thread(s.fetch_token_file.read_text)).strip()
            headers["Authorization"] = f"Bearer {token}"
        async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
            if resp.status != 200:
                raise ValueError(f"GET {url}: HTTP {resp.status}")
            body = await resp.content.read(MAX_JWKS_BYTES + 1)
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError(f"GET {url}: the document is larger than {MAX_JWKS_BYTES} bytes")
            return _json(body)

    async def close(self) -> None:
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
            self._session = None


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise ValueError("not a JSON document") from None


class KubernetesVerifier:
    """Checks a projected service-account token and maps it to an :class:`Identity`."""

    def __init__(
        self,
        settings: KubernetesSettings,
        workers: WorkerDirectory,
        source: JwksSource | None = None,
        *,
        leeway: float = LEEWAY,
    ) -> None:
        self.settings = settings
        self.workers = workers
        self.source = source if source is not None else JwksSource(settings)
        self.leeway = leeway

    async def verify(self, token: str, header: dict[str, Any]) -> tuple[Identity, float | None]:
        """The identity and until when it may be cached (None: do not cache it); AuthError otherwise."""
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthError("algorithm", "the token's algorithm is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthError("unknown_key", "the token names no signing key (kid)")
        jwk = await self.source.key(kid)
        if jwk.algorithm_name != alg:
            # The header must not pick another algorithm than the key's (RS256 key, ES256 header...).
            raise AuthError("algorithm", "the token's algorithm does not match its key")
        s = self.settings
        claims = decode(
            token,
            jwk.key,
            [alg],
            audience=s.audience,
            issuer=s.issuer,
            leeway=self.leeway,
            now=time.time(),
            required=_REQUIRED,
        )
        k8s = claims.get("kubernetes.io")
        if not isinstance(k8s, dict):
            raise AuthError("claims", "not a service-account token (no kubernetes.io claims)")
        ns = k8s.get("namespace")
        sa = (k8s.get("serviceaccount") or {}).get("name") if isinstance(k8s.get("serviceaccount"), dict) else None
        if (
            not isinstance(ns, str)
            or not isinstance(sa, str)
            or claims.get("sub") != f"system:serviceaccount:{ns}:{sa}"
        ):
            raise AuthError("claims", "the token's service account claims disagree")
        role = s.roles.get(f"{ns}/{sa}") or s.roles.get(f"{ns}/*")
        if role is None:
            raise AuthError("unmapped", f"service account {ns}/{sa} has no role in lobwife's role map")
        pod = k8s.get("pod") if isinstance(k8s.get("pod"), dict) else None
        pod_name = pod.get("name") if pod else None
        subject = f"{ns}/{sa}" + (f"@{pod_name}" if isinstance(pod_name, str) else "")
        exp = float(claims["exp"])
        task: int | None = None
        if role is Role.TASK:
            names = [v for v in ((pod or {}).get("name"), (pod or {}).get("uid")) if isinstance(v, str) and v]
            task = await self.workers.task_of_worker(names) if names else None
            if task is None:
                # Not cached: the pod may be registered a moment from now.
                return Identity(role, subject, None, Source.KUBERNETES, exp), None
        return Identity(role, subject, task, Source.KUBERNETES, exp), exp

    async def close(self) -> None:
        await self.source.close()
