"""The auth options (``--auth``, ``--auth-signing-key``, ``--k8s-*``) and what the app builds from them.

config.py adds these flags to ``lobwife serve`` and stores an :class:`AuthSettings`; the app
calls :func:`build` once the task store is up. Flags win over environment variables.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lobwife_server.api.rpc import AllowAll, Authorizer
from lobwife_server.auth.enforcer import Authenticator, Enforcer, Mode, TaskDirectory
from lobwife_server.auth.keys import KeyRing
from lobwife_server.auth.kubernetes import KubernetesSettings, KubernetesVerifier, load_role_map, parse_role_map
from lobwife_server.auth.policy import Role
from lobwife_server.auth.service import AuthService
from lobwife_server.auth.tokens import LobwifeTokens

log = logging.getLogger("lobwife.auth")

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``1h``, ``7d`` -> seconds. ValueError otherwise."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"expected a duration like 90s, 30m, 1h or 7d, got {text[:40]!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


@dataclass(frozen=True)
class AuthSettings:
    """The auth options as configured (``--auth``, the signing key, the Kubernetes token settings)."""

    mode: Mode = Mode.OFF
    #: A key ring or Ed25519 PEM given as a secret; None: ``<state>/auth/signing-keys.json``, created on first start.
    signing_key_file: Path | None = None
    kubernetes: KubernetesSettings | None = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("auth (docs/auth.md)")
    g.add_argument(
        "--auth",
        choices=[m.value for m in Mode],
        help="off: every call allowed (the quick start's default); permissive: authenticate and decide every "
        "call, let it through, log and count what enforce would deny; enforce: 401/403 (env LOBWIFE_AUTH)",
    )
    g.add_argument(
        "--auth-signing-key",
        type=Path,
        help="signing key given as a secret: a lobwife key ring file or an Ed25519 PEM private key "
        "(env LOBWIFE_AUTH_SIGNING_KEY; default: <state-dir>/auth/signing-keys.json, created on first start)",
    )
    g.add_argument(
        "--k8s-issuer", help="trust Kubernetes projected service-account tokens of this issuer (env LOBWIFE_K8S_ISSUER)"
    )
    g.add_argument(
        "--k8s-jwks-url",
        help="the cluster's JWKS URL (env LOBWIFE_K8S_JWKS_URL; default: found by OIDC discovery from the issuer)",
    )
    g.add_argument("--k8s-jwks-file", type=Path, help="the cluster's JWKS as a file (env LOBWIFE_K8S_JWKS_FILE)")
    g.add_argument("--k8s-ca-file", type=Path, help="CA bundle for the JWKS URL (env LOBWIFE_K8S_CA_FILE)")
    g.add_argument(
        "--k8s-jwks-token-file",
        type=Path,
        help="bearer token file sent when fetching the JWKS (env LOBWIFE_K8S_JWKS_TOKEN_FILE)",
    )
    g.add_argument(
        "--k8s-role-map",
        type=Path,
        help='TOML file with a [roles] table of "namespace/serviceaccount" = "role" (env LOBWIFE_K8S_ROLE_MAP)',
    )
    g.add_argument(
        "--k8s-role",
        action="append",
        metavar="NS/SA=ROLE",
        help="one role mapping (repeatable; wins over the role map; env LOBWIFE_K8S_ROLES, comma-separated)",
    )
    g.add_argument(
        "--k8s-refetch-interval",
        type=float,
        help="least seconds between two JWKS fetches for an unknown kid (env LOBWIFE_K8S_REFETCH_INTERVAL; default 30)",
    )


def _path(value: Path | None, env: Mapping[str, str], name: str) -> Path | None:
    if value is not None:
        return value.expanduser()
    raw = env.get(name)
    return Path(raw).expanduser() if raw else None


def from_args(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> AuthSettings:
    """The settings; ValueError naming the flag and variable for a bad value."""
    raw_mode = args.auth or env.get("LOBWIFE_AUTH") or Mode.OFF.value
    try:
        mode = Mode(raw_mode.strip().lower())
    except ValueError:
        raise ValueError(f"--auth / LOBWIFE_AUTH={raw_mode!r}: expected off, permissive or enforce") from None
    key_file = _path(args.auth_signing_key, env, "LOBWIFE_AUTH_SIGNING_KEY")
    issuer = args.k8s_issuer or env.get("LOBWIFE_K8S_ISSUER") or None
    jwks_url = args.k8s_jwks_url or env.get("LOBWIFE_K8S_JWKS_URL") or None
    jwks_file = _path(args.k8s_jwks_file, env, "LOBWIFE_K8S_JWKS_FILE")
    role_map = _path(args.k8s_role_map, env, "LOBWIFE_K8S_ROLE_MAP")
    role_flags = args.k8s_role or [r for r in (env.get("LOBWIFE_K8S_ROLES") or "").split(",") if r.strip()]
    k8s: KubernetesSettings | None = None
    if issuer is None:
        if jwks_url or jwks_file or role_map or role_flags:
            raise ValueError("--k8s-* options need --k8s-issuer / LOBWIFE_K8S_ISSUER (the issuer tokens must name)")
    else:
        if jwks_url and jwks_file:
            raise ValueError("--k8s-jwks-url and --k8s-jwks-file: give one, not both")
        roles: dict[str, Role] = load_role_map(role_map) if role_map else {}
        pairs = []
        for entry in role_flags:
            name, eq, role = entry.strip().partition("=")
            if not eq:
                raise ValueError(f"--k8s-role / LOBWIFE_K8S_ROLES: {entry!r}: expected NAMESPACE/SERVICEACCOUNT=ROLE")
            pairs.append((name.strip(), role.strip()))
        roles.update(parse_role_map(pairs, "--k8s-role / LOBWIFE_K8S_ROLES"))
        refetch = args.k8s_refetch_interval
        if refetch is None:
            raw = env.get("LOBWIFE_K8S_REFETCH_INTERVAL")
            try:
                refetch = float(raw) if raw else 30.0
            except ValueError:
                raise ValueError(f"LOBWIFE_K8S_REFETCH_INTERVAL={raw!r}: expected seconds") from None
        if not 0 <= refetch <= 86400:
            raise ValueError("--k8s-refetch-interval: must be between 0 and 86400 seconds")
        k8s = KubernetesSettings(
            issuer=issuer,
            jwks_url=jwks_url,
            jwks_file=jwks_file,
            ca_file=_path(args.k8s_ca_file, env, "LOBWIFE_K8S_CA_FILE"),
            fetch_token_file=_path(args.k8s_jwks_token_file, env, "LOBWIFE_K8S_JWKS_TOKEN_FILE"),
            roles=roles,
            refetch_interval=refetch,
        )
    return AuthSettings(mode=mode, signing_key_file=key_file, kubernetes=k8s)


@dataclass
class AuthRuntime:
    """What the app wires in: the dispatcher's hook, AuthService, and a life cycle."""

    settings: AuthSettings
    tokens: LobwifeTokens
    service: AuthService
    authorizer: Authorizer = field(default_factory=AllowAll)
    enforcer: Enforcer | None = None

    def start(self) -> None:
        if self.enforcer is not None:
            self.enforcer.start()

    async def close(self) -> None:
        if self.enforcer is not None:
            await self.enforcer.close()


