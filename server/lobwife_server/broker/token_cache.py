"""Installation tokens kept until shortly before they expire, one GitHub call per scope at a time.

A scope (:func:`cache_key`) is (installation, sorted repositories, sorted permissions): tasks that
registered the same repositories under the same lobster type share one token, so 10,000 requests
over 100 tasks sharing 10 repository sets cost 10 GitHub calls.

* A token is handed out until ``refresh_margin`` (5 minutes) before its ``expires_at``, so that no
  caller gets one about to lapse mid-``git push``; then the next request fetches a new one.
* Single-flight: concurrent requests for a scope with no usable token share one ``fetch``. The
  first caller's request is the fresh one (``reused`` False); everyone else, from the cache or
  joining the call in flight, gets ``reused`` True (audited as such). A failure is handed to
  everyone waiting and not kept: the next request tries again. A caller that gives up (cancelled,
  or its deadline) does not cancel the shared call, which still fills the cache for the others.
* Holders: a request may name its holder (the task). :meth:`release` drops a holder from every
  token and returns the tokens nobody holds any more, for the caller to revoke at GitHub; a token
  still shared with another task is not revoked under it.
* Bounded: at most ``max_entries`` tokens (default 1024). Past that, tokens due for refresh go
  first, then the least recently used. A token pushed out (by the bound, or replaced by its
  scope's next token) is no longer handed out but stays revocable: its holders may still be
  using it, so it is not revoked then, but it is kept with them (until it expires, at most
  ``max_entries`` of them, the nearest to expiry dropped first) so that :meth:`release` still
  frees it when its last holder ends, and a finished task's token does not live out its hour.

* A hit needs no coroutine: :meth:`lookup` answers from a kept token synchronously (with the token's
  audit digest and expiry, worked out once when it was kept); :meth:`get` is for a miss.

All of it runs on one event loop (no locks: nothing awaits between a lookup and its update).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc

from lobwife_server.broker.github import InstallationToken
from lobwife_server.core.errors import ApiError

#: (installation id, sorted lower-cased full names or None for all, sorted (permission, level) pairs)
CacheKey = tuple[int, tuple[str, ...] | None, tuple[tuple[str, str], ...]]

DEFAULT_MAX_ENTRIES = 1024
DEFAULT_REFRESH_MARGIN = 300.0  # seconds before expiry that a token stops being handed out
#: Hex digits of a token's SHA-256 kept in the audit: enough to match a token a holder shows, far
#: too few to be one.
SHA_PREFIX = 16


def token_digest(token: str) -> str:
    """The audit's handle on a token: a prefix of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:SHA_PREFIX]


