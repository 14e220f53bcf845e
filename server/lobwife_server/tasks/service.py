"""TaskService: the store of record for tasks and their event trail.

The token broker is reached through :class:`~lobwife_server.tasks.broker_link.BrokerLink`
(``self.broker``, set by app.py): an update's broker fields register or deregister the task in the
same transaction, and a task that completes, fails or is cancelled has its registrations ended
right after the commit. The broker calls back through the methods of its ``TaskLink``
(``register_repos_in``, ``broker_ended_in``, ``count_token_in``, ``task_ended``).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from lobwife.v1 import tasks_pb2
from lobwife_server.api.fields import UpdateMask
from lobwife_server.api.rpc import CallContext, WireMessage, single_part
from lobwife_server.auth.policy import Role
from lobwife_server.core.errors import ApiError, failed_precondition, invalid_argument
from lobwife_server.core.timeutil import to_us
from lobwife_server.core.validation import (
    MAX_DETAIL,
    MAX_ESTIMATE_MINUTES,
    MAX_NAME,
    MAX_REQUEST_ID,
    PageTokens,
    check_repos,
    check_text,
    check_usd,
    parse_task_number,
    request_page_size,
    task_not_found,
    timestamp_us,
)
from lobwife_server.storage import task_store
from lobwife_server.storage import task_store as store  # the backend-neutral vocabulary and row shapes
from lobwife_server.storage.database import BatchKind, WriteContext
from lobwife_server.storage.interfaces import Conn, Storage, TaskChanges, TaskSnapshots, TaskStore
from lobwife_server.tasks.broker_link import BROKER_ACTIVE, BROKER_ENDED, BROKER_STATUSES, BrokerLink
from lobwife_server.tasks.cache import TaskCache
from lobwife_server.tasks.cost_link import CostLink
from lobwife_server.tasks.watch import ChangeFeed

# UpdateTask's mask names Task fields (its request repeats them): the contract's OUTPUT_ONLY ones are
# refused there (api.fields). The request's own fields are passed over: an HTTP PATCH body's keys
# become the mask, so they may appear in it.
# `estimate_minutes_exact` and the deprecated `estimate_minutes` are one column: either path names it.
# `token_count` is accepted (old clients send it) and ignored: the broker keeps the count.
_UPDATE_MASK = UpdateMask(
    tasks_pb2.Task.DESCRIPTOR,
    [*store.UPDATABLE, "estimate_minutes_exact", "token_count"],
    request_only=("actor", "task_id", "update_mask"),
)
_TIMESTAMP_FIELDS = frozenset({"queued_at", "assigned_at", "completed_at", "broker_registered_at"})
_LIST_FIELDS = frozenset({"repos", "broker_repos"})
#: The columns a registration by update reads besides the ones it sets.
_REGISTRATION_COLUMNS = ("broker_repos", "broker_status", "broker_registered_at", "type")
#: The columns a budget check by update reads besides the ones it sets.
_BUDGET_COLUMNS = ("type", "budget_usd")
_ENDED = frozenset({store.STATUS_VALUE[s] for s in store.FINAL_STATUSES})
#: The empty base of every CreateTask response; shared, so never mutated.
_CREATE_RESPONSE = tasks_pb2.CreateTaskResponse()
#: Rows per replay read, and of their details' bytes: what a stream replaying to a client that does not read
#: holds at most.
_WATCH_REPLAY_PAGE = 100
_WATCH_REPLAY_BYTES = 256 * 1024


def _status_text(value: int, field: str = "status") -> str:
    text = store.STATUS_TEXT.get(value)
    if text is None:
        raise invalid_argument(field, f"must be one of {', '.join(store.STATUS_VALUE)}")
    return text


def _request_id_reused(request_id: str, number: int) -> ApiError:
    desc = (
        f"{request_id[:40]!r} was already used to create task T{number} with a different request;"
        " a retry must repeat the request as it was, and a new task needs a new request_id"
    )
    return ApiError(
        grpc.StatusCode.ALREADY_EXISTS,
        f"request_id: {desc}",
        violations=[("request_id", desc)],
        reason="REQUEST_ID_REUSED",
    )


def _estimate(req: tasks_pb2.CreateTaskRequest | tasks_pb2.UpdateTaskRequest) -> float | None:
    """The estimate a request gives: ``estimate_minutes_exact`` (fractions kept), else the deprecated
    whole minutes of older clients; None when neither is set. Whole values are ints, so that a
    request's fingerprint does not depend on which field a client used."""
    if req.HasField("estimate_minutes_exact"):
        value: float = req.estimate_minutes_exact
    elif req.HasField("estimate_minutes"):
        value = req.estimate_minutes
    else:
        return None
    if not 0 <= value <= MAX_ESTIMATE_MINUTES:  # NaN fails this too
        raise invalid_argument("estimate_minutes", f"must be between 0 and {MAX_ESTIMATE_MINUTES}")
    return int(value) if float(value).is_integer() else value