async def build(settings: AuthSettings, state_dir: Path, directory: TaskDirectory) -> AuthRuntime:
    """Load (or create, on first start) the signing keys and assemble the mode's hook.

    KeyFileError for a key file that cannot be used (the server does not start).
    """
    if settings.signing_key_file is not None:
        ring = await asyncio.to_thread(KeyRing.load, settings.signing_key_file)
    else:
        ring = await asyncio.to_thread(KeyRing.load_or_create, state_dir)
    tokens = LobwifeTokens(ring)
    service = AuthService(settings.mode, tokens, directory)
    if settings.mode is Mode.OFF:
        log.warning(
            "auth is off: every call is allowed, whoever makes it. Fine on a laptop, and for a fleet "
            "whose pods carry no credentials yet; see docs/auth.md to move to --auth permissive, then enforce"
        )
        return AuthRuntime(settings, tokens, service)
    k8s = KubernetesVerifier(settings.kubernetes, directory) if settings.kubernetes is not None else None
    enforcer = Enforcer(settings.mode, Authenticator(tokens, k8s), directory)
    log.info(
        "auth %s",
        settings.mode.value,
        extra={
            "kid": ring.current.kid,
            "kubernetes_issuer": settings.kubernetes.issuer if settings.kubernetes else None,
        },
    )
    return AuthRuntime(settings, tokens, service, enforcer, enforcer)
