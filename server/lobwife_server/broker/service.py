"""BrokerService: GitHub App installation tokens for registered tasks, and the audit of every one.

A registration (``RegisterTask``) names the repositories a task reference may get tokens for. The
reference is ``T42``, a task's slug, name or ``assigned_to``: when it matches a task, the task's
broker fields are set and ``broker_registered`` logged on it in the same transaction (through
:class:`TaskLink`, which the tasks domain implements; app.py passes it in); otherwise the
registration is kept on its own, as the old daemon kept it.

A token (``IssueTaskToken``) is scoped to the registration's repositories with its lobster type's
permissions (never wider than the default), shared through the :class:`TokenCache` by every
registration of the same scope. Every token handed out, fresh or from the cache, is audited (who
asked, the reference, the repositories, a SHA-256 prefix of the token), and that audit row is
committed before the token is returned: a token nobody can account for is never handed out, a
crash notwithstanding. Refusals are audited the same way. The write that audits a token and counts
it (on its registration and its task) is a batch kind: the tokens that meet in one commit share
three statements, whatever their number (:meth:`BrokerService._issue_many`).

The broker is also the tasks domain's ``BrokerLink`` (app.py sets ``TaskService.broker``): an
UpdateTask (the old client's ``PATCH /api/v1/tasks/42``) that sets ``broker_repos`` registers the task
under ``T42`` in the task update's own transaction (``register_in``), one that sets ``broker_status``
to an ended word deregisters it (``deregister_in``), and a task that completes, fails or is cancelled
has its registrations ended right after its commit (``task_finished``).

A registration ends when it is deregistered, expires (idle longer than ``idle_ttl``: the
``lobwife-broker-expire`` built-in job), or when the task it matched completes, fails or is
cancelled (told by the tasks domain after the commit; checked again at every token request, the
backstop). The linked task's ``broker_status`` becomes ``deregistered`` / ``expired`` in the same
write, once no active registration of it remains. Its cached tokens that no other registration
shares are then revoked at GitHub (best effort, in the background, each revocation audited).

The token itself is only ever in memory (the cache) and in the response: never in the database,
a log line, a metric label or an error text.

Registrations that are active are also held in memory (one process writes; every change reaches
the map after its commit), so a token request reads nothing from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from lobwife.v1 import broker_pb2, jobs_pb2
from lobwife_server.api.rpc import CallContext
from lobwife_server.broker.github import (
    GitHubApp,
    InstallationToken,
    foreign_repositories,
    not_configured,
    validate_repositories,
)
from lobwife_server.broker.settings import BrokerSettings
from lobwife_server.broker.token_cache import Cached, CacheKey, TokenCache, cache_key, token_digest
from lobwife_server.core.errors import ApiError, failed_precondition, invalid_argument
from lobwife_server.core.timeutil import now_us, set_ts
from lobwife_server.core.validation import MAX_SHORT, PageTokens, check_text, request_page_size
from lobwife_server.storage import broker_store
from lobwife_server.storage.broker_store import NewAudit
from lobwife_server.storage.database import BatchKind, WriteContext
from lobwife_server.storage.interfaces import BrokerStore, Conn, Storage

log = logging.getLogger("lobwife.broker")

EXPIRE_JOB = "lobwife-broker-expire"
#: How often the built-in job looks for idle registrations.
EXPIRE_EVERY = 600
#: The installation's account is asked for once (then kept); registration waits this long at most.
ACCOUNT_LOOKUP_TIMEOUT = 5.0


class TaskLink(Protocol):
    """What the broker asks of the tasks domain (TaskService implements it)."""

    def register_repos_in(
        self, conn: Conn, wctx: WriteContext, number: int, repos: Sequence[str], lobster_type: str, actor: str
    ) -> object:
        """Set task ``number``'s broker fields and log ``broker_registered``, inside the broker's write;
        raises (FAILED_PRECONDITION for a finished task) before writing anything."""
        ...

    def broker_ended_in(
        self, conn: Conn, wctx: WriteContext, number: int, status: str, detail: str, actor: str | None
    ) -> None:
        """Set task ``number``'s ``broker_status`` to ``status`` and log ``broker_deregistered``, inside the
        broker's write that ended its last active registration."""
        ...

    def count_tokens_in(self, conn: Conn, wctx: WriteContext, counts: Mapping[int, int]) -> None:
        """``n`` more tokens on each task's ``token_count`` (task number -> n), inside the write that audits
        those tokens."""
        ...

    def task_ended_cached(self, number: int) -> bool | None:
        """Whether the task is completed, failed or cancelled, when that is known without a read; else None."""
        ...

    async def task_ended(self, number: int) -> bool:
        """Whether the task is completed, failed or cancelled."""
        ...


