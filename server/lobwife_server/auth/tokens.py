"""Caller identities, lobwife-signed JWTs (minted and verified), and the cache of verified tokens.

A lobwife token is a JWS (``EdDSA``, see :mod:`keys`) with the claims ``iss`` and
``aud`` (both ``lobwife``), ``sub``, ``iat``, ``nbf``, ``exp``, ``jti``, ``role``
and, for the task role, ``task`` (the task's number). Verification names the one
algorithm it accepts, so ``alg: none`` and an HS256 token "signed" with the public
key are refused before any signature math; every time claim is required and
checked with :data:`LEEWAY` seconds of clock skew.

Verifying a signature costs tens of microseconds, so a verified token is cached by
the SHA-256 of its text (the token itself is not kept) until it expires or its
signing key's grace ends, whichever is first (:class:`VerifiedCache`).
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from lobwife_server.auth.keys import ALGORITHM, KeyRing
from lobwife_server.auth.policy import Role

ISSUER = "lobwife"
AUDIENCE = "lobwife"
#: Seconds of clock skew allowed on exp, nbf and iat.
LEEWAY = 10.0
DEFAULT_TTL = 3600.0
MAX_TTL = 366 * 86400.0
MAX_SUBJECT = 128
#: Verified tokens remembered at once (each entry is a 32-byte hash and a small Identity).
CACHE_SIZE = 10_000


class Source(enum.StrEnum):
    """Where a credential comes from."""

    LOBWIFE = "lobwife"
    KUBERNETES = "kubernetes"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a call comes from, as its credential says (``CallContext.identity``)."""

    role: Role
    #: Who the credential names: a lobwife token's ``sub``, or ``namespace/serviceaccount`` (Kubernetes).
    subject: str
    #: The task a task identity is bound to (its number); None for the other roles.
    task: int | None
    source: Source
    #: When the credential expires (seconds since the epoch).
    expires_at: float

    @property
    def task_ref(self) -> str:
        return f"T{self.task}" if self.task is not None else ""


class AuthError(Exception):
    """A credential that does not authenticate. ``reason`` is one word from a fixed set (a metric label);
    the message says what is wrong, never what the credential was."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def check_subject(subject: str) -> str | None:
    """Why ``subject`` cannot name a token (None when it can)."""
    if not subject or not subject.strip():
        return "must not be blank"
    if len(subject) > MAX_SUBJECT:
        return f"at most {MAX_SUBJECT} characters"
    if not subject.isprintable():
        return "printable characters only"
    return None


def default_subject(role: Role, task: int | None) -> str:
    """The subject of a token minted without one: the role, or ``task-T42``."""
    return f"task-T{task}" if role is Role.TASK else role.value


class LobwifeTokens:
    """Mints and verifies lobwife-signed tokens with a :class:`KeyRing`."""

    def __init__(self, ring: KeyRing, *, leeway: float = LEEWAY, clock: Callable[[], float] = time.time) -> None:
        self.ring = ring
        self.leeway = leeway
        self.clock = clock

    def mint(
        self, role: Role, task: int | None = None, subject: str | None = None, ttl: float = DEFAULT_TTL
    ) -> tuple[str, float]:
        """A signed token and when it expires. ValueError for a bad combination (names what)."""
        role = Role(role)
        if role is Role.TASK:
            if task is None or task < 1:
                raise ValueError("task: a task token must name its task")
        elif task is not None:
            raise ValueError(f"task: only a task token names a task, not a {role.value} token")
        if not 0 < ttl <= MAX_TTL:
            raise ValueError(f"ttl: must be more than 0 and at most {MAX_TTL / 86400:g} days")
        subject = subject if subject is not None else default_subject(role, task)
        why = check_subject(subject)
        if why:
            raise ValueError(f"subject: {why}")
        now = int(self.clock())
        exp = now + int(ttl)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": secrets.token_urlsafe(12),
            "role": role.value,
        }
        if task is not None:
            claims["task"] = task
        key = self.ring.current
        token = jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})
        return token, float(exp)

    def verify(self, token: str, header: dict[str, Any]) -> tuple[Identity, float]:
        """The token's identity and until when it may be cached; AuthError otherwise.

        ``header`` is the token's unverified header (the caller has read it to pick this verifier).
        An unknown ``kid`` is ``AuthError("unknown_key")``: the caller may reload the ring and retry.
        """
        if header.get("alg") != ALGORITHM:
            raise AuthError(
                "algorithm", f"lobwife tokens are signed with {ALGORITHM}, not {str(header.get('alg'))[:16]}"
            )
        kid = header.get("kid")
        now = self.clock()
        if not isinstance(kid, str) or kid not in self.ring.keys:
            raise AuthError("unknown_key", "the token's signing key is not known")
        public = self.ring.public_key(kid, now)
        if public is None:
            raise AuthError("retired_key", "the token's signing key was retired and its grace period has ended")
        claims = decode(token, public, [ALGORITHM], audience=AUDIENCE, issuer=ISSUER, leeway=self.leeway, now=now)
        identity = _identity(claims)
        until = identity.expires_at
        key_end = self.ring.valid_until(kid)
        if key_end is not None:
            until = min(until, key_end)
        return identity, until


_REQUIRED = ["exp", "iat", "nbf", "iss", "aud", "sub"]


def decode(
    token: str,
    key: Any,
    algorithms: list[str],
    *,
    audience: str,
    issuer: str,
    leeway: float,
    now: float,
    required: list[str] = _REQUIRED,
) -> dict[str, Any]:
    """PyJWT's checks with every time claim required; its errors turned into AuthError reasons."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": required, "verify_signature": True},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("expired", "the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise AuthError("not_yet_valid", "the token is not valid yet (nbf or iat in the future)") from None
    except jwt.InvalidAudienceError:
        raise AuthError("audience", f"the token's audience is not {audience}") from None
    except jwt.InvalidIssuerError:
        raise AuthError("issuer", "the token's issuer is not trusted") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError("algorithm", "the token's algorithm is not accepted") from None
    except jwt.InvalidSignatureError:
        raise AuthError("signature", "the token's signature does not verify") from None
    except jwt.MissingRequiredClaimError as e:
        raise AuthError("claims", f"the token lacks the {e.claim} claim") from None
    except jwt.InvalidTokenError:
        raise AuthError("malformed", "the token is not a valid JWT") from None
    exp = claims.get("exp")
    # PyJWT checked exp against its own clock; ours (the injectable one) must agree too.
    if isinstance(exp, int | float) and exp + leeway < now:
        raise AuthError("expired", "the token has expired")
    return claims


