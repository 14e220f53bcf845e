"""Budgets on the real server: a task's own budget, its type's default and the fleet's daily budget.
Crossing one logs one `budget_exceeded` event on the task (seen by WatchTasks), whichever way the
costs arrive (one call, a batch, a replayed request_id counts once); an update that sets a budget
below the spend logs it too; summaries flag what is over; bad budgets are refused by field."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from lobwife.v1 import costs_pb2, costs_pb2_grpc, tasks_pb2, tasks_pb2_grpc
from tests.conftest import ROOT, ServerProcess, run_cli, start_server, subprocess_env
from tests.grpc_util import ts
from tests.http_util import curl

C = costs_pb2
T = tasks_pb2


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # swe tasks get $1 unless they have their own budget; qa tasks none; the fleet $10 a day.
    server = start_server(
        tmp_path_factory.mktemp("budgets") / "state", "--task-budget", "swe=1", "--fleet-daily-budget", "10"
    )
    try:
        yield server
    finally:
        server.terminate()


@pytest.fixture
def ch(srv: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(srv.grpc_addr) as channel:
        yield channel


def _task(ch: grpc.Channel, name: str, kind: str = "swe", budget: float | None = None) -> int:
    req = T.CreateTaskRequest(name=name, type=kind)
    if budget is not None:
        req.budget_usd = budget
    return tasks_pb2_grpc.TaskServiceStub(ch).CreateTask(req, timeout=10).task.id


def _spend(ch: grpc.Channel, number: int, usd: float, **kw: object) -> None:
    req = C.RecordCostRequest(task_id=f"T{number}", model="claude-haiku-4-5", cost_usd=usd, **kw)  # type: ignore[arg-type]
    costs_pb2_grpc.CostServiceStub(ch).RecordCost(req, timeout=10)


def _exceeded(ch: grpc.Channel, number: int) -> list[T.TaskEvent]:
    events = tasks_pb2_grpc.TaskServiceStub(ch).ListTaskEvents(T.ListTaskEventsRequest(task_id=str(number)), timeout=10)
    return [e for e in events.events if e.event_type == "budget_exceeded"]


def test_a_task_over_its_own_budget_gets_one_event_and_watch_tasks_shows_it(ch: grpc.Channel) -> None:
    n = _task(ch, "own budget", budget=0.5)
    tasks = tasks_pb2_grpc.TaskServiceStub(ch)
    assert tasks.GetTask(T.GetTaskRequest(task_id=str(n)), timeout=10).task.budget_usd == 0.5
    stream = tasks.WatchTasks(T.WatchTasksRequest(task_id=str(n), from_now=True), timeout=30)
    seen: list[T.WatchTasksResponse] = []

    def read() -> None:
        for msg in stream:
            seen.append(msg)
            if msg.event.event_type == "budget_exceeded":
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    _spend(ch, n, 0.3)
    assert _exceeded(ch, n) == []  # $0.30 of $0.50
    _spend(ch, n, 0.3)  # $0.60: over
    _spend(ch, n, 0.3)  # still over: no second event
    reader.join(15)
    stream.cancel()
    events = _exceeded(ch, n)
    assert len(events) == 1, events
    assert events[0].detail == f"T{n} has spent $0.60, over its own budget of $0.50"
    assert events[0].actor == "lobwife"
    watched = [m for m in seen if m.event.event_type == "budget_exceeded"]
    assert len(watched) == 1 and watched[0].event.id == events[0].id and watched[0].task.id == n


def test_the_type_default_holds_and_a_batch_crosses_once(ch: grpc.Channel) -> None:
    n = _task(ch, "default budget")  # swe: $1
    items = [C.RecordCostRequest(task_id=str(n), model="claude-haiku-4-5", cost_usd=0.4) for _ in range(3)]
    resp = costs_pb2_grpc.CostServiceStub(ch).RecordCosts(C.RecordCostsRequest(items=items), timeout=10)
    assert resp.stored == 3
    events = _exceeded(ch, n)
    assert [e.detail for e in events] == [f"T{n} has spent $1.20, over the default budget of type 'swe' of $1.00"]
    # A type with no default and no budget of its own: no budget, no event.
    q = _task(ch, "no budget", kind="qa")
    _spend(ch, q, 2.0)
    assert _exceeded(ch, q) == []


def test_a_replayed_request_counts_once_and_priced_calls_count_too(ch: grpc.Channel) -> None:
    n = _task(ch, "replays", budget=0.25)
    for _ in range(3):  # the same call retried: stored once, so $0.20
        _spend(ch, n, 0.2, request_id=f"replay-{n}")
    assert _exceeded(ch, n) == []
    # A call priced by the table (no caller's cost): Haiku 4.5, $1 in per million -> $0.10.
    req = C.RecordCostRequest(task_id=str(n), model="claude-haiku-4-5", input_tokens=100_000)
    cost = costs_pb2_grpc.CostServiceStub(ch).RecordCost(req, timeout=10).cost
    assert math.isclose(cost.cost_usd, 0.1)
    assert len(_exceeded(ch, n)) == 1


def test_an_update_below_the_spend_logs_it_and_the_summary_flags_it(ch: grpc.Channel, srv: ServerProcess) -> None:
    n = _task(ch, "update budget", kind="qa", budget=5.0)
    _spend(ch, n, 0.75)
    tasks = tasks_pb2_grpc.TaskServiceStub(ch)
    upd = tasks.UpdateTask(T.UpdateTaskRequest(task_id=str(n), budget_usd=0.5), timeout=10)
    assert upd.updated == ["budget_usd"] and upd.task.budget_usd == 0.5
    events = _exceeded(ch, n)
    assert [e.detail for e in events] == [f"T{n} has spent $0.75, over its own budget of $0.50 (changed by an update)"]
    # Lower still: already over, no second event. Cleared: a qa task has no default, so no budget.
    tasks.UpdateTask(T.UpdateTaskRequest(task_id=str(n), budget_usd=0.25), timeout=10)
    mask = field_mask_pb2.FieldMask(paths=["budget_usd"])
    cleared = tasks.UpdateTask(T.UpdateTaskRequest(task_id=str(n), update_mask=mask), timeout=10).task
    assert not cleared.HasField("budget_usd")
    assert len(_exceeded(ch, n)) == 1
    # Over HTTP (curl), the legacy PATCH: the key is budget_usd.
    r = curl("PATCH", f"{srv.http_url}/api/v1/tasks/T{n}", {"budget_usd": 0.7})
    assert r.status == 200 and r.json["task"]["budget_usd"] == 0.7, r.body
    summary = costs_pb2_grpc.CostServiceStub(ch).SummarizeCosts(
        C.SummarizeCostsRequest(group_by=C.COST_GROUP_BY_TASK), timeout=10
    )
    rows = {row.key: row for row in summary.rows}
    assert rows[f"T{n}"].budget_usd == 0.7 and rows[f"T{n}"].budget_exceeded  # $0.75 of $0.70
    assert summary.budget_exceeded
    r = curl("GET", f"{srv.http_url}/api/costs/summary?group_by=task")
    assert r.status == 200
    by_key = {row["key"]: row for row in r.json["rows"]}
    assert by_key[f"T{n}"]["budget_exceeded"] is True and by_key[f"T{n}"]["budget_usd"] == 0.7


def test_the_fleet_daily_budget_logs_on_the_task_that_crossed_it(ch: grpc.Channel) -> None:
    a, b = _task(ch, "fleet a", kind="qa"), _task(ch, "fleet b", kind="qa")
    day = "2026-01-05"
    costs = costs_pb2_grpc.CostServiceStub(ch)
    # Usage of no task counts toward the fleet's day, too.
    costs.RecordCost(C.RecordCostRequest(model="claude-haiku-4-5", cost_usd=6.0, created_at=ts(f"{day}T01:00:00")))
    _spend(ch, a, 3.5, created_at=ts(f"{day}T02:00:00"))  # $9.50 of $10
    assert _exceeded(ch, a) == []
    _spend(ch, b, 1.0, created_at=ts(f"{day}T03:00:00"))  # $10.50: b took the fleet over
    _spend(ch, a, 1.0, created_at=ts(f"{day}T04:00:00"))  # still over that day: nothing more
    assert _exceeded(ch, a) == []
    assert [e.detail for e in _exceeded(ch, b)] == [
        "the fleet has spent $10.50 on 2026-01-05 (UTC), over its daily budget of $10.00"
    ]
    # Another day starts from nothing.
    _spend(ch, a, 1.0, created_at=ts("2026-01-06T01:00:00"))
    assert _exceeded(ch, a) == []
    summary = costs.SummarizeCosts(
        C.SummarizeCostsRequest(
            group_by=C.COST_GROUP_BY_DAY, start_time=ts("2026-01-05T00:00:00"), end_time=ts("2026-01-07T00:00:00")
        ),
        timeout=10,
    )
    assert [(r.key, r.budget_usd, r.budget_exceeded) for r in summary.rows] == [
        ("2026-01-05", 10.0, True),
        ("2026-01-06", 10.0, False),
    ]
    today = datetime.now(UTC).date().isoformat()
    assert summary.fleet_budget.day == today and summary.fleet_budget.daily_budget_usd == 10.0
    # By model: no budget on the rows, the fleet's status all the same.
    by_model = costs.SummarizeCosts(C.SummarizeCostsRequest(group_by=C.COST_GROUP_BY_MODEL), timeout=10)
    assert all(not r.HasField("budget_usd") and not r.budget_exceeded for r in by_model.rows)
    assert by_model.fleet_budget.daily_budget_usd == 10.0


@pytest.mark.parametrize("value", [-1.0, 1e7, math.inf, -math.inf, math.nan])
def test_a_budget_out_of_range_is_refused_by_field_and_nothing_changes(ch: grpc.Channel, value: float) -> None:
    tasks = tasks_pb2_grpc.TaskServiceStub(ch)
    with pytest.raises(grpc.RpcError) as info:
        tasks.CreateTask(T.CreateTaskRequest(name="bad", budget_usd=value), timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "budget_usd" in (info.value.details() or "")
    n = _task(ch, "keeps its budget", budget=2.0)
    with pytest.raises(grpc.RpcError) as info:
        tasks.UpdateTask(T.UpdateTaskRequest(task_id=str(n), budget_usd=value), timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "budget_usd" in (info.value.details() or "")
    assert tasks.GetTask(T.GetTaskRequest(task_id=str(n)), timeout=10).task.budget_usd == 2.0


def test_a_bad_budget_over_http_is_a_400_naming_the_field(srv: ServerProcess) -> None:
    r = curl("POST", f"{srv.http_url}/api/v1/tasks", {"name": "bad", "budget_usd": -3})
    assert r.status == 400 and "budget_usd" in r.body.decode(), r.body
    for raw in ('"lots"', '"NaN"', '"Infinity"'):
        r = curl("POST", f"{srv.http_url}/api/v1/tasks", f'{{"name": "bad", "budget_usd": {raw}}}')
        assert r.status == 400 and "budget_usd" in r.body.decode(), (raw, r.body)
    # A number JSON cannot hold as a double is refused by the parser, saying where.
    r = curl("POST", f"{srv.http_url}/api/v1/tasks", '{"name": "bad", "budget_usd": 1e400}')
    assert r.status == 400 and "invalid JSON" in r.json["error"] and "column 31" in r.json["error"], r.body


def test_concurrent_records_met_in_one_write_cross_each_budget_once(ch: grpc.Channel, srv: ServerProcess) -> None:
    # 64 calls at once: the writer meets them in batches (one multi-row insert each), and the budget
    # check runs once per batch; each task still crosses once, and the fleet's day once.
    from concurrent.futures import ThreadPoolExecutor

    numbers = [_task(ch, f"herd {i}", kind="qa", budget=0.35) for i in range(8)]
    day = "2026-02-10"

    def one(i: int) -> None:
        with grpc.insecure_channel(srv.grpc_addr) as own:
            _spend(own, numbers[i % 8], 0.1, created_at=ts(f"{day}T{i % 24:02d}:00:00"))

    with ThreadPoolExecutor(64) as pool:
        list(pool.map(one, range(64)))  # 8 x $0.10 per task: over $0.35 at the 4th; the fleet: $6.40 of $10
    for n in numbers:
        events = _exceeded(ch, n)
        # The spend it names is the task's after the write that crossed (one batch may hold two of its calls).
        assert len(events) == 1, events
        assert re.fullmatch(rf"T{n} has spent \$0\.[4-8]0, over its own budget of \$0\.35", events[0].detail), events
    with ThreadPoolExecutor(64) as pool:  # 40 more on that day: $10.40, over the fleet's $10, once
        list(pool.map(one, range(40)))
    fleet = [e for n in numbers for e in _exceeded(ch, n) if "the fleet" in e.detail]
    assert len(fleet) == 1 and "on 2026-02-10 (UTC)" in fleet[0].detail, fleet


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--task-budget", "swe"], "--task-budget: 'swe' is not TYPE=USD"),
        (["--task-budget", "swe=-2"], "--task-budget swe: must be 0 to 1,000,000 US dollars"),
        (["--fleet-daily-budget", "plenty"], "--fleet-daily-budget: 'plenty' is not a number of US dollars"),
    ],
)
def test_a_budget_setting_that_cannot_be_used_stops_the_start(tmp_path: Path, flags: list[str], said: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lobwife_server", "--state-dir", str(tmp_path / "s"), *flags],
        env=subprocess_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0 and said in done.stderr, done.stderr


def test_budgets_from_the_environment(tmp_path: Path) -> None:
    env = {"LOBWIFE_TASK_BUDGETS": "swe=0.1, qa=0.2", "LOBWIFE_FLEET_DAILY_BUDGET": "3"}
    server = start_server(tmp_path / "state", env=env)
    try:
        with grpc.insecure_channel(server.grpc_addr) as ch:
            n = _task(ch, "env", kind="qa")
            _spend(ch, n, 0.25)
            assert [e.detail for e in _exceeded(ch, n)] == [
                f"T{n} has spent $0.25, over the default budget of type 'qa' of $0.20"
            ]
            s = costs_pb2_grpc.CostServiceStub(ch).SummarizeCosts(
                C.SummarizeCostsRequest(group_by=C.COST_GROUP_BY_MODEL), timeout=10
            )
            assert s.fleet_budget.daily_budget_usd == 3.0 and math.isclose(s.fleet_budget.spent_usd, 0.25)
            assert not s.fleet_budget.exceeded
        r = curl("GET", f"{server.http_url}/api/costs/summary?group_by=day")
        assert json.loads(r.body)["fleet_budget"]["daily_budget_usd"] == 3.0
    finally:
        server.terminate()


def test_the_cli_sets_budgets_and_the_summary_shows_them(srv: ServerProcess) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(srv.grpc_addr, *args)

    made = cli("tasks", "create", "cli budget", "--type", "qa", "--budget-usd", "0.05", "--json")
    assert made.returncode == 0, made.stderr
    task = json.loads(made.stdout)
    assert task["budget_usd"] == 0.05
    ref = task["task_id"]
    assert cli("costs", "record", "claude-haiku-4-5", "--task", ref, "--cost", "0.06").returncode == 0
    table = cli("costs", "summary", "--by", "task")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[-1] == "BUDGET"
    line = next(row for row in table.stdout.splitlines() if row.startswith(ref + " "))
    assert line.rstrip().endswith("0.05 OVER"), table.stdout
    assert "fleet today (" in table.stdout and "of $10.00 daily budget" in table.stdout
    cleared = cli("tasks", "update", ref, "--clear", "budget_usd", "--json")
    assert cleared.returncode == 0 and "budget_usd" not in json.loads(cleared.stdout)["task"], cleared.stdout
    bad = cli("tasks", "create", "x", "--budget-usd", "-1")
    assert bad.returncode == 2 and "--budget-usd" in bad.stderr