def _column(path: str) -> str:
    return "estimate_minutes" if path == "estimate_minutes_exact" else path


def _has(req: tasks_pb2.UpdateTaskRequest, column: str) -> bool:
    if column == "estimate_minutes":
        return req.HasField("estimate_minutes_exact") or req.HasField("estimate_minutes")
    return req.HasField(column)  # type: ignore[arg-type]


@dataclass(slots=True)
class _NewTask:
    """A validated CreateTask: the column values the client gave, in store.CREATE_COLUMNS order."""

    fields: tuple[Any, ...]
    status: str
    actor: str | None
    request_id: str | None
    repos: list[str] | None  # the list that fields holds as JSON text
    budget_usd: float | None = None

    def row(self, now: int) -> tuple[Any, ...]:
        """The whole row to insert (store.CREATE_COLUMNS), stamped ``now``."""
        status = self.status
        assigned = now if status == "active" else None
        completed = now if status in store.FINAL_STATUSES else None
        fingerprint = None if self.request_id is None else self.fingerprint()
        return (
            *self.fields,
            now,
            now,
            now,
            assigned,
            completed,
            self.actor,
            self.request_id,
            fingerprint,
            self.budget_usd,
        )

    def fingerprint(self) -> bytes:
        """What the request asks for, hashed: the validated column values it sets and its actor.

        Normalized values, not the request's bytes, so that a retry is the same request
        over either transport, whether it spells a default out or leaves it unset. Only
        the values that are set are named, so a field added later does not change the
        fingerprint of a request that does not use it.
        """
        given = [(c, v) for c, v in zip(store.CREATE_COLUMNS, self.fields, strict=False) if v is not None]
        if self.budget_usd is not None:
            given.append(("budget_usd", self.budget_usd))
        return hashlib.blake2b(repr((given, self.actor)).encode(), digest_size=16).digest()