def _identity(claims: dict[str, Any]) -> Identity:
    try:
        role = Role(str(claims.get("role")))
    except ValueError:
        raise AuthError("claims", "the token's role is not one of admin, service, task, reader") from None
    task = claims.get("task")
    if role is Role.TASK:
        if isinstance(task, bool) or not isinstance(task, int) or task < 1:
            raise AuthError("claims", "a task token must name its task")
    elif task is not None:
        raise AuthError("claims", "only a task token names a task")
    sub = claims.get("sub")
    if not isinstance(sub, str) or check_subject(sub):
        raise AuthError("claims", "the token's subject is not valid")
    return Identity(role, sub, task, Source.LOBWIFE, float(claims["exp"]))


class VerifiedCache:
    """Identities of verified tokens, by the SHA-256 of the token, each until its end; bounded (oldest out)."""

    def __init__(self, capacity: int = CACHE_SIZE, clock: Callable[[], float] = time.time) -> None:
        self.capacity = capacity
        self.clock = clock
        self._items: OrderedDict[bytes, tuple[Identity, float]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, key: bytes) -> Identity | None:
        entry = self._items.get(key)
        if entry is None:
            self.misses += 1
            return None
        if entry[1] <= self.clock():
            del self._items[key]
            self.misses += 1
            return None
        self.hits += 1
        return entry[0]

    def put(self, key: bytes, identity: Identity, until: float) -> None:
        self._items[key] = (identity, until)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def mint_from_state_dir(
    state_dir: Path,
    role: Role | str,
    task: int | str | None = None,
    subject: str | None = None,
    ttl: float = DEFAULT_TTL,
    *,
    key_file: Path | None = None,
) -> str:
    """A token signed with the state folder's key (created if there is none yet): ``lobwife auth mint``.

    Whoever can read the state folder can mint: local file access is the bootstrap of trust. With
    ``key_file`` (the server's ``--auth-signing-key``) that file signs instead. ``task`` is a task
    number or ``T42``. ValueError (naming the field) for a bad role, task, subject or ttl.
    """
    try:
        role = Role(role)
    except ValueError:
        raise ValueError(f"role: must be one of {', '.join(r.value for r in Role)}, got {role!r}") from None
    number: int | None = None
    if task is not None:
        text = str(task).strip()
        digits = text[1:] if text[:1] in ("T", "t") else text
        if not digits.isdigit() or int(digits) < 1:
            raise ValueError(f"task: must be a task number like 42 or T42, got {text[:40]!r}")
        number = int(digits)
    ring = KeyRing.load(key_file) if key_file is not None else KeyRing.load_or_create(Path(state_dir))
    token, _ = LobwifeTokens(ring).mint(role, number, subject, ttl)
    return token
