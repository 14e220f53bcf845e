"""The dispatcher's auth hook: authenticate the call, look up its rule, admit or refuse it.

Modes (``--auth``):

- ``off``: no hook at all (the dispatcher's default AllowAll): every call allowed.
- ``permissive``: every call is authenticated and decided as ``enforce`` would, then let
  through; what enforce would refuse is logged and counted
  (``lobwife_auth_would_deny_total{rule,reason}``), so a live fleet can move to enforce
  once the counter stays at zero.
- ``enforce``: a missing or bad credential is UNAUTHENTICATED (HTTP 401), a role the
  rule does not admit PERMISSION_DENIED (403); counted as ``lobwife_auth_denied_total``.

Every refusal logs who (subject and role, when known), what (the RPC) and why; never
the credential. A public rule (health) does not look at credentials at all.

A task identity is checked twice: its task must still be live (not completed, failed,
cancelled or deregistered: else the credential no longer authenticates, 401), and a
call under a task-scoped rule must name that same task (else 403).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import grpc
import jwt
from google.protobuf import message

from lobwife_server.api.rpc import CallContext, MethodInfo
from lobwife_server.auth.keys import KeyRing
from lobwife_server.auth.kubernetes import KubernetesVerifier
from lobwife_server.auth.policy import RULES, Role, Rule
from lobwife_server.auth.tokens import ISSUER, AuthError, Identity, LobwifeTokens, VerifiedCache
from lobwife_server.core import metrics
from lobwife_server.core.errors import ApiError

log = logging.getLogger("lobwife.auth")

#: Longer than any JWT lobwife or Kubernetes issues; a longer header is not hashed or parsed.
MAX_TOKEN_CHARS = 8192
#: How often the key file is looked at for a rotation (which retires a key the cache may hold).
RING_WATCH_INTERVAL = 5.0


class Mode(enum.StrEnum):
    """``--auth``: off (no checks), permissive (decide and count, let through), enforce (refuse)."""

    OFF = "off"
    PERMISSIVE = "permissive"
    ENFORCE = "enforce"


class TaskDirectory(Protocol):
    """What auth needs to know about tasks; the app implements it over the task store (read-only)."""

    async def resolve(self, ref: str) -> int | None:
        """The number of the task ``ref`` names (``42``, ``T42``, ...), None when it names none."""
        ...

    async def is_live(self, number: int) -> bool:
        """The task exists and has not completed, failed, been cancelled or been deregistered."""
        ...

    async def task_of_worker(self, names: Sequence[str]) -> int | None:
        """The one live task whose ``assigned_to`` is one of ``names`` (a pod's name or UID), else None."""
        ...


class MemoryDirectory:
    """A TaskDirectory over a dict of task number -> live (tests; a fleet without a store)."""

    def __init__(self, live: Mapping[int, bool] | None = None, workers: Mapping[str, int] | None = None) -> None:
        self.live: dict[int, bool] = dict(live or {})
        self.workers: dict[str, int] = dict(workers or {})

    async def resolve(self, ref: str) -> int | None:
        text = ref.strip()
        digits = text[1:] if text[:1] in ("T", "t") else text
        return int(digits) if digits.isdigit() and int(digits) > 0 else None

    async def is_live(self, number: int) -> bool:
        return self.live.get(number, False)

    async def task_of_worker(self, names: Sequence[str]) -> int | None:
        found = {self.workers[n] for n in names if n in self.workers and self.live.get(self.workers[n], False)}
        return found.pop() if len(found) == 1 else None


class Authenticator:
    """A bearer token -> Identity: the verified-token cache first, then the verifier its issuer names."""

    def __init__(
        self,
        tokens: LobwifeTokens | None,
        kubernetes: KubernetesVerifier | None = None,
        cache: VerifiedCache | None = None,
    ) -> None:
        self.tokens = tokens
        self.kubernetes = kubernetes
        self.cache = cache if cache is not None else VerifiedCache()
        self._reload_lock = asyncio.Lock()

    def cached(self, token: str) -> Identity | None:
        """The identity of a token verified before and not expired since (no I/O, no await: the hot path)."""
        return self.cache.get(self.cache.key(token))

    async def identify(self, token: str) -> Identity:
        key = self.cache.key(token)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        identity, until = await self._verify(token)
        if until is not None:
            self.cache.put(key, identity, until)
        return identity

    async def _verify(self, token: str) -> tuple[Identity, float | None]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise AuthError("malformed", "the credential is not a JWT") from None
        iss = unverified.get("iss")
        if iss == ISSUER and self.tokens is not None:
            try:
                identity, until = self.tokens.verify(token, header)
            except AuthError as e:
                if e.reason != "unknown_key" or not await self.reload_ring():
                    raise
                identity, until = self.tokens.verify(token, header)  # a key minted since start (rotation)
            return identity, until
        if self.kubernetes is not None and iss == self.kubernetes.settings.issuer:
            return await self.kubernetes.verify(token, header)
        raise AuthError("issuer", "the token's issuer is not trusted")

    async def reload_ring(self) -> bool:
        """Read the key file again if it changed on disk; True when the ring changed.

        A kid the ring lacks costs one stat of the file (off the loop), and a read only when the
        file changed: not rate-limited, since a limit would refuse a freshly rotated key's first
        tokens for as long as unknown kids (a client of another lobwife, say) kept arriving.
        """
        tokens = self.tokens
        if tokens is None or tokens.ring.path is None:
            return False
        async with self._reload_lock:
            ring = tokens.ring
            if not await asyncio.to_thread(ring.changed_on_disk):
                return False
            assert ring.path is not None
            try:
                fresh = await asyncio.to_thread(KeyRing.load, ring.path, writable=ring.writable)
            except Exception as e:  # keep verifying with the ring we have
                log.error("cannot reload the signing keys; keeping the loaded ones", extra={"error": str(e)})
                return False
            tokens.ring = fresh
            # A rotation may have put an end to a key whose tokens are cached: check them again.
            self.cache.clear()
            log.info("signing keys reloaded", extra={"kids": fresh.kids(), "current_kid": fresh.current.kid})
            return True


_UNAVAILABLE_REASONS = frozenset({"keys_unavailable"})
_FORBIDDEN_REASONS = frozenset({"unmapped"})


def bearer(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` value; AuthError when there is none."""
    if not header:
        raise AuthError("missing", "no credential: send 'authorization: Bearer <token>'")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("malformed", "the authorization header must be 'Bearer <token>'")
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthError("malformed", "the credential is too long to be a token")
    return token


class Enforcer:
    """The :class:`~lobwife_server.api.rpc.Authorizer` for ``permissive`` and ``enforce``."""

    def __init__(
        self,
        mode: Mode,
        authenticator: Authenticator,
        directory: TaskDirectory,
        rules: Mapping[str, Rule] = RULES,
    ) -> None:
        if mode is Mode.OFF:
            raise ValueError("auth off has no enforcer: the dispatcher's AllowAll is used")
        self.mode = mode
        self.enforce = mode is Mode.ENFORCE
        self.authn = authenticator
        self.directory = directory
        self.rules = dict(rules)
        self._watch: asyncio.Task[None] | None = None

    async def authorize(self, method: MethodInfo, request: message.Message, ctx: CallContext) -> None:
        rule = self.rules.get(method.full_name)
        if rule is None:  # the app refuses to start without one; fail closed all the same
            return self._refuse(method, ctx, None, grpc.StatusCode.PERMISSION_DENIED, "no_rule", "no rule for this RPC")
        if rule.public:
            return None
        try:
            token = bearer(ctx.metadata.get("authorization"))
            identity = self.authn.cached(token) or await self.authn.identify(token)
            if identity.task is not None and not await self.directory.is_live(identity.task):
                raise AuthError("task_ended", f"the credential's task {identity.task_ref} has ended")
        except AuthError as e:
            code = grpc.StatusCode.UNAUTHENTICATED
            if e.reason in _FORBIDDEN_REASONS:
                code = grpc.StatusCode.PERMISSION_DENIED
            elif e.reason in _UNAVAILABLE_REASONS:
                code = grpc.StatusCode.UNAVAILABLE
            return self._refuse(method, ctx, None, code, e.reason, e.message)
        ctx.identity = identity
        if not rule.admits(identity.role):
            return self._refuse(
                method,
                ctx,
                identity,
                grpc.StatusCode.PERMISSION_DENIED,
                "role",
                f"the {identity.role.value} role may not call {method.name}",
            )
        if identity.role is Role.TASK and not rule.any_task:
            if identity.task is None:
                return self._refuse(
                    method,
                    ctx,
                    identity,
                    grpc.StatusCode.PERMISSION_DENIED,
                    "unbound",
                    "this worker is not registered for any live task (assigned_to)",
                )
            assert rule.task_field is not None
            refs = task_refs(request, rule.task_field)
            numbers = {await self.directory.resolve(ref) if ref else None for ref in refs}
            if numbers != {identity.task}:
                return self._refuse(
                    method,
                    ctx,
                    identity,
                    grpc.StatusCode.PERMISSION_DENIED,
                    "other_task",
                    f"a task credential may only name its own task ({identity.task_ref}) in {rule.task_field}",
                )
        return None

    def _refuse(
        self,
        method: MethodInfo,
        ctx: CallContext,
        identity: Identity | None,
        code: grpc.StatusCode,
        reason: str,
        message: str,
    ) -> None:
        fields: dict[str, Any] = {
            "method": method.full_name,
            "reason": reason,
            "code": code.name,
            "transport": ctx.transport,
            "peer": ctx.peer,
            "role": identity.role.value if identity else None,
            "subject": identity.subject if identity else None,
            "auth_source": identity.source.value if identity else None,
        }
        if identity is not None and identity.task is not None:
            fields["task"] = identity.task_ref
        if self.enforce:
            metrics.AUTH_DENIED.labels(method.full_name, reason).inc()
            # The RPC and reason are in the template, not arguments: warnings are rate-limited per template
            # (core.logs.RateLimitFilter), so a flood of one refusal cannot hide the others.
            log.warning(f"auth denied {method.full_name} ({reason}): %s", message, extra=fields)
            # "auth: " tells a client (and a test) this refusal from a 403 an implementation answers.
            raise ApiError(code, f"auth: {message}", reason=f"AUTH_{reason.upper()}")
        metrics.AUTH_WOULD_DENY.labels(method.full_name, reason).inc()
        log.warning(f"auth would deny {method.full_name} ({reason}, permissive): %s", message, extra=fields)

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        """Watch the key file for rotations (cheap: a stat every few seconds, in a thread)."""
        if self._watch is None and self.authn.tokens is not None and self.authn.tokens.ring.path is not None:
            self._watch = asyncio.create_task(self._watch_ring())

    async def _watch_ring(self) -> None:
        while True:
            await asyncio.sleep(RING_WATCH_INTERVAL)
            with contextlib.suppress(Exception):
                await self.authn.reload_ring()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self.authn.kubernetes is not None:
            await self.authn.kubernetes.close()


def task_refs(request: object, task_field: str) -> list[str]:
    """The task references a request names in ``task_field``: ``task_id``, or ``items.task_id`` for
    each item of a repeated field (a batch; an empty batch names none, and is refused for a task)."""
    outer, _, inner = task_field.partition(".")
    if not inner:
        return [getattr(request, task_field, "")]
    return [getattr(item, inner, "") for item in getattr(request, outer, ())]
