"""A Kubernetes-style OIDC issuer: a real HTTP server on a free 127.0.0.1 port, in a thread with its own loop.

It serves what a cluster's API server publishes for service-account tokens:

* ``GET /.well-known/openid-configuration``: ``issuer`` and ``jwks_uri``;
* ``GET /openid/v1/jwks``: the public signing keys (RS256 by default, ES256 on request).

and signs projected service-account tokens the way the API server does
(:meth:`FakeOIDC.sa_token`: ``iss``, ``aud`` list, ``sub``
``system:serviceaccount:NS:SA``, ``kubernetes.io`` with namespace, service account
and pod). :meth:`rotate` adds a new current key (``keep_old`` keeps the old one
published); ``fetches`` counts the JWKS requests and ``discoveries`` the discovery
ones; ``fail_next`` answers 503 to the next JWKS requests.

    with FakeOIDC() as oidc:
        token = oidc.sa_token("lobmob", "lobster", pod="lobster-t1-abc")
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.fakes._server import LocalServer


@dataclass
class _Key:
    kid: str
    alg: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        algo = jwt.get_algorithm_by_name(self.alg)
        jwk: dict[str, Any] = json.loads(algo.to_jwk(self.private.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": self.alg})
        return jwk


def _new_key(alg: str) -> _Key:
    private: Any
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(alg)
    return _Key(uuid.uuid4().hex[:16], alg, private)


class FakeOIDC(LocalServer):
    """A cluster's OIDC issuer as the Kubernetes path sees it: discovery and JWKS, rotating keys, fetch counts."""

    name = "fake OIDC issuer"

    def __init__(self, alg: str = "RS256") -> None:
        self.alg = alg
        self.keys: list[_Key] = [_new_key(alg)]
        self.fetches = 0
        self.discoveries = 0
        self.fail_jwks = 0
        self._lock = threading.Lock()
        super().__init__()

    # -- what tests use ---------------------------------------------------------

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/openid/v1/jwks"

    @property
    def current(self) -> _Key:
        return self.keys[0]

    def rotate(self, *, keep_old: bool = True, alg: str | None = None) -> _Key:
        key = _new_key(alg or self.alg)
        with self._lock:
            self.keys = [key, *self.keys] if keep_old else [key]
        return key

    def fail_next(self, n: int = 1) -> None:
        with self._lock:
            self.fail_jwks += n

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [k.public_jwk() for k in self.keys]}

    def sa_token(
        self,
        namespace: str,
        service_account: str,
        *,
        pod: str | None = None,
        pod_uid: str | None = None,
        audience: str | list[str] = "lobwife",
        ttl: float = 3600,
        issuer: str | None = None,
        key: _Key | None = None,
        now: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """A projected service-account token as the API server would sign it."""
        now = time.time() if now is None else now
        k8s: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": service_account, "uid": str(uuid.uuid4())},
        }
        if pod is not None:
            k8s["pod"] = {"name": pod, "uid": pod_uid or str(uuid.uuid4())}
        claims: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "aud": [audience] if isinstance(audience, str) else audience,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + ttl),
            "jti": str(uuid.uuid4()),
            "kubernetes.io": k8s,
            **(extra or {}),
        }
        k = key or self.current
        return jwt.encode(claims, k.private, algorithm=k.alg, headers={"kid": k.kid})

    # -- the server -------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/openid/v1/jwks", self._jwks)
        return app

    async def _discovery(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.discoveries += 1
        return web.json_response(
            {
                "issuer": self.issuer,
                "jwks_uri": self.jwks_url,
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [self.alg],
            }
        )

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.fetches += 1
            failing = self.fail_jwks > 0
            if failing:
                self.fail_jwks -= 1
        if failing:
            return web.json_response({"error": "unavailable"}, status=503)
        return web.json_response(self.jwks())