def _epoch_us(at: datetime) -> int:
    """``at`` in microseconds since the epoch, a naive time taken as UTC (as Timestamp.FromDatetime takes it)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    # Integer arithmetic: no float rounding of the microseconds.
    return int(at.replace(microsecond=0).timestamp()) * 1_000_000 + at.microsecond


def cache_key(installation_id: int, repositories: Iterable[str] | None, permissions: Mapping[str, str]) -> CacheKey:
    repos = None if repositories is None else tuple(sorted({r.lower() for r in repositories}))
    return (installation_id, repos, tuple(sorted(permissions.items())))


@dataclass(frozen=True, slots=True)
class Cached:
    """A kept token as a request answered from the cache needs it: made once per token, not per request."""

    token: InstallationToken
    sha256: str  # token_digest(token.token), for the audit
    expires_us: int  # token.expires_at in microseconds since the epoch, for the response

    @classmethod
    def of(cls, token: InstallationToken) -> Cached:
        return cls(token, token_digest(token.token), _epoch_us(token.expires_at))


@dataclass
class _Entry:
    token: InstallationToken
    refresh_at: float  # on the cache's clock (epoch seconds)
    holders: set[str] = field(default_factory=set)
    cached: Cached | None = None  # made at the first hit (a token fetched and never reused needs none)


def _consume(task: asyncio.Task[InstallationToken]) -> None:
    # A shared call whose every waiter gave up still ends; its failure must not be reported as
    # "Task exception was never retrieved".
    if not task.cancelled():
        task.exception()


class TokenCache:
    """Installation tokens by scope until 5 minutes before expiry; one GitHub call per scope at a time; bounded."""

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.refresh_margin = refresh_margin
        self._clock = clock
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._inflight: dict[CacheKey, asyncio.Task[InstallationToken]] = {}
        self._pending_holders: dict[CacheKey, set[str]] = {}
        #: Tokens no longer handed out but still held: kept only to be freed by release().
        self._retired: list[_Entry] = []
        #: Requests answered from a kept token, joined to a call in flight, and calls started.
        self.hits = 0
        self.joined = 0
        self.fetches = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"TokenCache(entries={len(self._entries)}, in_flight={len(self._inflight)}, max={self.max_entries})"

    def lookup(self, key: CacheKey, holder: str | None = None) -> Cached | None:
        """The kept token for ``key`` (reused, by definition) when there is one still handed out, else None:
        then call :meth:`get`. Synchronous, so that a hit, the common case, costs no coroutine."""
        entry = self._entries.get(key)
        if entry is None or self._clock() >= entry.refresh_at:
            return None
        self._entries.move_to_end(key)
        if holder is not None:
            entry.holders.add(holder)
        self.hits += 1
        cached = entry.cached
        if cached is None:
            cached = entry.cached = Cached.of(entry.token)
        return cached

    async def get(
        self,
        key: CacheKey,
        fetch: Callable[[], Awaitable[InstallationToken]],
        *,
        holder: str | None = None,
        deadline: float | None = None,
    ) -> tuple[InstallationToken, bool]:
        """The token for ``key`` and whether it was reused (not fetched for this request).

        ``fetch`` asks GitHub; it runs detached from this caller (bound it with its own deadline).
        ``deadline`` (a :func:`time.monotonic` instant) bounds this caller's wait only:
        DEADLINE_EXCEEDED when it passes, the shared call going on.
        """
        cached = self.lookup(key, holder)
        if cached is not None:
            return cached.token, True
        if holder is not None:
            self._pending_holders.setdefault(key, set()).add(holder)
        task = self._inflight.get(key)
        leader = task is None
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fill(key, fetch))
            task.add_done_callback(_consume)
            self._inflight[key] = task
            self.fetches += 1
        else:
            self.joined += 1
        shared = asyncio.shield(task)
        if deadline is None:
            token = await shared
        else:
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    token = await shared
            except TimeoutError:
                raise ApiError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded waiting for a GitHub token"
                ) from None
        return token, not leader

    async def _fill(self, key: CacheKey, fetch: Callable[[], Awaitable[InstallationToken]]) -> InstallationToken:
        try:
            token = await fetch()
        except BaseException:
            # Not kept: the holders that waited for it hold nothing.
            self._pending_holders.pop(key, None)
            raise
        finally:
            self._inflight.pop(key, None)
        holders = self._pending_holders.pop(key, set())
        refresh_at = token.expires_at.timestamp() - self.refresh_margin
        if self._clock() >= refresh_at:
            # Already due for refresh (a very short-lived token): handed to those waiting, not kept.
            return token
        old = self._entries.pop(key, None)
        if old is not None:
            # Not revoked now (its holders may be mid-push with it), but still theirs to release.
            self._retire(old)
        self._entries[key] = _Entry(token, refresh_at, holders)
        self._bound()
        return token

    def _bound(self) -> None:
        if len(self._entries) <= self.max_entries:
            return
        now = self._clock()
        for key in [k for k, e in self._entries.items() if now >= e.refresh_at]:
            self._retire(self._entries.pop(key))
        while len(self._entries) > self.max_entries:
            self._retire(self._entries.popitem(last=False)[1])

    def _retire(self, entry: _Entry) -> None:
        if not entry.holders:
            return  # nobody would release it: it lapses at GitHub
        now = self._clock()
        self._retired = [e for e in self._retired if e.token.expires_at.timestamp() > now]
        self._retired.append(entry)
        if len(self._retired) > self.max_entries:
            self._retired.sort(key=lambda e: e.token.expires_at)
            del self._retired[: len(self._retired) - self.max_entries]

    @property
    def retired(self) -> int:
        """Tokens no longer handed out, kept until their holders release them or they expire."""
        return len(self._retired)

    def release(self, holder: str) -> list[InstallationToken]:
        """Drops ``holder`` (a task that ended) from every token; the tokens it was the last holder of
        are forgotten and returned, for the caller to revoke."""
        for holders in self._pending_holders.values():
            holders.discard(holder)
        freed: list[InstallationToken] = []
        for key, entry in list(self._entries.items()):
            if holder in entry.holders:
                entry.holders.discard(holder)
                if not entry.holders:
                    del self._entries[key]
                    freed.append(entry.token)
        if self._retired:
            now, kept = self._clock(), []
            for entry in self._retired:
                entry.holders.discard(holder)
                if entry.token.expires_at.timestamp() <= now:
                    continue  # lapsed: nothing to revoke
                if entry.holders:
                    kept.append(entry)
                else:
                    freed.append(entry.token)
            self._retired = kept
        return freed

    def evict(self, key: CacheKey) -> InstallationToken | None:
        """Forgets the token of ``key`` whoever holds it, and returns it (to revoke), or None."""
        entry = self._entries.pop(key, None)
        return entry.token if entry is not None else None

    def evict_token(self, key: CacheKey, token: str) -> InstallationToken | None:
        """Forgets the token of ``key`` if it is still ``token`` (one a remote refused: GitHub may end a
        token before its expiry) and returns it (to revoke); a newer one fetched meanwhile stays (None)."""
        entry = self._entries.get(key)
        if entry is None or entry.token.token != token:
            return None
        del self._entries[key]
        return entry.token

    def drain(self) -> list[InstallationToken]:
        """Forgets every kept token (retired ones too) and returns them (at shutdown, to revoke)."""
        tokens = [e.token for e in self._entries.values()] + [e.token for e in self._retired]
        self._entries.clear()
        self._retired.clear()
        return tokens

    def holders(self, key: CacheKey) -> frozenset[str]:
        entry = self._entries.get(key)
        return frozenset(entry.holders) if entry is not None else frozenset()