class TaskService:
    """TaskService RPCs: tasks, their events, repository registration and WatchTasks, over the database, the
    cache and the change feed."""

    def __init__(
        self,
        db: Storage,
        feed: TaskChanges,
        page_tokens: PageTokens,
        cache: TaskSnapshots | None = None,
        max_task_id: int = 0,
        store: TaskStore = task_store,
    ) -> None:
        self.db = db
        self.store = store
        #: The highest task id committed, as far as the event loop has seen (after-commit hooks raise it).
        self.max_task_id = max_task_id
        self.feed = feed
        self.tokens = page_tokens
        self.cache: TaskSnapshots = cache or TaskCache()
        self._create_kind = BatchKind(self._create_one, self._create_many, single_statement=True)
        self._insert_created = store.CreateInserter()  # writer thread only
        #: The token broker (app.py sets it); None: broker fields are stored and nothing else happens.
        self.broker: BrokerLink | None = None
        #: CostService (app.py sets it) for the budget check of an update; None: a budget is only stored.
        self.costs: CostLink | None = None

    @classmethod
    async def create(cls, db: Storage, tasks: TaskStore = task_store) -> TaskService:
        """The service over ``db``, its page-token secret read (made on first start), the writer prepared."""
        secret = await db.write(
            lambda c, w: tasks.get_or_create_secret(c, "page_token_secret", secrets.token_bytes(32))
        )
        await db.write(lambda c, w: tasks.prepare_writer(c))
        last = await db.read(tasks.max_event_id)
        top = await db.read(tasks.max_task_id)
        return cls(db, ChangeFeed(last), PageTokens(secret), max_task_id=top, store=tasks)

    def _publish(
        self, wctx: WriteContext, event: tasks_pb2.TaskEvent, task: tasks_pb2.Task
    ) -> tuple[tasks_pb2.Task, bytes]:
        """Once the write commits: the new snapshot into the cache, the change to the feed. Returns its bytes.

        Runs in the writer thread, so the snapshot is serialized there, where it was
        built: the event loop, the busier thread, only files the bytes.
        """
        data = task.SerializeToString()
        updated = to_us(task.updated_at)

        def committed() -> None:
            self.cache.put(task, data, updated)
            if task.id > self.max_task_id:
                self.max_task_id = task.id
            self.feed.publish_event(event, task)

        wctx.after_commit(committed)
        return task, data

    # -- create ------------------------------------------------------------------

    async def CreateTask(self, req: tasks_pb2.CreateTaskRequest, ctx: CallContext) -> WireMessage:
        # A blank text is an absent one (check_text), so a field's truthiness is test
        # enough: no HasField call per field, on every create.
        name = check_text("name", req.name, MAX_NAME, required=True)
        request_id = check_text("request_id", v, MAX_REQUEST_ID) if (v := req.request_id) else None
        actor = check_text("actor", v) if (v := req.actor) else None
        status = _status_text(req.status) if req.status else "queued"
        repos = check_repos("repos", req.repos) if req.repos else None
        # In store.CREATE_COLUMNS order, up to the time stamps the writer adds.
        fields = (
            name,
            check_text("slug", v) if (v := req.slug) else None,
            (check_text("type", v) if (v := req.type) else None) or "swe",
            status,
            (check_text("priority", v) if (v := req.priority) else None) or "normal",
            check_text("model", v) if (v := req.model) else None,
            check_text("assigned_to", v) if (v := req.assigned_to) else None,
            store.dump_list(repos) if repos else None,
            check_text("discord_thread_id", v) if (v := req.discord_thread_id) else None,
            _estimate(req),  # 0 is a value
            1 if req.requires_qa else 0,
            check_text("workflow", v) if (v := req.workflow) else None,
        )
        budget = check_usd("budget_usd", req.budget_usd) if req.HasField("budget_usd") else None
        new = _NewTask(fields, status, actor, request_id, repos, budget)
        # The writer answers with the whole response, encoded (see _create_many).
        if request_id is None:
            return await self.db.write_as(self._create_kind, new)
        # The look-up by request_id stays with its insert: such creates run one by one.
        return await self.db.write(functools.partial(self._create_one, new=new))

    def _create_one(self, conn: Conn, wctx: WriteContext, new: _NewTask) -> WireMessage:
        if new.request_id is not None:
            existing = self.store.find_by_request_id(conn, new.request_id)
            if existing is not None:
                task, fingerprint = existing
                # No fingerprint: a task created before they were stored; taken as the same request.
                if fingerprint is not None and fingerprint != new.fingerprint():
                    raise _request_id_reused(new.request_id, task.id)
                return single_part(_CREATE_RESPONSE, "task", task.SerializeToString(), task)
        return self._create_many(conn, [(wctx, new)])[0]

    def _create_many(self, conn: Conn, items: list[tuple[WriteContext, _NewTask]]) -> list[WireMessage]:
        """Insert the tasks, and so their created events, with one statement; the responses, encoded.

        Everything per task that can be done here is: this thread is otherwise
        waiting for the disk, while the event loop is the busier thread. The
        snapshots reach the cache and the change feed through one after-commit
        hook for the whole group.
        """
        now = store.now()
        rows = [new.row(now) for _, new in items]
        first, first_event = self._insert_created(conn, rows)
        make = store.created_task
        snapshots: list[tuple[tasks_pb2.Task, bytes]] = []
        out: list[WireMessage] = []
        for i, (_, new) in enumerate(items):
            task = make(first + i, rows[i], new.repos)
            data = task.SerializeToString()
            snapshots.append((task, data))
            out.append(single_part(_CREATE_RESPONSE, "task", data, task))
        # On the first write of the group: its hooks run before any caller of the batch resumes.
        news = [new for _, new in items]
        items[0][0].after_commit(functools.partial(self._created, snapshots, news, first_event, now))
        return out

    def _created(
        self, snapshots: list[tuple[tasks_pb2.Task, bytes]], news: list[_NewTask], first_event: int, now: int
    ) -> None:
        """After a group of creates commits (event loop): snapshots into the cache, changes to the feed."""
        put = self.cache.put
        for task, data in snapshots:
            put(task, data, now)  # a new task's updated_at is its created_at, `now`
        top = snapshots[-1][0].id
        if top > self.max_task_id:
            self.max_task_id = top
        feed = self.feed
        last_event = first_event + len(snapshots) - 1
        if not feed.watched:  # no stream to tell: no event messages to make, only the cursor moves
            feed.skip_to(last_event)
            return
        event = store.row_to_event
        detail = store.CREATED_DETAIL
        for i, ((task, _), new) in enumerate(zip(snapshots, news, strict=True)):
            feed.publish_event(event((first_event + i, task.id, "created", detail + new.status, new.actor, now)), task)

    # -- read --------------------------------------------------------------------

    async def GetTask(self, req: tasks_pb2.GetTaskRequest, ctx: CallContext) -> WireMessage:
        number = parse_task_number(req.task_id)
        data = self.cache.get_bytes(number)
        if data is None:
            mark = self.cache.mark()
            task = await self.db.read(lambda c: self.store.get_task(c, number))
            if task is None:
                raise task_not_found(number)
            data = task.SerializeToString()
            self.cache.fill(task, mark, data)
        return WireMessage(tasks_pb2.GetTaskResponse(), {"task": data})

    async def ListTasks(self, req: tasks_pb2.ListTasksRequest, ctx: CallContext) -> WireMessage:
        size = request_page_size(req)
        f = store.TaskFilter(
            status=_status_text(req.status) if req.status else None,
            type=check_text("type", req.type),
            assigned_to=check_text("assigned_to", req.assigned_to),
            created_after_us=(
                timestamp_us("created_after", req.created_after) if req.HasField("created_after") else None
            ),
            created_before_us=(
                timestamp_us("created_before", req.created_before) if req.HasField("created_before") else None
            ),
        )
        before = self.tokens.parse(req.page_token, "tasks", f.key())
        if f.is_empty():
            # The newest tasks, unfiltered (a dashboard's first view): ids are sequential
            # and never deleted, so when the cache holds every task of the page (and the
            # one after it, to know whether there is a next page) no query is needed.
            top = self.max_task_id if before is None else min(self.max_task_id, before - 1)
            cached = self.cache.newest(top, size + 1)
            if cached is not None:
                return self._task_page(f, cached, size)
        peek = self.cache.peek_bytes

        def read(conn: Conn) -> tuple[list[tuple[int, bytes]], list[tuple[tasks_pb2.Task, bytes]]]:
            keys = self.store.list_task_keys(conn, f, before, size + 1)
            found: dict[int, bytes] = {}
            missing: list[int] = []
            for number, updated_at in keys:
                data = peek(number, updated_at)
                if data is not None:
                    found[number] = data
                else:
                    missing.append(number)
            fetched = (
                [(t, t.SerializeToString()) for t in self.store.get_tasks(conn, missing).values()] if missing else []
            )
            for t, data in fetched:
                found[t.id] = data
            return [(n, found[n]) for n, _ in keys if n in found], fetched

        mark = self.cache.mark()
        rows, fetched = await self.db.read(read)
        for t, data in fetched:
            self.cache.fill(t, mark, data)
        return self._task_page(f, rows, size)

    def _task_page(self, f: store.TaskFilter, rows: list[tuple[int, bytes]], size: int) -> WireMessage:
        """A page from up to size + 1 (id, bytes) rows, newest first: the extra row says there is a next page."""
        base = tasks_pb2.ListTasksResponse()
        if len(rows) > size:
            base.next_page_token = self.tokens.make("tasks", f.key(), rows[size - 1][0])
        # The cached bytes go out as they are: no copy into a response message.
        return WireMessage(base, {"tasks": [data for _, data in rows[:size]]})

    # -- update ------------------------------------------------------------------

    def _changes(self, req: tasks_pb2.UpdateTaskRequest) -> tuple[dict[str, Any], bool]:
        """The column values the mask (validated) sets, in its order, and whether it named ``token_count``
        (accepted and ignored). ``broker_repos`` is the request's list, for the broker to validate."""
        if req.HasField("update_mask") and req.update_mask.paths:
            paths = _UPDATE_MASK.paths(req.update_mask)
            token_count = "token_count" in paths
            names = list(dict.fromkeys(_column(n) for n in paths if n != "token_count"))
        else:
            # No mask: the fields that are set (a repeated field when non-empty).
            names = [
                n
                for n in store.UPDATABLE
                if (n in _LIST_FIELDS and getattr(req, n)) or (n not in _LIST_FIELDS and _has(req, n))
            ]
            token_count = req.HasField("token_count")
        if not names and not token_count:
            raise invalid_argument("update_mask", "no valid field to update")
        values: dict[str, Any] = {}
        for n in names:
            if n == "repos":
                values[n] = store.dump_list(check_repos("repos", req.repos)) if req.repos else None
                continue
            if n == "broker_repos":
                if not req.broker_repos:
                    raise invalid_argument(
                        "broker_repos",
                        "must not be empty: a registration needs at least one repository"
                        " (to end it, set broker_status to deregistered)",
                    )
                values[n] = list(req.broker_repos)
                continue
            if not _has(req, n):
                if n == "name":
                    raise invalid_argument("name", "must not be blank")
                if n == "status":
                    raise invalid_argument("status", f"must be one of {', '.join(store.STATUS_VALUE)}")
                if n == "broker_status":
                    raise invalid_argument("broker_status", f"must be one of {', '.join(BROKER_STATUSES)}")
                values[n] = store.UPDATABLE[n]
                continue
            v = getattr(req, n)
            if n == "name":
                values[n] = check_text("name", v, MAX_NAME, required=True)
            elif n == "status":
                values[n] = _status_text(v)
            elif n == "broker_status":
                word = (check_text("broker_status", v) or "").lower()
                if word not in BROKER_STATUSES:
                    raise invalid_argument("broker_status", f"must be one of {', '.join(BROKER_STATUSES)}")
                values[n] = word
            elif n == "estimate_minutes":
                values[n] = _estimate(req)
            elif n == "requires_qa":
                values[n] = 1 if v else 0
            elif n == "budget_usd":
                values[n] = check_usd(n, v)
            elif n in _TIMESTAMP_FIELDS:
                values[n] = timestamp_us(n, v)
            else:
                values[n] = check_text(n, v) or store.UPDATABLE[n]
        given = values.get("broker_status")
        if "broker_repos" in values and given is not None and given != BROKER_ACTIVE:
            raise invalid_argument(
                "broker_status", f"{given!r} ends the registration that broker_repos asks for: give one or the other"
            )
        return values, token_count

    async def _broker_repos(self, repos: Sequence[str]) -> list[str]:
        """``broker_repos`` checked by the broker's rule (RegisterTask's), else the tasks domain's own."""
        if self.broker is not None:
            return list(await self.broker.check_repos("broker_repos", repos))
        return check_repos("broker_repos", repos)

    async def UpdateTask(self, req: tasks_pb2.UpdateTaskRequest, ctx: CallContext) -> tasks_pb2.UpdateTaskResponse:
        number = parse_task_number(req.task_id)
        actor = check_text("actor", req.actor) if req.HasField("actor") else None
        values, _ = self._changes(req)
        # What the update asks of the broker, settled before the write: nothing is stored if it fails.
        repos = await self._broker_repos(values["broker_repos"]) if "broker_repos" in values else None
        if repos is not None:
            values["broker_repos"] = store.dump_list(repos)
        register = repos is not None or values.get("broker_status") == BROKER_ACTIVE
        if register and getattr(ctx.identity, "role", None) is Role.TASK:
            # A task may update its own task, but never widen what GitHub lets it reach: registering is
            # the fleet's (BrokerService.RegisterTask is admin only). Ending its own access is allowed.
            raise ApiError(
                grpc.StatusCode.PERMISSION_DENIED,
                "broker_repos: a task credential may not register its task with the token broker",
                reason="TASK_MAY_NOT_REGISTER",
            )
        if getattr(ctx.identity, "role", None) is Role.TASK and ("budget_usd" in values or "type" in values):
            # The budget is what stops a worker that spends too much: the worker may not move it, nor its
            # task's type (whose default budget may be the one that holds).
            field_name = "budget_usd" if "budget_usd" in values else "type"
            raise ApiError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{field_name}: a task credential may not change its task's budget or type",
                reason="TASK_MAY_NOT_CHANGE_BUDGET",
            )
        ending = values.get("broker_status") if values.get("broker_status") in BROKER_ENDED else None
        broker = self.broker
        who = broker.identity_of(ctx) if broker is not None and (register or ending) else ""
        columns = list(values)
        if register:
            columns += [c for c in _REGISTRATION_COLUMNS if c not in values]
        costs = self.costs
        budget_check = costs is not None and ("budget_usd" in values or "type" in values)
        if budget_check:
            columns += [c for c in _BUDGET_COLUMNS if c not in columns]

        def write(conn: Conn, wctx: WriteContext) -> tuple[tasks_pb2.Task, list[str]]:
            found = self.store.status_and_values(conn, number, columns)
            if found is None:
                raise task_not_found(number)
            current, last_update, stored = found
            if current == "cancelled":
                raise failed_precondition(f"Task T{number} is cancelled", reason="TASK_CANCELLED")
            now = store.next_stamp(last_update)
            wanted = dict(values)
            new_status = wanted.get("status") or current
            registered, ended = False, 0
            scope: Sequence[str] = ()
            if register:
                if new_status in store.FINAL_STATUSES:
                    # As RegisterTaskRepos: a finished task needs no tokens.
                    raise failed_precondition(
                        f"Task T{number} is {new_status}: only an unfinished task can register repositories",
                        reason="TASK_ALREADY_FINAL",
                    )
                scope = repos if repos is not None else json.loads(stored["broker_repos"] or "[]")
                if not scope:
                    raise invalid_argument(
                        "broker_status", "active needs broker_repos: the task has none; give them in the same update"
                    )
                wanted["broker_status"] = BROKER_ACTIVE
                if broker is not None:
                    lobster_type = wanted.get("type") or stored["type"] or "swe"
                    registered = broker.register_in(conn, wctx, number, scope, lobster_type, who)
            if ending is not None and broker is not None:
                ended = broker.deregister_in(conn, wctx, number, who, f"broker_status set to {ending}")
            # Only what changes is written: an update that sets every field to the value it
            # has writes nothing, logs no event and leaves updated_at (and so every cache and watch) alone.
            changed = [n for n in wanted if stored[n] != wanted[n]]
            if (
                register
                and "broker_registered_at" not in values
                and (registered or "broker_repos" in changed or "broker_status" in changed)
            ):
                # A registration is stamped unless the client gave the time (as the old client does).
                wanted["broker_registered_at"] = now
                changed.append("broker_registered_at")
            if not changed and not registered and not ended:
                task = self.store.get_task(conn, number)
                assert task is not None
                return task, changed
            changes = {n: wanted[n] for n in changed}
            if new_status != current:
                # Stamp the status move unless the client set the time itself (even to the time it has).
                if new_status == "active" and "assigned_at" not in values:
                    changes["assigned_at"] = now
                elif new_status in store.FINAL_STATUSES and "completed_at" not in values:
                    changes["completed_at"] = now
                elif new_status == "queued" and "queued_at" not in values:
                    changes["queued_at"] = now
            changes["updated_at"] = now
            self.store.update_task(conn, number, changes)
            events = []
            if changed:
                events.append(
                    self.store.insert_event(conn, number, "updated", "Updated: " + ", ".join(changed), actor, now)
                )
            if registered:
                detail = "repos=" + ", ".join(scope)
                events.append(self.store.insert_event(conn, number, "broker_registered", detail, actor, now))
            if ended:
                detail = f"{ended} registration(s) ended: broker_status set to {ending}"
                events.append(self.store.insert_event(conn, number, "broker_deregistered", detail, actor, now))
            task = self.store.get_task(conn, number)
            assert task is not None
            for event in events:
                self._publish(wctx, event, task)
            if budget_check and costs is not None and ("budget_usd" in changed or "type" in changed):
                before = (stored["type"], stored["budget_usd"])
                costs.budget_changed_in(conn, wctx, number, before, (task.type, wanted.get("budget_usd", before[1])))
            if broker is not None and new_status != current and new_status in store.FINAL_STATUSES:
                wctx.after_commit(lambda: broker.task_finished(number, new_status))
            return task, changed

        task, changed = await self.db.write(write)
        return tasks_pb2.UpdateTaskResponse(id=task.id, task_id=task.task_id, updated=changed, task=task)

    async def CancelTask(self, req: tasks_pb2.CancelTaskRequest, ctx: CallContext) -> tasks_pb2.CancelTaskResponse:
        number = parse_task_number(req.task_id)
        actor = check_text("actor", req.actor) if req.HasField("actor") else None
        reason = check_text("reason", req.reason, MAX_DETAIL, multiline=True) if req.HasField("reason") else None
        broker = self.broker

        def write(conn: Conn, wctx: WriteContext) -> tasks_pb2.Task:
            found = self.store.status_of(conn, number)
            if found is None:
                raise task_not_found(number)
            current, last_update = found
            if current in ("completed", "cancelled"):
                raise failed_precondition(f"Task T{number} is already {current}", reason="TASK_ALREADY_FINAL")
            now = store.next_stamp(last_update)
            self.store.update_task(conn, number, {"status": "cancelled", "completed_at": now, "updated_at": now})
            event = self.store.insert_event(
                conn, number, "cancelled", reason or f"Task cancelled (was {current})", actor, now
            )
            task = self.store.get_task(conn, number)
            assert task is not None
            self._publish(wctx, event, task)
            if broker is not None:
                wctx.after_commit(lambda: broker.task_finished(number, "cancelled"))
            return task

        task = await self.db.write(write)
        return tasks_pb2.CancelTaskResponse(id=task.id, task_id=task.task_id, status=task.status, task=task)

    # -- events ------------------------------------------------------------------

    async def CreateTaskEvent(
        self, req: tasks_pb2.CreateTaskEventRequest, ctx: CallContext
    ) -> tasks_pb2.CreateTaskEventResponse:
        number = parse_task_number(req.task_id)
        event_type = check_text("event_type", req.event_type, required=True)
        assert event_type is not None
        detail = check_text("detail", req.detail, MAX_DETAIL, multiline=True) if req.HasField("detail") else None
        actor = check_text("actor", req.actor) if req.HasField("actor") else None

        def write(conn: Conn, wctx: WriteContext) -> tasks_pb2.TaskEvent:
            task = self.store.get_task(conn, number)
            if task is None:
                raise task_not_found(number)
            event = self.store.insert_event(conn, number, event_type, detail, actor, store.now())
            self._publish(wctx, event, task)
            return event

        event = await self.db.write(write)
        return tasks_pb2.CreateTaskEventResponse(status="logged", task_id=f"T{number}", event=event)

    async def ListTaskEvents(
        self, req: tasks_pb2.ListTaskEventsRequest, ctx: CallContext
    ) -> tasks_pb2.ListTaskEventsResponse:
        number = parse_task_number(req.task_id)
        size = request_page_size(req)
        before = self.tokens.parse(req.page_token, "events", [number])

        def read(conn: Conn) -> list[tasks_pb2.TaskEvent] | None:
            if not self.store.task_exists(conn, number):
                return None
            return self.store.list_events(conn, number, before, size + 1)

        events = await self.db.read(read)
        if events is None:
            raise task_not_found(number)
        resp = tasks_pb2.ListTaskEventsResponse(events=events[:size])
        resp.next_page_token = self.tokens.after("events", [number], events, size)
        return resp

    async def RegisterTaskRepos(
        self, req: tasks_pb2.RegisterTaskReposRequest, ctx: CallContext
    ) -> tasks_pb2.RegisterTaskReposResponse:
        number = parse_task_number(req.task_id)
        repos = check_repos("repos", req.repos)  # at least one: `repos` is REQUIRED (the dispatcher checks)
        lobster_type = (check_text("lobster_type", req.lobster_type) if req.HasField("lobster_type") else None) or (
            "unknown"
        )
        actor = (check_text("actor", req.actor) if req.HasField("actor") else None) or lobster_type
        broker = self.broker
        if broker is None:
            task = await self.db.write(
                lambda conn, wctx: self.register_repos_in(conn, wctx, number, repos, lobster_type, actor)
            )
            return tasks_pb2.RegisterTaskReposResponse(status="registered", task_id=task.task_id, task=task)
        # With the broker wired, this route registers the task with it too (under ``T<n>``), as the old
        # daemon's did: a token request for the task then works. Same rules as the broker's own route.
        repos = list(await broker.check_repos("repos", repos))
        who = broker.identity_of(ctx)

        def write(conn: Conn, wctx: WriteContext) -> tasks_pb2.Task:
            task = self.register_repos_in(conn, wctx, number, repos, lobster_type, actor)
            broker.register_in(conn, wctx, number, repos, lobster_type, who)
            return task

        task = await self.db.write(write)
        return tasks_pb2.RegisterTaskReposResponse(status="registered", task_id=task.task_id, task=task)

    def register_repos_in(
        self, conn: Conn, wctx: WriteContext, number: int, repos: Sequence[str], lobster_type: str, actor: str
    ) -> tasks_pb2.Task:
        """Sets task ``number``'s broker fields and logs ``broker_registered``, inside the caller's write
        (RegisterTaskRepos's, or the broker's RegisterTask's: one transaction with its registration).
        NOT_FOUND / FAILED_PRECONDITION (finished task) raise before anything is written."""
        found = self.store.status_of(conn, number)
        if found is None:
            raise task_not_found(number)
        current, last_update = found
        if current in store.FINAL_STATUSES:
            # A finished task needs no tokens: registering it would make the broker hand them out again.
            raise failed_precondition(
                f"Task T{number} is {current}: only an unfinished task can register repositories",
                reason="TASK_ALREADY_FINAL",
            )
        now = store.next_stamp(last_update)
        self.store.update_task(
            conn,
            number,
            {
                "broker_repos": store.dump_list(repos),
                "broker_status": "active",
                "broker_registered_at": now,
                "updated_at": now,
            },
        )
        event = self.store.insert_event(conn, number, "broker_registered", "repos=" + ", ".join(repos), actor, now)
        task = self.store.get_task(conn, number)
        assert task is not None
        self._publish(wctx, event, task)
        return task

    def broker_ended_in(
        self, conn: Conn, wctx: WriteContext, number: int, status: str, detail: str, actor: str | None
    ) -> None:
        """Sets task ``number``'s ``broker_status`` to ``status`` (``deregistered``, ``expired``) and logs
        ``broker_deregistered``, inside the broker's write that ended its last active registration.
        Nothing when there is no such task or it already says so."""
        found = self.store.status_and_values(conn, number, ["broker_status"])
        if found is None or found[2]["broker_status"] == status:
            return
        now = store.next_stamp(found[1])
        self.store.update_task(conn, number, {"broker_status": status, "updated_at": now})
        event = self.store.insert_event(conn, number, "broker_deregistered", detail, actor, now)
        task = self.store.get_task(conn, number)
        assert task is not None
        self._publish(wctx, event, task)

    def log_event_in(
        self, conn: Conn, wctx: WriteContext, number: int, event_type: str, detail: str, actor: str | None
    ) -> bool:
        """Appends an event to task ``number``'s trail inside the caller's write (CostService's
        ``budget_exceeded``), published to WatchTasks after the commit; False when there is no such task."""
        task = self.store.get_task(conn, number)
        if task is None:
            return False
        event = self.store.insert_event(conn, number, event_type, detail, actor, store.now())
        self._publish(wctx, event, task)
        return True

    def count_token_in(self, conn: Conn, wctx: WriteContext, number: int) -> None:
        """One more token on task ``number``'s ``token_count``, inside the broker's write that issued it
        (``count_tokens_in`` for one token)."""
        self.count_tokens_in(conn, wctx, {number: 1})

    def count_tokens_in(self, conn: Conn, wctx: WriteContext, counts: Mapping[int, int]) -> None:
        """``n`` more tokens on each task's ``token_count`` (``counts``: task number -> n), inside the broker's
        write that issued them: a batch of token requests counts each task once.

        No event: the token audit records every token, and an event per token (a ``gh`` wrapper asks
        for one per call) would drown the task's trail. ``updated_at`` moves all the same, so the
        snapshot's version moves with its content (the cache and list reads rely on it).

        Only the new count and stamp are read back: the cache makes the new snapshot from the one it
        holds (``TaskCache.put_token_count``), instead of a whole row being decoded and the task
        serialized again in this thread for every token.
        """
        if not counts:
            return
        rows = self.store.add_tokens(conn, sorted(counts.items()), store.now())
        if not rows:
            return
        cache = self.cache
        if isinstance(cache, TaskCache):
            concrete = cache
            wctx.after_commit(lambda: self._put_token_counts(concrete, rows))
            return
        # Another snapshot store: whole snapshots, as every other write puts them.
        for number, _, _ in rows:
            task = self.store.get_task(conn, number)
            if task is not None:
                data, updated = task.SerializeToString(), to_us(task.updated_at)
                wctx.after_commit(functools.partial(cache.put, task, data, updated))

    @staticmethod
    def _put_token_counts(cache: TaskCache, rows: Sequence[tuple[int, int, int]]) -> None:
        for number, count, updated in rows:
            cache.put_token_count(number, count, updated)

    async def snapshot(self, number: int) -> tasks_pb2.Task | None:
        """Task ``number`` as committed: from the write-through cache when it holds it, else one read
        (which fills the cache)."""
        data = self.cache.get_bytes(number)
        if data is not None:
            return tasks_pb2.Task.FromString(data)
        mark = self.cache.mark()
        task = await self.db.read(lambda c: self.store.get_task(c, number))
        if task is not None:
            self.cache.fill(task, mark)
        return task

    def task_ended_cached(self, number: int) -> bool | None:
        """Whether task ``number`` is completed, failed or cancelled, from the write-through cache without
        a read; None when the cache does not hold it (ask :meth:`task_ended`)."""
        cache = self.cache
        if isinstance(cache, TaskCache):
            status = cache.status(number)  # the cached message's field: nothing parsed
            return None if status is None else status in _ENDED
        data = cache.get_bytes(number)
        return None if data is None else tasks_pb2.Task.FromString(data).status in _ENDED

    async def task_ended(self, number: int) -> bool:
        """Whether task ``number`` is completed, failed or cancelled (False when there is no such task):
        from the write-through cache when it holds the task, else one read."""
        ended = self.task_ended_cached(number)
        if ended is not None:
            return ended
        found = await self.db.read(lambda c: self.store.status_of(c, number))
        return found is not None and found[0] in store.FINAL_STATUSES

    # -- watch -------------------------------------------------------------------

    async def WatchTasks(
        self, req: tasks_pb2.WatchTasksRequest, ctx: CallContext
    ) -> AsyncIterator[tasks_pb2.WatchTasksResponse]:
        if req.after_cursor < 0:
            raise invalid_argument("after_cursor", "must not be negative")
        if req.from_now and req.after_cursor:
            raise invalid_argument("from_now", "give either from_now or an after_cursor, not both")
        only = parse_task_number(req.task_id) if req.task_id else None
        # Subscribe before reading the database so nothing published in
        # between is lost; anything seen twice is dropped by cursor.
        sub = self.feed.subscribe()
        try:
            # Cursor 0 is before the first event: without from_now the stream replays
            # everything retained (in bounded pages), so a change made between a
            # server restart and a client's reconnect cannot fall into a gap.
            cursor = self.feed.last_cursor if req.from_now else req.after_cursor
            replay = cursor < self.feed.last_cursor
            if req.from_now:
                # The position alone: the client holds a resume point even if
                # nothing happens before it is disconnected.
                yield tasks_pb2.WatchTasksResponse(cursor=cursor)
            while True:
                if replay:
                    sub.reset()
                    while True:
                        # Rows leave the page as they are sent: a stream blocked on a client
                        # that does not read holds one bounded page at most, and less and less of it.
                        page = collections.deque(
                            await self.db.read(
                                functools.partial(
                                    store.changes_after,
                                    cursor=cursor,
                                    task_number=only,
                                    limit=_WATCH_REPLAY_PAGE,
                                    max_bytes=_WATCH_REPLAY_BYTES,
                                )
                            )
                        )
                        if not page:
                            break
                        while page:
                            event, task = page.popleft()
                            cursor = event.id
                            yield tasks_pb2.WatchTasksResponse(cursor=event.id, event=event, task=task)
                    # Live changes that overflowed the queue while replaying are in the database: replay on.
                    replay = sub.overflowed
                    continue
                change = await sub.get()
                if change is None:
                    if sub.overflowed:
                        raise ApiError(
                            grpc.StatusCode.ABORTED,
                            f"watch fell behind: more than {sub.size} changes or {sub.max_bytes // 1024} KiB"
                            " were waiting to be sent;"
                            f" resume with after_cursor={cursor}",
                            reason="WATCH_FELL_BEHIND",
                        )
                    return  # server shutting down
                if change.cursor <= cursor or (only is not None and change.event.task_id != only):
                    continue
                cursor = change.cursor
                yield tasks_pb2.WatchTasksResponse(cursor=change.cursor, event=change.event, task=change.task)
        finally:
            sub.close()
