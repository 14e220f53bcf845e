"""CostService: each model call's usage, its cost, and summaries by model, task, task type, day or hour.

A call's cost is the caller's figure when it sends one (what the provider billed), else the price
table's (prices.py) for the model at the time of the call; the row keeps the raw counts, both
figures and the price entry's id, so ``RepriceCosts`` can compute again after a price fix (only
rows without a caller's figure: the provider's bill is not second-guessed). An unknown model is
stored with no computed cost and a note, and counted in ``lobwife_costs_unpriced_total``.

Budgets (budgets.py) are checked in the write that stores the records: a crossing logs
``budget_exceeded`` on the task through :class:`TaskEvents` (the tasks domain implements it; app.py
wires it), so WatchTasks carries it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, Protocol

import grpc

from lobwife import enums
from lobwife.v1 import costs_pb2
from lobwife_server.api.rpc import CallContext, WireMessage, single_part
from lobwife_server.core import metrics
from lobwife_server.core.errors import ApiError, invalid_argument
from lobwife_server.core.timeutil import now_us, set_ts
from lobwife_server.core.validation import (
    MAX_REQUEST_ID,
    MAX_SHORT,
    PageTokens,
    check_text,
    check_usd,
    parse_task_number,
    request_page_size,
    timestamp_us,
)
from lobwife_server.costs.budgets import EPSILON_USD, BudgetSettings, crossed, money
from lobwife_server.costs.prices import PriceTable
from lobwife_server.storage import cost_store
from lobwife_server.storage.cost_store import DAY_US, CostFilter, CostRow, NewCost, Sums
from lobwife_server.storage.database import BatchKind, WriteContext
from lobwife_server.storage.interfaces import Conn, CostStore, Storage

#: One call's tokens of one kind at most: far above any model's context, far below int64 sums.
MAX_TOKENS = 10**12
#: Items of one RecordCosts call at most.
MAX_BATCH = 500
#: When a call may have happened: from 2000 (the rollups' arithmetic relies on positive times) to a day
#: ahead (a skewed clock, not a typo of the year).
EARLIEST_CALL_US = 946_684_800 * 1_000_000
LATEST_AHEAD_US = 86_400 * 1_000_000
#: Rows one RepriceCosts write handles (the call goes on, write after write, to the end of the range).
REPRICE_CHUNK = 1000

#: Who a budget_exceeded event says logged it.
BUDGET_ACTOR = "lobwife"

log = logging.getLogger("lobwife.costs")

_GROUP = costs_pb2.CostGroupBy.DESCRIPTOR
_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


def _day_key(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, UTC).date().isoformat()


def _hour_key(hour: int) -> str:
    return datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%dT%H")


_KEYS = {
    "model": str,
    "task": lambda n: f"T{n}" if n else "",
    "type": str,
    "day": _day_key,
    "hour": _hour_key,
}


def _to_proto(row: CostRow, out: costs_pb2.CostEvent | None = None) -> costs_pb2.CostEvent:
    e = out if out is not None else costs_pb2.CostEvent()
    e.id = row.id
    if row.task_number is not None:
        e.task_id = row.task_number
    e.model = row.model
    e.provider = row.provider
    e.input_tokens = row.input_tokens
    e.output_tokens = row.output_tokens
    e.cache_read_tokens = row.cache_read_tokens
    e.cache_write_tokens = row.cache_write_tokens
    e.reasoning_tokens = row.reasoning_tokens
    e.cost_usd = row.cost_usd
    if row.computed_cost_usd is not None:
        e.computed_cost_usd = row.computed_cost_usd
    if row.caller_cost_usd is not None:
        e.caller_cost_usd = row.caller_cost_usd
    e.price_id = row.price_id
    e.cost_note = row.cost_note
    e.task_type = row.task_type
    e.request_id = row.request_id or ""
    set_ts(e.created_at, row.occurred_at)
    return e


class TaskEvents(Protocol):
    """What CostService asks of the tasks domain (TaskService implements it)."""

    def log_event_in(
        self, conn: Conn, wctx: WriteContext, number: int, event_type: str, detail: str, actor: str | None
    ) -> bool:
        """Append an event to task ``number``'s trail inside the caller's write, published to WatchTasks
        after the commit; False when there is no such task."""
        ...


#: The empty base of every RecordCost response; shared, so never mutated.
_RECORD_RESPONSE = costs_pb2.RecordCostResponse()


def _response(row: CostRow) -> WireMessage:
    """RecordCost's answer, encoded (in the writer thread)."""
    event = _to_proto(row)
    return single_part(_RECORD_RESPONSE, "cost", event.SerializeToString(), event)