@dataclass(frozen=True, slots=True)
class _Active:
    """An active registration as a token request needs it."""

    repos: tuple[str, ...]
    lobster_type: str
    permissions: Mapping[str, str]
    key: CacheKey | None  # None while the broker is not configured
    task_number: int | None


class _Issue(NamedTuple):
    """One token to hand out, as the write that counts and audits it needs it (a tuple: made per request)."""

    ref: str
    repos: tuple[str, ...]
    who: str
    digest: str
    reused: bool
    now: int
    task_number: int | None


def _ts(at: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


def _denied(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, message)


def _repos(values: Sequence[str], name: str = "repos") -> tuple[str, ...]:
    """The registration's repositories, with errors naming the request's field (``repos``, ``repos[3]``)."""
    try:
        return validate_repositories(values)
    except ApiError as e:
        field, description = e.violations[0] if e.violations else ("repositories", e.message)
        raise invalid_argument(name + field.removeprefix("repositories"), description) from None


class BrokerService:
    """BrokerService RPCs over the database, the token cache and the GitHub App (None: not configured)."""

    def __init__(
        self,
        db: Storage,
        settings: BrokerSettings,
        page_tokens: PageTokens,
        tasks: TaskLink | None = None,
        github: GitHubApp | None = None,
        cache: TokenCache | None = None,
        store: BrokerStore = broker_store,
    ) -> None:
        self.db = db
        self.store = store
        self.settings = settings
        self.tokens = page_tokens
        self.tasks = tasks
        self.github = github
        self.cache = cache or TokenCache()
        self._active: dict[str, _Active] = {}
        self._background: set[asyncio.Task[None]] = set()
        #: Mints a lobwife task token (task number, lifetime in seconds) -> (token, expiry epoch seconds);
        #: set by app.py from the auth keys. RegisterTask's ``mint_task_token`` uses it.
        self.mint_task_token: Callable[[int, float], tuple[str, float]] | None = None
        #: The tokens of a batch of IssueTaskToken writes are counted and audited together (_issue_many).
        self._issue_kind: BatchKind[_Issue, bool] = BatchKind(self._issue_one, self._issue_many)

    @classmethod
    async def create(
        cls,
        db: Storage,
        settings: BrokerSettings,
        page_tokens: PageTokens,
        tasks: TaskLink | None = None,
        github: GitHubApp | None = None,
        store: BrokerStore = broker_store,
    ) -> BrokerService:
        """The service with the active registrations loaded (the old daemon's included)."""
        if github is None and settings.github is not None:
            github = GitHubApp(settings.github)
        svc = cls(db, settings, page_tokens, tasks, github, store=store)
        # The old daemon's registrations name their task only by reference: linked here, once, so that
        # the task's end ends them and its task token reaches them, as if registered by lobwife.
        linked = await db.write(lambda c, w: store.link_unlinked(c))
        if linked:
            log.info(
                "linked %d registration(s) to their tasks",
                len(linked),
                extra={"linked": [f"{ref}=T{number}" for ref, number in linked[:20]]},
            )
        for row in await db.read(store.list_registrations):
            if row.status == "active" and row.repos:
                svc._active[row.ref] = svc._entry(row.repos, row.lobster_type, row.task_number)
        return svc

    async def close(self) -> None:
        """Waits a moment for revocations under way, then closes the GitHub client."""
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        if self.github is not None:
            await self.github.close()

    @property
    def app_id(self) -> str | None:
        return self.settings.github.app_id if self.settings.github is not None else None

    def _entry(self, repos: Sequence[str], lobster_type: str, task_number: int | None) -> _Active:
        perms = self.settings.permissions_for(lobster_type)
        gh = self.settings.github
        key = cache_key(gh.installation_id, repos, perms) if gh is not None else None
        return _Active(tuple(repos), lobster_type, perms, key, task_number)

    # -- registrations --------------------------------------------------------------------------

    async def RegisterTask(
        self, req: broker_pb2.RegisterTaskRequest, ctx: CallContext
    ) -> broker_pb2.RegisterTaskResponse:
        ref = check_text("task_id", req.task_id, MAX_SHORT, required=True)
        assert ref is not None
        repos = _repos(req.repos)
        lobster_type = check_text("lobster_type", req.lobster_type, MAX_SHORT) or "unknown"
        if req.mint_task_token:
            await self._may_mint_for(ref, ctx)
        await self._check_owners(repos)
        who = ctx.caller()
        actor = getattr(getattr(ctx, "identity", None), "subject", None) or lobster_type
        entry = self._entry(repos, lobster_type, None)
        now = now_us()

        def write(conn: Conn, wctx: WriteContext) -> _Active:
            number = self.store.find_task(conn, ref)
            if number is not None and self.tasks is not None:
                self.tasks.register_repos_in(conn, wctx, number, repos, lobster_type, actor)
            self.store.upsert_registration(conn, ref, repos, lobster_type, number, who, now)
            self.store.insert_audit(conn, ref, repos, "task_registered", now, identity=who)
            linked = _Active(entry.repos, entry.lobster_type, entry.permissions, entry.key, number)
            wctx.after_commit(lambda: self._activate(ref, linked))
            return linked

        linked = await self.db.write(write)
        log.info(
            "broker registration",
            extra={"ref": ref, "repositories": len(repos), "lobster_type": lobster_type, "task": linked.task_number},
        )
        resp = broker_pb2.RegisterTaskResponse(status="registered", task_id=ref)
        if req.mint_task_token and self.mint_task_token is not None and linked.task_number is not None:
            # Lives no longer than an idle registration; dies sooner with the task or its registration
            # (the auth directory reads both on every call).
            token, expires = self.mint_task_token(linked.task_number, self.settings.idle_ttl)
            resp.task_token = token
            resp.task_token_expires_at.FromNanoseconds(int(expires * 1e9))
        return resp

    async def _may_mint_for(self, ref: str, ctx: CallContext) -> None:
        """Refuses ``mint_task_token`` (before anything is written) unless an admin asks and ``ref`` names a
        task. Checked in every auth mode, as MintToken is: a token minted while auth is off would outlive
        the switch to enforce."""
        caller = getattr(ctx, "identity", None)
        if getattr(caller, "role", None) != "admin":
            raise ApiError(
                grpc.StatusCode.PERMISSION_DENIED,
                "mint_task_token: minting a task token needs an admin credential, whatever the auth mode",
                reason="AUTH_ROLE",
            )
        if self.mint_task_token is None:
            raise failed_precondition("mint_task_token: this server cannot mint tokens")
        if await self.db.read(lambda c: self.store.find_task(c, ref)) is None:
            raise failed_precondition(
                f"mint_task_token: {ref[:60]!r} names no task; a task token is bound to a task",
                reason="TASK_NOT_FOUND",
            )

    def _activate(self, ref: str, entry: _Active) -> None:
        old = self._active.get(ref)
        self._active[ref] = entry
        if old is not None and old.key != entry.key:
            # Its tokens of the old scope are no use to it any more.
            self._revoke_later(ref, self.cache.release(ref), "re-registered with another scope")

    async def _check_owners(self, repos: Sequence[str], name: str = "repos") -> None:
        """INVALID_ARGUMENT naming the first repository not on the installation's account. When the
        account cannot be learnt now, the registration goes ahead: the token request checks again."""
        if self.github is None:
            return
        try:
            account = await self.github.installation_account(deadline=time.monotonic() + ACCOUNT_LOOKUP_TIMEOUT)
        except ApiError as e:
            log.warning("registering without the owner check: the installation's account is unknown (%s)", e.message)
            return
        foreign = set(foreign_repositories(repos, account))
        for i, repo in enumerate(repos):
            if repo in foreign:
                raise invalid_argument(
                    f"{name}[{i}]", f"{repo!r} is not on {account}, the GitHub App installation's account"
                )

    async def DeregisterTask(
        self, req: broker_pb2.DeregisterTaskRequest, ctx: CallContext
    ) -> broker_pb2.DeregisterTaskResponse:
        ref = check_text("task_id", req.task_id, MAX_SHORT, required=True)
        assert ref is not None
        await self._end(ref, ctx.caller(), "")
        return broker_pb2.DeregisterTaskResponse(status="removed", task_id=ref)

    async def _end(self, ref: str, who: str, detail: str) -> bool:
        """Removes a registration (audited ``task_deregistered``); its unshared tokens are revoked."""
        now = now_us()

        def write(conn: Conn, wctx: WriteContext) -> bool:
            row = self.store.get_registration(conn, ref)
            existed = self.store.delete_registration(conn, ref)
            note = detail if existed else (detail or "not registered")
            repos = row.repos if row is not None else None
            self.store.insert_audit(conn, ref, repos, "task_deregistered", now, identity=who, detail=note or None)
            wctx.after_commit(lambda: self._forget(ref, detail or "deregistered"))
            if row is not None and row.task_number is not None:
                self._tell_task(conn, wctx, row.task_number, "deregistered", f"{ref}: {detail or 'deregistered'}", who)
            return existed

        existed = await self.db.write(write)
        log.info("broker registration removed", extra={"ref": ref, "existed": existed, "why": detail or "deregistered"})
        return existed

    def _tell_task(self, conn: Conn, wctx: WriteContext, number: int, status: str, detail: str, who: str) -> None:
        """The linked task's broker_status follows its registrations: ended once none is active."""
        if self.tasks is not None and self.store.active_links(conn, number) == 0:
            self.tasks.broker_ended_in(conn, wctx, number, status, detail, who)

    def _forget(self, ref: str, why: str) -> None:
        self._active.pop(ref, None)
        self._revoke_later(ref, self.cache.release(ref), why)

    # -- the tasks domain's BrokerLink -----------------------------------------------------------

    async def check_repos(self, field: str, repos: Sequence[str]) -> tuple[str, ...]:
        """RegisterTask's rule for ``repos``, with errors naming ``field`` (an update's ``broker_repos``)."""
        checked = _repos(repos, field)
        await self._check_owners(checked, field)
        return checked

    def identity_of(self, ctx: CallContext) -> str:
        return ctx.caller()

    def register_in(
        self, conn: Conn, wctx: WriteContext, number: int, repos: Sequence[str], lobster_type: str, who: str
    ) -> bool:
        """Registers task ``number`` as ``T<number>`` inside the task update's write (audited); False when
        that same registration is already active (nothing written: a retried update changes nothing)."""
        ref = f"T{number}"
        row = self.store.get_registration(conn, ref)
        if (
            row is not None
            and row.status == "active"
            and row.repos == tuple(repos)
            and row.lobster_type == lobster_type
            and row.task_number == number
        ):
            return False
        now = now_us()
        self.store.upsert_registration(conn, ref, repos, lobster_type, number, who, now)
        self.store.insert_audit(
            conn, ref, repos, "task_registered", now, identity=who, detail="by a task update (broker_repos)"
        )
        entry = self._entry(repos, lobster_type, number)
        wctx.after_commit(lambda: self._activate(ref, entry))
        log.info("broker registration", extra={"ref": ref, "repositories": len(repos), "task": number})
        return True

    def deregister_in(self, conn: Conn, wctx: WriteContext, number: int, who: str, detail: str) -> int:
        """Removes every registration linked to task ``number`` (and ``T<number>``, linked or not) inside
        the task update's write, each audited ``task_deregistered``; how many were active. Their unshared
        tokens are revoked after the commit. The task row is the caller's."""
        refs = self.store.linked_refs(conn, number)
        own = f"T{number}"
        if own not in refs and self.store.get_registration(conn, own) is not None:
            refs.append(own)
        now = now_us()
        active = 0
        for ref in refs:
            row = self.store.get_registration(conn, ref)
            if row is None:
                continue
            active += row.status == "active"
            self.store.delete_registration(conn, ref)
            self.store.insert_audit(conn, ref, row.repos, "task_deregistered", now, identity=who, detail=detail)
            wctx.after_commit(lambda ref=ref: self._forget(ref, detail))  # type: ignore[misc]
        return active

    def task_finished(self, number: int, status: str) -> None:
        """Task ``number`` was completed, failed or cancelled (after its commit, on the event loop): its
        active registrations end now, in the background (audited; tokens revoked). Until that write
        commits, a token request is refused all the same: it finds the task finished (the backstop)."""
        refs = sorted(ref for ref, e in self._active.items() if e.task_number == number)
        if refs:
            self._spawn(self._end_all(refs, f"task T{number} is {status}"))

    async def _end_all(self, refs: Sequence[str], why: str) -> None:
        for ref in refs:
            try:
                await self._end(ref, "lobwife", why)
            except ApiError as e:  # the database refused: the token-time check still refuses its tokens
                log.warning("cannot end a finished task's registration", extra={"ref": ref, "error": e.message})

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def ListRegistrations(
        self, req: broker_pb2.ListRegistrationsRequest, ctx: CallContext
    ) -> broker_pb2.ListRegistrationsResponse:
        rows = await self.db.read(self.store.list_registrations)
        resp = broker_pb2.ListRegistrationsResponse()
        for row in rows:
            reg = resp.registrations[row.ref]
            reg.repos.extend(row.repos)
            reg.lobster_type = row.lobster_type
            if row.registered_at is not None:
                set_ts(reg.registered_at, row.registered_at)
            reg.status = row.status
            reg.token_count = row.token_count
            if row.last_used_at is not None:
                set_ts(reg.last_used_at, row.last_used_at)
            if row.task_number is not None:
                reg.task = f"T{row.task_number}"
        return resp

    async def ExpireRegistrations(
        self, req: broker_pb2.ExpireRegistrationsRequest, ctx: CallContext
    ) -> broker_pb2.ExpireRegistrationsResponse:
        return broker_pb2.ExpireRegistrationsResponse(expired=len(await self.expire(ctx.caller())))

    async def expire(self, who: str = "lobwife") -> list[str]:
        """Expires the registrations idle longer than ``idle_ttl`` (audited); returns their references."""
        now = now_us()
        cutoff = now - int(self.settings.idle_ttl * 1_000_000)
        detail = f"idle for more than {self.settings.idle_ttl:g} s"

        def write(conn: Conn, wctx: WriteContext) -> list[str]:
            expired = self.store.expire_idle(conn, cutoff, now)
            tasks: set[int] = set()
            for ref, repos in expired:
                self.store.insert_audit(conn, ref, repos, "registration_expired", now, identity=who, detail=detail)
                wctx.after_commit(lambda ref=ref: self._forget(ref, "expired"))  # type: ignore[misc]
                row = self.store.get_registration(conn, ref)
                if row is not None and row.task_number is not None:
                    tasks.add(row.task_number)
            for number in sorted(tasks):
                self._tell_task(conn, wctx, number, "expired", f"registration expired: {detail}", who)
            return [ref for ref, _ in expired]

        return await self.db.write(write)

    def expiry_job(self) -> tuple[jobs_pb2.Job, Callable[[], Awaitable[str]]]:
        """The built-in job that expires idle registrations, listed and run like the maintenance jobs."""
        job = jobs_pb2.Job(
            name=EXPIRE_JOB,
            description=f"Expire broker registrations idle for more than {self.settings.idle_ttl:g} s",
            command=[f"builtin:{EXPIRE_JOB}"],
            enabled=True,
            concurrency=jobs_pb2.CONCURRENCY_POLICY_FORBID,
            catch_up=jobs_pb2.CATCH_UP_POLICY_ONCE,
            source=jobs_pb2.JOB_SOURCE_BUILTIN,
        )
        job.timeout.CopyFrom(duration_pb2.Duration(seconds=300))
        job.interval.CopyFrom(duration_pb2.Duration(seconds=EXPIRE_EVERY))

        async def run() -> str:
            expired = await self.expire(EXPIRE_JOB)
            return f"expired {len(expired)} registration(s) idle for more than {self.settings.idle_ttl:g} s"

        return job, run

    # -- tokens ---------------------------------------------------------------------------------

    async def IssueTaskToken(
        self, req: broker_pb2.IssueTaskTokenRequest, ctx: CallContext
    ) -> broker_pb2.IssueTaskTokenResponse:
        ref = check_text("task_id", req.task_id, MAX_SHORT, required=True)
        assert ref is not None
        github = self.github
        if github is None:
            raise not_configured()
        entry = self._active.get(ref)
        if entry is None:
            why = await self.db.read(lambda c: self._why_inactive(c, ref))
            await self._deny(ref, ctx.caller(), why)
            raise _denied(f"task {ref[:60]!r}: {why}; register it first (POST /api/tasks/{{ref}}/register)")
        number, tasks = entry.task_number, self.tasks
        if number is not None and tasks is not None:
            # The backstop for a finished task whose registrations are still being ended: from the task
            # cache as a rule (no read, no coroutine).
            ended = tasks.task_ended_cached(number)
            if ended is None:
                ended = await tasks.task_ended(number)
            if ended:
                who = ctx.caller()
                why = f"task T{number} is finished"
                await self._end(ref, who, why)
                await self._deny(ref, who, why, entry.repos)
                raise _denied(f"task {ref[:60]!r}: {why}; its registration has ended")
        assert entry.key is not None
        repos = entry.repos
        cached = self.cache.lookup(entry.key, ref)  # a hit, the common case, awaits nothing
        reused = True
        if cached is None:
            perms, timeout = entry.permissions, self.settings.github_timeout

            def fetch() -> Awaitable[InstallationToken]:
                # Detached from this caller (the cache shares it): bounded by its own deadline.
                return github.create_installation_token(repos, perms, deadline=time.monotonic() + timeout)

            fetched, reused = await self.cache.get(entry.key, fetch, holder=ref, deadline=time.monotonic() + timeout)
            cached = Cached.of(fetched)
        issue = _Issue(ref, repos, ctx.caller(), cached.sha256, reused, now_us(), number)
        if not await self.db.write_as(self._issue_kind, issue):
            raise _denied(f"task {ref[:60]!r}: its registration ended while the token was fetched")
        token = cached.token
        resp = broker_pb2.IssueTaskTokenResponse(token=token.token, repos=token.repositories or repos)
        set_ts(resp.expires_at, cached.expires_us)
        return resp

    def _issue_one(self, conn: Conn, wctx: WriteContext, issue: _Issue) -> bool:
        return self._issue_many(conn, [(wctx, issue)])[0]

    def _issue_many(self, conn: Conn, items: list[tuple[WriteContext, _Issue]]) -> list[bool]:
        """Counts and audits a batch of tokens about to be handed out, in request order; for each, whether
        it may be (False: its registration was deregistered or expired while GitHub was asked; the
        refusal is audited instead).

        Three statements for the whole batch, as the tokens one by one would leave it: each active
        registration counted once with all its tokens (``last_used_at``: its last token's time), one
        multi-row insert of the audit rows, each linked task counted once.
        """
        per_ref: dict[str, tuple[int, int]] = {}  # ref -> (tokens, time of its last)
        for _, issue in items:
            had = per_ref.get(issue.ref)
            per_ref[issue.ref] = (1 if had is None else had[0] + 1, issue.now)
        active = self.store.count_tokens(conn, [(ref, n, at) for ref, (n, at) in per_ref.items()])
        rows: list[NewAudit] = []
        granted: list[bool] = []
        per_task: dict[int, int] = {}
        for _, i in items:
            ok = i.ref in active
            granted.append(ok)
            if ok:
                rows.append(NewAudit(i.ref, i.repos, "token_issued", i.now, i.who, i.digest, i.reused))
                if i.task_number is not None:
                    per_task[i.task_number] = per_task.get(i.task_number, 0) + 1
            else:
                rows.append(NewAudit(i.ref, i.repos, "token_denied", i.now, i.who, i.digest, False, "not registered"))
        self.store.insert_audits(conn, rows)
        if per_task and self.tasks is not None:
            # On the first write's context: the task cache has the new counts before any caller resumes.
            self.tasks.count_tokens_in(conn, items[0][0], per_task)
        return granted

    def _why_inactive(self, conn: Conn, ref: str) -> str:
        row = self.store.get_registration(conn, ref)
        if row is None:
            return "not registered"
        if row.status == "active":
            return "registered with no repositories"
        return f"registration is {row.status}"

    async def _deny(self, ref: str, who: str, why: str, repos: Sequence[str] | None = None) -> None:
        now = now_us()
        await self.db.write(
            lambda c, w: self.store.insert_audit(c, ref, repos, "token_denied", now, identity=who, detail=why)
        )

    async def IssueServiceToken(
        self, req: broker_pb2.IssueServiceTokenRequest, ctx: CallContext
    ) -> broker_pb2.IssueServiceTokenResponse:
        service = check_text("service", req.service, MAX_SHORT, required=True)
        assert service is not None
        token = await self._service_token(service, ctx.caller())
        resp = broker_pb2.IssueServiceTokenResponse(token=token.token)
        resp.expires_at.FromDatetime(token.expires_at)
        return resp

    @property
    def configured(self) -> bool:
        """Whether a GitHub App is configured (else every token request is refused as not configured)."""
        return self.github is not None and self.settings.github is not None

    async def service_token_for(self, service: str) -> str | None:
        """A service token for one of lobwife's own parts (the vault's push: ``lobwife-vault``), with no RPC
        behind it: the same token, cache and audit row as IssueServiceToken, the part's name standing for
        both the reference and who asked. None when the broker is not configured; an ApiError (UNAVAILABLE,
        DEADLINE_EXCEEDED) when GitHub cannot give one, whose message is safe to log."""
        if not self.configured:
            return None
        return (await self._service_token(service, service)).token

    def service_token_refused(self, token: str) -> None:
        """A remote (the vault's push) refused a service token this broker gave: it is dropped from the
        cache if it is still there, so the next call fetches another instead of handing it out again."""
        gh = self.settings.github
        if gh is None:
            return
        key = cache_key(gh.installation_id, None, self.settings.permissions_for(""))
        dropped = self.cache.evict_token(key, token)
        if dropped is not None:
            log.warning(
                "broker: a remote refused a service token; dropped from the cache",
                extra={"token_sha256": token_digest(token)[:16]},
            )
            # Revoked too (best effort, audited): should GitHub still honour it, no live token is left
            # that nothing holds.
            self._revoke_later("lobwife-vault", [dropped], "refused by a remote")

    async def _service_token(self, service: str, who: str) -> InstallationToken:
        """An installation-wide token (from the cache, or fetched), audited ``service_token_issued`` (the
        row committed before it is returned, as for task tokens)."""
        github = self.github
        gh = self.settings.github
        if github is None or gh is None:
            raise not_configured()
        perms, timeout = self.settings.permissions_for(""), self.settings.github_timeout
        key = cache_key(gh.installation_id, None, perms)

        def fetch() -> Awaitable[InstallationToken]:
            return github.create_installation_token(None, perms, deadline=time.monotonic() + timeout)

        token, reused = await self.cache.get(key, fetch, deadline=time.monotonic() + timeout)
        digest, now = token_digest(token.token), now_us()
        await self.db.write(
            lambda c, w: self.store.insert_audit(
                c, service, None, "service_token_issued", now, identity=who, token_sha256=digest, reused=reused
            )
        )
        return token

    def _revoke_later(self, ref: str, tokens: list[InstallationToken], why: str) -> None:
        if not tokens or self.github is None:
            return
        self._spawn(self._revoke(ref, tokens, why))

    async def _revoke(self, ref: str, tokens: list[InstallationToken], why: str) -> None:
        """Revokes at GitHub (best effort) and audits each outcome."""
        assert self.github is not None
        for token in tokens:
            try:
                known = await self.github.revoke(token.token, deadline=time.monotonic() + self.settings.github_timeout)
                outcome = f"{why}: revoked" if known else f"{why}: GitHub no longer knew it"
            except ApiError as e:
                outcome = f"{why}: revocation failed ({e.message})"
                log.warning("token revocation failed", extra={"ref": ref, "error": e.message})
            now = now_us()
            digest = token_digest(token.token)
            repos = token.repositories
            with contextlib.suppress(ApiError):
                await self.db.write(
                    lambda c, w, o=outcome, d=digest, r=repos, at=now: self.store.insert_audit(  # type: ignore[misc]
                        c, ref, r, "token_revoked", at, identity="lobwife", token_sha256=d, detail=o
                    )
                )

    # -- the audit ------------------------------------------------------------------------------

    async def ListTokenAudit(
        self, req: broker_pb2.ListTokenAuditRequest, ctx: CallContext
    ) -> broker_pb2.ListTokenAuditResponse:
        task_id = check_text("task_id", req.task_id, MAX_SHORT)
        size = request_page_size(req)
        filters = [task_id or ""]
        before = self.tokens.parse(req.page_token, "token_audit", filters)
        rows = await self.db.read(lambda c: self.store.list_audit(c, task_id, before, size + 1))
        resp = broker_pb2.ListTokenAuditResponse()
        for row in rows[:size]:
            e = resp.entries.add(
                task_id=row.task_id,
                repos=row.repos,
                action=row.action,
                identity=row.identity,
                token_sha256_prefix=row.token_sha256,
                reused=row.reused,
                detail=row.detail,
            )
            if row.at is not None:
                set_ts(e.timestamp, row.at)
        resp.next_page_token = self.tokens.after("token_audit", filters, rows, size)
        return resp

    # -- the summary ----------------------------------------------------------------------------

    async def summary(self) -> broker_pb2.BrokerSummary:
        """The legacy broker summary (``GET /api/status``): the database's figures, this configuration."""
        s = broker_pb2.BrokerSummary(enabled=self.github is not None)
        if self.app_id is not None:
            s.app_id = self.app_id
        with contextlib.suppress(ApiError):
            counts = await self.db.read(self.store.summary)
            s.active_tasks = counts.active_tasks
            s.total_tokens_issued = counts.total_tokens_issued
            s.audit_entries = counts.audit_entries
        return s
