"""CostService on the real server: a call's cost from the price table (dated model names matched,
effective dates honoured) or from the caller, kept beside the raw counts; idempotent records and
batches with per-item errors; lists and summaries (the rollup and the edges of a range agree with a
sum over the events); reprice after a price fix; bad input refused by field, nothing stored lost."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from lobwife.v1 import costs_pb2, costs_pb2_grpc, tasks_pb2, tasks_pb2_grpc
from tests.conftest import ROOT, ServerProcess, run_cli, start_server, subprocess_env
from tests.grpc_util import ts
from tests.http_util import curl

C = costs_pb2


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("costs") / "state")
    try:
        with grpc.insecure_channel(server.grpc_addr) as ch:
            stub = tasks_pb2_grpc.TaskServiceStub(ch)
            stub.CreateTask(tasks_pb2.CreateTaskRequest(name="fix login", type="swe"), timeout=10)
            stub.CreateTask(tasks_pb2.CreateTaskRequest(name="review", type="qa"), timeout=10)
        yield server
    finally:
        server.terminate()


@pytest.fixture
def stub(srv: ServerProcess) -> Iterator[costs_pb2_grpc.CostServiceStub]:
    with grpc.insecure_channel(srv.grpc_addr) as ch:
        yield costs_pb2_grpc.CostServiceStub(ch)


def _err(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_a_cost_is_computed_from_the_price_table_and_kept_with_the_raw_counts(
    stub: costs_pb2_grpc.CostServiceStub,
) -> None:
    req = C.RecordCostRequest(
        task_id="T1",
        model="claude-sonnet-4-5-20250929",
        provider="Anthropic",
        input_tokens=1_000_000,
        output_tokens=200_000,
        cache_read_tokens=500_000,
        cache_write_tokens=100_000,
        reasoning_tokens=50_000,
        created_at=ts("2026-11-30T10:15:00"),
    )
    c = stub.RecordCost(req, timeout=10).cost
    # $3 in, $15 out, $0.30 cache read, $3.75 cache write per million; reasoning is part of output.
    expected = 3.0 + 0.2 * 15 + 0.5 * 0.30 + 0.1 * 3.75
    assert math.isclose(c.cost_usd, expected) and math.isclose(c.computed_cost_usd, expected)
    assert not c.HasField("caller_cost_usd") and c.price_id == "claude-sonnet-4-5@2025-09-29"
    assert (c.task_id, c.task_type, c.provider, c.reasoning_tokens) == (1, "swe", "anthropic", 50_000)
    # The caller's figure wins; the computed one is kept beside it.
    billed = stub.RecordCost(
        C.RecordCostRequest(task_id="2", model="claude-haiku-4-5", input_tokens=10, cost_usd=0.5), timeout=10
    ).cost
    assert (billed.cost_usd, billed.caller_cost_usd) == (0.5, 0.5) and billed.computed_cost_usd == pytest.approx(1e-5)
    # Before a model's first price, and an unknown model: stored, no computed cost, a note.
    early = stub.RecordCost(
        C.RecordCostRequest(model="claude-opus-4-5", input_tokens=5, created_at=ts("2024-01-01T00:00:00")), timeout=10
    ).cost
    assert early.cost_usd == 0 and not early.HasField("computed_cost_usd") and "no price" in early.cost_note
    odd = stub.RecordCost(C.RecordCostRequest(model="gpt-9-ultra", input_tokens=5), timeout=10).cost
    assert odd.cost_note == "no price for model 'gpt-9-ultra' at that time" and odd.price_id == ""


def test_request_id_and_the_batch(stub: costs_pb2_grpc.CostServiceStub) -> None:
    one = C.RecordCostRequest(request_id="call-1", model="claude-haiku-4-5", input_tokens=100, task_id="T1")
    a = stub.RecordCost(one, timeout=10).cost
    b = stub.RecordCost(one, timeout=10).cost
    assert a.id == b.id and a.request_id == "call-1"
    other = C.RecordCostRequest(request_id="call-1", model="claude-haiku-4-5", input_tokens=999)
    assert _err(lambda: stub.RecordCost(other, timeout=10)).code() == grpc.StatusCode.ALREADY_EXISTS
    items = [
        C.RecordCostRequest(model="claude-haiku-4-5", input_tokens=1, task_id="T1"),
        C.RecordCostRequest(model="claude-haiku-4-5", input_tokens=-1),
        C.RecordCostRequest(model="claude-haiku-4-5", input_tokens=1, task_id="T999"),
        C.RecordCostRequest(model="claude-haiku-4-5", output_tokens=2, task_id="T2"),
        other,
    ]
    resp = stub.RecordCosts(C.RecordCostsRequest(items=items), timeout=10)
    assert (resp.stored, resp.failed) == (2, 3)
    by_index = {r.index: r for r in resp.results}
    assert by_index[0].cost.id and by_index[3].cost.task_id == 2
    assert (by_index[1].error_code, by_index[1].field) == ("INVALID_ARGUMENT", "items[1].input_tokens")
    assert by_index[2].field == "items[2].task_id" and "T999" in by_index[2].error
    assert by_index[4].error_code == "ALREADY_EXISTS" and by_index[4].field == "items[4].request_id"
    too_many = C.RecordCostsRequest(items=[C.RecordCostRequest(model="m")] * 501)
    e = _err(lambda: stub.RecordCosts(too_many, timeout=10))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and (e.details() or "").startswith("items")


def _sum_events(state: Path, start: str, end: str) -> tuple[int, float]:
    conn = sqlite3.connect(state / "lobwife.db", timeout=10)
    try:
        lo = int(datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp() * 1e6)
        hi = int(datetime.fromisoformat(end).replace(tzinfo=UTC).timestamp() * 1e6)
        row = conn.execute(
            "SELECT COUNT(*), TOTAL(COALESCE(caller_cost_usd, computed_cost_usd, 0)) FROM cost_events"
            " WHERE occurred_at >= ? AND occurred_at < ?",
            (lo, hi),
        ).fetchone()
        return int(row[0]), float(row[1])
    finally:
        conn.close()


def test_summaries_agree_with_the_events_on_and_off_the_hour(
    srv: ServerProcess, stub: costs_pb2_grpc.CostServiceStub
) -> None:
    times = [
        "2026-10-01T09:59:59",
        "2026-10-01T10:00:00",
        "2026-10-01T10:30:00",
        "2026-10-01T23:59:00",
        "2026-10-02T00:10:00",
    ]
    for i, at in enumerate(times):
        model = "claude-opus-4-5" if i % 2 else "claude-haiku-4-5"
        stub.RecordCost(
            C.RecordCostRequest(model=model, task_id=f"T{1 + i % 2}", input_tokens=1000 * (i + 1), created_at=ts(at)),
            timeout=10,
        )
    for start, end in [
        ("2026-10-01T00:00:00", "2026-10-03T00:00:00"),
        ("2026-10-01T09:59:30", "2026-10-01T10:30:01"),
        ("2026-10-01T10:10:00", "2026-10-01T10:50:00"),
        ("2026-10-01T09:00:00", "2026-10-02T00:05:00"),
    ]:
        summary = stub.SummarizeCosts(
            C.SummarizeCostsRequest(group_by=C.COST_GROUP_BY_DAY, start_time=ts(start), end_time=ts(end)), timeout=10
        )
        calls, cost = _sum_events(srv.state_dir, start, end)
        assert summary.total.calls == calls and summary.total.cost_usd == pytest.approx(cost), (start, end)
        assert sum(r.calls for r in summary.rows) == calls
    by_model = stub.SummarizeCosts(
        C.SummarizeCostsRequest(
            group_by=C.COST_GROUP_BY_MODEL, start_time=ts("2026-10-01T00:00:00"), end_time=ts("2026-10-03T00:00:00")
        ),
        timeout=10,
    )
    assert [r.key for r in by_model.rows] == ["claude-opus-4-5", "claude-haiku-4-5"]  # most expensive first
    assert by_model.rows[0].input_tokens == 2000 + 4000
    hours = stub.SummarizeCosts(
        C.SummarizeCostsRequest(
            group_by=C.COST_GROUP_BY_HOUR, start_time=ts("2026-10-01T09:00:00"), end_time=ts("2026-10-01T11:00:00")
        ),
        timeout=10,
    )
    assert [(r.key, r.calls) for r in hours.rows] == [("2026-10-01T09", 1), ("2026-10-01T10", 2)]
    by_type = stub.SummarizeCosts(C.SummarizeCostsRequest(group_by=C.COST_GROUP_BY_TYPE), timeout=10)
    assert {"swe", "qa"} <= {r.key for r in by_type.rows}
    by_task = stub.SummarizeCosts(C.SummarizeCostsRequest(group_by=C.COST_GROUP_BY_TASK, task_id="T2"), timeout=10)
    assert [r.key for r in by_task.rows] == ["T2"]
    # Filters from both rollups' sides (one task's costs by model, by day): read from the events.
    start, end = ts("2026-10-01T09:30:00"), ts("2026-10-02T00:05:00")
    mixed = stub.SummarizeCosts(
        C.SummarizeCostsRequest(group_by=C.COST_GROUP_BY_MODEL, task_id="T1", start_time=start, end_time=end),
        timeout=10,
    )
    assert [(r.key, r.calls, r.input_tokens) for r in mixed.rows] == [("claude-haiku-4-5", 2, 1000 + 3000)]
    by_day_of_task = stub.SummarizeCosts(
        C.SummarizeCostsRequest(group_by=C.COST_GROUP_BY_DAY, task_id="T2", start_time=start, end_time=end), timeout=10
    )
    assert [(r.key, r.calls) for r in by_day_of_task.rows] == [("2026-10-01", 2)]


def test_list_filters_and_pages(stub: costs_pb2_grpc.CostServiceStub) -> None:
    for _ in range(3):
        stub.RecordCost(
            C.RecordCostRequest(model="claude-3-5-haiku-20241022", provider="paging", input_tokens=1), timeout=10
        )
    page = stub.ListCosts(C.ListCostsRequest(provider="paging", page_size=2), timeout=10)
    assert len(page.costs) == 2 and page.next_page_token
    rest = stub.ListCosts(
        C.ListCostsRequest(provider="paging", page_size=2, page_token=page.next_page_token), timeout=10
    )
    assert len(rest.costs) == 1 and not rest.next_page_token
    assert page.costs[0].id > page.costs[1].id > rest.costs[0].id
    assert all(c.price_id == "claude-3-5-haiku@2024-10-22" for c in [*page.costs, *rest.costs])
    swe = stub.ListCosts(C.ListCostsRequest(task_type="swe"), timeout=10).costs
    assert swe and all(c.task_id == 1 for c in swe)


def test_bad_input_is_refused_naming_the_field(srv: ServerProcess, stub: costs_pb2_grpc.CostServiceStub) -> None:
    before = stub.SummarizeCosts(C.SummarizeCostsRequest(group_by=C.COST_GROUP_BY_MODEL), timeout=10).total.calls
    cases = [
        (C.RecordCostRequest(model="m", input_tokens=-5), "input_tokens"),
        (C.RecordCostRequest(model="m", output_tokens=10**13), "output_tokens"),
        (C.RecordCostRequest(model="m", cost_usd=float("nan")), "cost_usd"),
        (C.RecordCostRequest(model="m", cost_usd=float("inf")), "cost_usd"),
        (C.RecordCostRequest(model="m", cost_usd=-1), "cost_usd"),
        (C.RecordCostRequest(model="m", task_id="T4242"), "task_id"),
        (C.RecordCostRequest(model="m", output_tokens=1, reasoning_tokens=2), "reasoning_tokens"),
        (C.RecordCostRequest(model="m", created_at=ts("1999-12-31T23:59:59")), "created_at"),
        (C.RecordCostRequest(model="m", created_at=ts("2999-01-01T00:00:00")), "created_at"),
        (C.RecordCostRequest(), "model"),
    ]
    for req, field in cases:
        e = _err(lambda r=req: stub.RecordCost(r, timeout=10))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and (e.details() or "").startswith(field), (field, e)
    reversed_range = C.ListCostsRequest(start_time=ts("2026-10-02T00:00:00"), end_time=ts("2026-10-01T00:00:00"))
    e = _err(lambda: stub.ListCosts(reversed_range, timeout=10))
    assert (e.details() or "").startswith("end_time")
    e = _err(lambda: stub.SummarizeCosts(C.SummarizeCostsRequest(), timeout=10))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "group_by" in (e.details() or "")
    u = srv.http_url
    for body, field in [
        ({"model": "m", "input_tokens": 1.5}, "input_tokens"),
        ({"model": "m", "input_tokens": 2**64}, "input_tokens"),
        ({"model": "m", "input_tokens": "many"}, "input_tokens"),
    ]:
        r = curl("POST", u + "/api/costs", body)
        assert r.status == 400 and field in r.body.decode(), (body, r.status, r.body)
    assert curl("GET", u + "/api/costs/summary?group_by=week").status == 400
    after = stub.SummarizeCosts(C.SummarizeCostsRequest(group_by=C.COST_GROUP_BY_MODEL), timeout=10).total.calls
    assert after == before


def test_the_design_routes_with_curl(srv: ServerProcess) -> None:
    u = srv.http_url
    made = curl("POST", u + "/api/costs", {"task_id": "T2", "model": "claude-haiku-4-5", "input_tokens": 2_000_000})
    assert made.status == 201 and made.json["cost_usd"] == 2.0 and made.json["task_id"] == 2
    listed = curl("GET", u + "/api/costs?task_id=T2&limit=1")
    assert listed.status == 200 and listed.json["costs"][0]["id"] == made.json["id"]
    summary = curl("GET", u + "/api/costs/summary?group_by=task")
    assert summary.status == 200
    keys = [r["key"] for r in summary.json["rows"]]
    assert "T2" in keys and summary.json["total"]["key"] == "total"
    assert curl("GET", u + "/api/v1/costs:summarize?group_by=hour").status == 200


def test_reprice_after_a_price_fix(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[price]]\nmodel = "house-model"\neffective = 2026-01-01\n'
        "input = 1.0\noutput = 2.0\ncache_read = 0\ncache_write = 0\n"
    )
    state = tmp_path / "state"
    srv = start_server(state, "--prices", str(prices))
    try:
        with grpc.insecure_channel(srv.grpc_addr) as ch:
            stub = costs_pb2_grpc.CostServiceStub(ch)
            at = ts("2026-06-01T12:00:00")
            priced = stub.RecordCost(
                C.RecordCostRequest(model="house-model", input_tokens=1_000_000, created_at=at), timeout=10
            )
            billed = stub.RecordCost(
                C.RecordCostRequest(model="house-model", input_tokens=1_000_000, cost_usd=9.0, created_at=at),
                timeout=10,
            )
            assert priced.cost.cost_usd == 1.0
    finally:
        srv.terminate()
    # The price was wrong: a corrected entry, a restart, a reprice.
    prices.write_text(prices.read_text().replace("input = 1.0", "input = 1.5"))
    srv = start_server(state, "--prices", str(prices))
    try:
        with grpc.insecure_channel(srv.grpc_addr) as ch:
            stub = costs_pb2_grpc.CostServiceStub(ch)
            since = ts("2026-01-01T00:00:00")
            dry = stub.RepriceCosts(C.RepriceCostsRequest(since=since, dry_run=True), timeout=10)
            assert (dry.examined, dry.changed, dry.delta_usd) == (1, 1, 0.5)  # the caller's bill is not touched
            done = stub.RepriceCosts(C.RepriceCostsRequest(since=since), timeout=10)
            assert (done.changed, done.delta_usd) == (1, 0.5)
            again = stub.RepriceCosts(C.RepriceCostsRequest(since=since), timeout=10)
            assert again.changed == 0
            rows = {c.id: c for c in stub.ListCosts(C.ListCostsRequest(model="house-model"), timeout=10).costs}
            assert rows[priced.cost.id].cost_usd == 1.5 and rows[billed.cost.id].cost_usd == 9.0
            total = stub.SummarizeCosts(
                C.SummarizeCostsRequest(group_by=C.COST_GROUP_BY_MODEL, model="house-model"), timeout=10
            )
            assert total.total.cost_usd == pytest.approx(10.5)  # the rollup moved with the reprice
        conn = sqlite3.connect(state / "lobwife.db")
        try:
            change = conn.execute("SELECT old_cost_usd, new_cost_usd, new_price_id FROM cost_reprices").fetchall()
        finally:
            conn.close()
        assert change == [(1.0, 1.5, "house-model@2026-01-01")]
    finally:
        srv.terminate()
    # A price file that cannot be used stops the start, naming the entry.
    prices.write_text(
        '[[price]]\nmodel = "x"\neffective = 2026-01-01\ninput = -1\noutput = 1\ncache_read = 0\ncache_write = 0\n'
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lobwife_server",
            "--state-dir",
            str(tmp_path / "s2"),
            "--prices",
            str(prices),
            "--grpc-port",
            "0",
            "--http-port",
            "0",
        ],
        env=subprocess_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1 and "price entry 1: input must be a number" in done.stderr, done.stderr


def test_the_cli_and_client(srv: ServerProcess) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(srv.grpc_addr, *args)

    rec = cli("costs", "record", "claude-haiku-4-5", "--task", "T1", "--input", "1000000", "--output", "1000", "--json")
    assert rec.returncode == 0, rec.stderr
    assert json.loads(rec.stdout)["cost_usd"] == pytest.approx(1.005)
    summary = cli("costs", "summary", "--by", "model", "--json")
    assert summary.returncode == 0, summary.stderr
    assert any(r["key"] == "claude-haiku-4-5" for r in json.loads(summary.stdout)["rows"])
    table = cli("costs", "summary", "--by", "task")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:2] == ["KEY", "CALLS"]
    listed = cli("costs", "list", "--task", "T1", "--limit", "1")
    assert listed.returncode == 0 and "claude-haiku-4-5" in listed.stdout
    bad = cli("costs", "record", "m", "--input", "-3")
    assert bad.returncode == 2 and "--input" in bad.stderr


def test_concurrent_records_batched_together_are_each_right(srv: ServerProcess) -> None:
    # Calls that meet in one writer batch run as one multi-row insert; one with a request_id or a
    # missing task sends the batch call by call. Either way each call gets its own answer.
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> tuple[int, str]:
        with grpc.insecure_channel(srv.grpc_addr) as ch:
            stub = costs_pb2_grpc.CostServiceStub(ch)
            task = "T9999" if i % 17 == 0 else f"T{1 + i % 2}"
            req = C.RecordCostRequest(model="claude-haiku-4-5", provider="batch", task_id=task, input_tokens=i + 1)
            if i % 13 == 0:
                req.request_id = f"batch-{i}"
            try:
                c = stub.RecordCost(req, timeout=20).cost
            except grpc.RpcError as e:
                return i, e.code().name  # type: ignore[attr-defined]
            assert c.input_tokens == i + 1 and c.task_id == 1 + i % 2 and c.task_type in ("swe", "qa")
            return i, "OK"

    with ThreadPoolExecutor(32) as pool:
        outcomes = dict(pool.map(one, range(200)))
    assert all(outcomes[i] == ("INVALID_ARGUMENT" if i % 17 == 0 else "OK") for i in range(200)), outcomes
    with grpc.insecure_channel(srv.grpc_addr) as ch:
        stub = costs_pb2_grpc.CostServiceStub(ch)
        rows = list(stub.ListCosts(C.ListCostsRequest(provider="batch", page_size=1000), timeout=10).costs)
    stored = sorted(c.input_tokens - 1 for c in rows)
    assert stored == [i for i in range(200) if i % 17], "each call stored once, none lost"
    assert len({c.id for c in rows}) == len(rows)