def _summary_row(key: str, s: Sums, out: costs_pb2.CostSummaryRow) -> None:
    out.key = key
    out.calls = s.calls
    out.input_tokens = s.input_tokens
    out.output_tokens = s.output_tokens
    out.cache_read_tokens = s.cache_read_tokens
    out.cache_write_tokens = s.cache_write_tokens
    out.reasoning_tokens = s.reasoning_tokens
    out.cost_usd = round(s.cost_usd, 9)
    out.unpriced_calls = s.unpriced_calls


class CostService:
    """CostService RPCs over the cost store and the price table."""

    def __init__(
        self,
        db: Storage,
        page_tokens: PageTokens,
        prices: PriceTable,
        store: CostStore = cost_store,
        budgets: BudgetSettings | None = None,
    ) -> None:
        self.db = db
        self.tokens = page_tokens
        self.prices = prices
        self.store = store
        self.budgets = budgets or BudgetSettings()
        #: The tasks domain, for budget_exceeded events (app.py sets it); None: crossings are logged and
        #: counted only.
        self.tasks: TaskEvents | None = None
        # RecordCost calls in one writer batch run as one multi-row insert (CreateTask's way), and their
        # responses are encoded there: the event loop, the busier thread, only sends them.
        self._record_kind: BatchKind[tuple[NewCost, int], WireMessage] = BatchKind(self._record_one, self._record_many)

    # -- validation -----------------------------------------------------------------------------

    def _new(self, req: costs_pb2.RecordCostRequest, prefix: str = "") -> NewCost:
        # On the event loop for every record: the common case checks plain values first, and the
        # field names (``items[3].input_tokens``) are only spelled out for an error.
        model = check_text(prefix + "model", req.model, MAX_SHORT, required=True)
        assert model is not None
        i, o = req.input_tokens, req.output_tokens
        cr, cw, rs = req.cache_read_tokens, req.cache_write_tokens, req.reasoning_tokens
        if (
            not (0 <= i <= MAX_TOKENS and 0 <= o <= MAX_TOKENS and 0 <= cr <= MAX_TOKENS and 0 <= cw <= MAX_TOKENS)
            or not 0 <= rs <= o
        ):
            _bad_counts(req, prefix)
        caller: float | None = None
        if req.HasField("cost_usd"):
            caller = check_usd(prefix + "cost_usd", req.cost_usd)
        ref = check_text(prefix + "task_id", req.task_id, MAX_SHORT) if req.task_id else None
        number = parse_task_number(ref, prefix + "task_id") if ref else None
        now = now_us()
        occurred = timestamp_us(prefix + "created_at", req.created_at) if req.HasField("created_at") else now
        if not EARLIEST_CALL_US <= occurred <= now + LATEST_AHEAD_US:
            raise invalid_argument(prefix + "created_at", "must be after 2000-01-01 and at most a day from now")
        request_id = check_text(prefix + "request_id", req.request_id, MAX_REQUEST_ID) if req.request_id else None
        provider = (check_text(prefix + "provider", req.provider, MAX_SHORT) or "").lower() if req.provider else ""
        price = self.prices.find(model, occurred)
        if price is None:
            computed, price_id, note = None, "", f"no price for model {model[:80]!r} at that time"
        else:
            computed, price_id, note = price.cost(i, o, cr, cw), price.id, ""
        fingerprint = None
        if request_id is not None:
            # What the request asks, hashed (the time too when the caller gave it): a retry is the same.
            given = (number, provider, model, (i, o, cr, cw, rs), caller, req.created_at.SerializeToString())
            fingerprint = hashlib.blake2b(repr(given).encode(), digest_size=16).digest()
        return NewCost(
            request_id,
            fingerprint,
            number,
            provider,
            model,
            i,
            o,
            cr,
            cw,
            rs,
            caller,
            computed,
            price_id,
            note,
            occurred,
        )

    def _store(
        self,
        conn: Conn,
        w: WriteContext,
        new: NewCost,
        field_prefix: str,
        now: int,
        fresh: list[CostRow],
        found: Mapping[int, tuple[str, float | None]] | None = None,
    ) -> CostRow:
        """Insert ``new`` (or answer the stored row of a retried request_id), inside the caller's write;
        a row inserted is appended to ``fresh`` (for the budget check). ``found``: its task's (type,
        budget) when the caller has read them (the insert then takes the type from there)."""
        if new.request_id is not None:
            seen = self.store.find_request(conn, new.request_id)
            if seen is not None:
                row, fp = seen
                if fp != new.request_fp:
                    desc = f"{new.request_id[:40]!r} was already used for cost {row.id} with a different call"
                    raise ApiError(
                        grpc.StatusCode.ALREADY_EXISTS,
                        f"{field_prefix}request_id: {desc}",
                        violations=[(field_prefix + "request_id", desc)],
                        reason="REQUEST_ID_REUSED",
                    )
                return row
        if new.task_number is not None and found is not None:
            info = found.get(new.task_number)
            stored = None if info is None else self.store.insert_costs(conn, [(new, info[0])], now)[0]
        else:
            stored = self.store.insert_cost(conn, new, now)
        if stored is None:
            raise invalid_argument(field_prefix + "task_id", f"names task T{new.task_number}, which does not exist")
        if stored.computed_cost_usd is None:
            w.after_commit(metrics.COSTS_UNPRICED.inc)
        fresh.append(stored)
        return stored

    # -- RPCs -----------------------------------------------------------------------------------

    async def RecordCost(self, req: costs_pb2.RecordCostRequest, ctx: CallContext) -> WireMessage:
        return await self.db.write_as(self._record_kind, (self._new(req), now_us()))

    def _record_one(self, conn: Conn, w: WriteContext, arg: tuple[NewCost, int]) -> WireMessage:
        new = arg[0]
        # The task's type and budget in one read, for the insert and the budget check alike.
        found = self.store.task_budgets(conn, [new.task_number]) if new.task_number is not None else {}
        fresh: list[CostRow] = []
        row = self._store(conn, w, new, "", arg[1], fresh, found)
        self._check_budgets(conn, w, fresh, found)
        return _response(row)

    def _record_many(self, conn: Conn, items: list[tuple[WriteContext, tuple[NewCost, int]]]) -> list[WireMessage]:
        """A batch of RecordCost calls: one look at their tasks and one multi-row insert, with the same
        effect as each on its own. Anything unusual (a request_id, a task that does not exist) raises,
        and the batch runs again call by call (BatchKind), where that call gets its error."""
        if any(new.request_id is not None for _, (new, _) in items):
            raise _OneByOne()
        numbers = sorted({new.task_number for _, (new, _) in items if new.task_number is not None})
        found = self.store.task_budgets(conn, numbers)
        if len(found) != len(numbers):
            raise _OneByOne()
        rows = self.store.insert_costs(
            conn,
            [(new, found[new.task_number][0] if new.task_number else "") for _, (new, _) in items],
            items[0][1][1],
        )
        for (w, _), row in zip(items, rows, strict=True):
            if row.computed_cost_usd is None:
                w.after_commit(metrics.COSTS_UNPRICED.inc)
        self._check_budgets(conn, items[0][0], rows, found)
        return [_response(row) for row in rows]

    async def RecordCosts(self, req: costs_pb2.RecordCostsRequest, ctx: CallContext) -> costs_pb2.RecordCostsResponse:
        if len(req.items) > MAX_BATCH:
            raise invalid_argument("items", f"at most {MAX_BATCH} in one call, not {len(req.items)}")
        resp = costs_pb2.RecordCostsResponse()
        results = [resp.results.add(index=i) for i in range(len(req.items))]
        valid: list[tuple[int, NewCost]] = []
        for i, item in enumerate(req.items):
            try:
                valid.append((i, self._new(item, f"items[{i}].")))
            except ApiError as e:
                self._fail(results[i], e)
        now = now_us()

        def write(conn: Conn, w: WriteContext) -> list[tuple[int, CostRow | ApiError]]:
            out: list[tuple[int, CostRow | ApiError]] = []
            fresh: list[CostRow] = []
            for i, new in valid:
                try:
                    with self.store.savepoint(conn, "cost_item"):
                        out.append((i, self._store(conn, w, new, f"items[{i}].", now, fresh)))
                except ApiError as e:
                    out.append((i, e))
            self._check_budgets(conn, w, fresh)
            return out

        for i, outcome in await self.db.write(write) if valid else []:
            if isinstance(outcome, ApiError):
                self._fail(results[i], outcome)
            else:
                _to_proto(outcome, results[i].cost)
        resp.failed = sum(1 for r in results if r.error_code)
        resp.stored = len(results) - resp.failed
        return resp

    # -- budgets --------------------------------------------------------------------------------

    def _check_budgets(
        self,
        conn: Conn,
        w: WriteContext,
        rows: Sequence[CostRow],
        found: Mapping[int, tuple[str, float | None]] | None = None,
    ) -> None:
        """Inside the write that inserted ``rows``: log each budget they took over (budgets.py).
        ``found``: the tasks' (type, budget) when the caller has read them in this write."""
        added: dict[int, float] = {}
        for r in rows:
            if r.task_number is not None and r.cost_usd > 0:
                added[r.task_number] = added.get(r.task_number, 0.0) + r.cost_usd
        if added:
            if found is None or not added.keys() <= found.keys():
                found = self.store.task_budgets(conn, sorted(added))
            # Only the tasks that spent in these rows: ``found`` may hold others of the batch (a call of
            # an unknown model costs nothing).
            holds = {n: self.budgets.for_task(found[n][1], found[n][0]) for n in added if n in found}
            limits = {n: b for n, b in holds.items() if b is not None}
            if limits:
                spent = self.store.task_spend(conn, sorted(limits))
                for n, (limit, source) in sorted(limits.items()):
                    after = spent.get(n, 0.0)
                    if crossed(after, added[n], limit):
                        detail = f"T{n} has spent {money(after)}, over {source} of {money(limit)}"
                        self._exceeded(conn, w, "task", n, detail)
        fleet = self.budgets.fleet_daily_usd
        if fleet is None:
            return
        days: dict[int, list[CostRow]] = {}
        for r in rows:
            if r.cost_usd > 0:
                days.setdefault(r.occurred_at // DAY_US, []).append(r)
        for day, its in sorted(days.items()):
            spent_day = self.store.fleet_spend_by_day(conn, day, day + 1).get(day, 0.0)
            add = sum(r.cost_usd for r in its)
            if not crossed(spent_day, add, fleet):
                continue
            # The record that took the day over: its task gets the event.
            running, culprit = spent_day - add, its[-1]
            for r in its:
                running += r.cost_usd
                if running > fleet + EPSILON_USD:
                    culprit = r
                    break
            detail = (
                f"the fleet has spent {money(spent_day)} on {_day_key(day)} (UTC),"
                f" over its daily budget of {money(fleet)}"
            )
            self._exceeded(conn, w, "fleet", culprit.task_number, detail)

    def _exceeded(self, conn: Conn, w: WriteContext, scope: str, number: int | None, detail: str) -> None:
        logged = False
        if number is not None and self.tasks is not None:
            logged = self.tasks.log_event_in(conn, w, number, "budget_exceeded", detail, BUDGET_ACTOR)
        where = f" (event on T{number})" if logged else ""

        def committed() -> None:
            metrics.COSTS_BUDGET_EXCEEDED.labels(scope).inc()
            log.warning("budget exceeded: %s%s", detail, where)

        w.after_commit(committed)

    def budget_changed_in(
        self,
        conn: Conn,
        wctx: WriteContext,
        number: int,
        before: tuple[str, float | None],
        after: tuple[str, float | None],
    ) -> None:
        """The tasks domain's check (its CostLink) when an update changes a task's type or budget."""
        new = self.budgets.for_task(after[1], after[0])
        if new is None:
            return
        old = self.budgets.for_task(before[1], before[0])
        spent = self.store.task_spend(conn, [number]).get(number, 0.0)
        if spent > new[0] + EPSILON_USD and (old is None or spent <= old[0] + EPSILON_USD):
            detail = f"T{number} has spent {money(spent)}, over {new[1]} of {money(new[0])} (changed by an update)"
            self._exceeded(conn, wctx, "task", number, detail)

    @staticmethod
    def _fail(result: costs_pb2.RecordCostResult, e: ApiError) -> None:
        result.error_code = e.code.name
        result.error = e.message
        if e.violations:
            result.field = e.violations[0][0]

    def _filter(
        self,
        req: costs_pb2.ListCostsRequest | costs_pb2.SummarizeCostsRequest,
        provider: str = "",
        task_type: str = "",
    ) -> CostFilter:
        ref = check_text("task_id", req.task_id, MAX_SHORT)
        start_us = timestamp_us("start_time", req.start_time) if req.HasField("start_time") else None
        end_us = timestamp_us("end_time", req.end_time) if req.HasField("end_time") else None
        if start_us is not None and end_us is not None and end_us < start_us:
            raise invalid_argument("end_time", "is before start_time")
        return CostFilter(
            task_number=parse_task_number(ref, "task_id") if ref else None,
            model=check_text("model", req.model, MAX_SHORT),
            provider=(check_text("provider", provider, MAX_SHORT) or "").lower() or None,
            task_type=check_text("task_type", task_type, MAX_SHORT),
            start=start_us,
            end=end_us,
        )

    async def ListCosts(self, req: costs_pb2.ListCostsRequest, ctx: CallContext) -> costs_pb2.ListCostsResponse:
        flt = self._filter(req, req.provider, req.task_type)
        size = request_page_size(req)
        filters: Sequence[object] = [flt.task_number, flt.model, flt.provider, flt.task_type, flt.start, flt.end]
        before = self.tokens.parse(req.page_token, "costs", filters)
        rows = await self.db.read(lambda c: self.store.list_costs(c, flt, before, size + 1))
        resp = costs_pb2.ListCostsResponse()
        for row in rows[:size]:
            _to_proto(row, resp.costs.add())
        resp.next_page_token = self.tokens.after("costs", filters, rows, size)
        return resp

    async def SummarizeCosts(
        self, req: costs_pb2.SummarizeCostsRequest, ctx: CallContext
    ) -> costs_pb2.SummarizeCostsResponse:
        group = enums.short_name(_GROUP, req.group_by)
        if group is None or group not in _KEYS:
            raise invalid_argument("group_by", "must be one of model, task, type, day, hour")
        flt = self._filter(req)
        today = now_us() // DAY_US
        sums, flags, spent_today = await self.db.read(
            functools.partial(self._summary, group=group, flt=flt, today=today)
        )
        resp = costs_pb2.SummarizeCostsResponse()
        fleet = self.budgets.fleet_daily_usd
        if fleet is not None:
            resp.fleet_budget.day = _day_key(today)
            resp.fleet_budget.daily_budget_usd = fleet
            resp.fleet_budget.spent_usd = round(spent_today, 9)
            resp.fleet_budget.exceeded = spent_today > fleet + EPSILON_USD
        total = Sums()
        to_key = _KEYS[group]
        # Most expensive first for model/task/type; time order for day/hour.
        if group in ("day", "hour"):
            ordered = sorted(sums.items(), key=lambda kv: kv[0])
        else:
            ordered = sorted(sums.items(), key=lambda kv: (-kv[1].cost_usd, str(kv[0])))
        for key, s in ordered:
            row = resp.rows.add()
            _summary_row(to_key(key), s, row)  # type: ignore[operator]
            flag = flags.get(key)
            if flag is not None:
                row.budget_usd, row.budget_exceeded = flag
                resp.budget_exceeded = resp.budget_exceeded or flag[1]
            total.add(s)
        _summary_row("total", total, resp.total)
        return resp

    def _summary(
        self, conn: Conn, *, group: str, flt: CostFilter, today: int
    ) -> tuple[dict[Any, Sums], dict[Any, tuple[float, bool]], float]:
        """The sums, each row's (budget, exceeded) where a budget holds (tasks, and days under a fleet
        budget), and what the fleet spent today: one read, so they agree."""
        sums: dict[Any, Sums] = self.store.summarize(conn, group, flt)
        flags: dict[Any, tuple[float, bool]] = {}
        fleet = self.budgets.fleet_daily_usd
        if group == "task" and sums:
            found = self.store.task_budgets(conn, sorted(k for k in sums if isinstance(k, int) and k))
            limits = {
                n: b[0] for n, (kind, own) in found.items() if (b := self.budgets.for_task(own, kind)) is not None
            }
            spent = self.store.task_spend(conn, sorted(limits))
            flags = {n: (limit, spent.get(n, 0.0) > limit + EPSILON_USD) for n, limit in limits.items()}
        elif group == "day" and sums and fleet is not None:
            days = [k for k in sums if isinstance(k, int)]
            by_day = self.store.fleet_spend_by_day(conn, min(days), max(days) + 1)
            flags = {d: (fleet, by_day.get(d, 0.0) > fleet + EPSILON_USD) for d in days}
        spent_today = 0.0
        if fleet is not None:
            spent_today = self.store.fleet_spend_by_day(conn, today, today + 1).get(today, 0.0)
        return sums, flags, spent_today

    async def RepriceCosts(
        self, req: costs_pb2.RepriceCostsRequest, ctx: CallContext
    ) -> costs_pb2.RepriceCostsResponse:
        since = timestamp_us("since", req.since)
        until = timestamp_us("until", req.until) if req.HasField("until") else now_us() + 1
        if until < since:
            raise invalid_argument("until", "is before since")
        actor = ctx.caller()
        resp = costs_pb2.RepriceCostsResponse()
        after = 0
        while True:
            rows = await self.db.read(functools.partial(self._repriceable, since=since, until=until, after=after))
            if not rows:
                break
            after = rows[-1].id
            changes = [c for c in (self._repriced(row) for row in rows) if c is not None]
            resp.examined += len(rows)
            resp.changed += len(changes)
            resp.delta_usd += sum((c.cost or 0.0) - (c.row.computed_cost_usd or 0.0) for c in changes)
            if changes and not req.dry_run:
                await self.db.write(functools.partial(self._apply, changes=changes, actor=actor, now=now_us()))
        resp.delta_usd = round(resp.delta_usd, 9)
        return resp

    def _repriceable(self, conn: Conn, *, since: int, until: int, after: int) -> list[CostRow]:
        return self.store.repriceable(conn, since, until, after, REPRICE_CHUNK)

    def _repriced(self, row: CostRow) -> _Change | None:
        """The row's cost by the table as it is now, when that differs from what is stored."""
        price = self.prices.find(row.model, row.occurred_at)
        if price is None:
            cost, price_id, note = None, "", f"no price for model {row.model[:80]!r} at that time"
        else:
            counts = (row.input_tokens, row.output_tokens, row.cache_read_tokens, row.cache_write_tokens)
            cost, price_id, note = price.cost(*counts), price.id, ""
        if (cost, price_id) == (row.computed_cost_usd, row.price_id):
            return None
        return _Change(row, cost, price_id, note)

    def _apply(self, conn: Conn, w: WriteContext, *, changes: list[_Change], actor: str, now: int) -> None:
        for c in changes:
            # False: the row changed since it was read (another reprice got there first); left as it is.
            self.store.set_computed(conn, c.row, c.cost, c.price_id, c.note, actor, now)


def _bad_counts(req: costs_pb2.RecordCostRequest, prefix: str) -> NoReturn:
    """The error for a request whose token counts fail the check: the first field at fault, named."""
    for name in _TOKEN_FIELDS:
        v = getattr(req, name)
        if v < 0:
            raise invalid_argument(prefix + name, "must not be negative")
        if v > MAX_TOKENS:
            raise invalid_argument(prefix + name, f"must be at most {MAX_TOKENS:,} for one call")
    raise invalid_argument(prefix + "reasoning_tokens", "is part of output_tokens, so it cannot be more")


class _OneByOne(Exception):
    """A batch of RecordCost calls that is not for the fast path: BatchKind runs it call by call."""


@dataclass(frozen=True, slots=True)
class _Change:
    row: CostRow
    cost: float | None
    price_id: str
    note: str
