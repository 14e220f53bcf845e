"""The rule table covers the contract exactly, says what the issue says, and docs/auth.md shows it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lobwife.v1.services import SERVICES
from lobwife_server.auth import policy
from lobwife_server.auth.policy import RULES, Role

ROOT = Path(__file__).resolve().parents[3]
CONTRACT = [(f"/{s.full_name}/{m.name}", m.input_type) for s in SERVICES for m in s.methods]
BEGIN, END = "<!-- rules:begin (generated from auth/policy.py) -->", "<!-- rules:end -->"


def test_every_rpc_of_the_contract_has_a_rule_and_every_rule_an_rpc() -> None:
    assert policy.problems(CONTRACT) == []
    assert set(RULES) == {name for name, _ in CONTRACT}


def test_removing_a_rule_fails_the_check() -> None:
    rules = dict(RULES)
    del rules["/lobwife.v1.TaskService/GetTask"]
    assert policy.problems(CONTRACT, rules) == [
        "/lobwife.v1.TaskService/GetTask has no rule in lobwife_server.auth.policy.RULES"
    ]
    with pytest.raises(policy.PolicyError, match="GetTask has no rule"):
        policy.check_complete(CONTRACT, rules)


def test_a_new_rpc_without_a_rule_fails_the_check() -> None:
    fake: Any = object()
    found = policy.problems([*CONTRACT, ("/lobwife.v1.TaskService/PurgeTasks", fake)])
    assert found == ["/lobwife.v1.TaskService/PurgeTasks has no rule in lobwife_server.auth.policy.RULES"]


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        (policy.Rule(frozenset({Role.ADMIN, Role.READER}), read=False), "admits the reader role but is not a read"),
        (policy.Rule(frozenset({Role.ADMIN, Role.TASK}), read=True), "admits the task role"),
        (policy.Rule(frozenset({Role.READER}), read=True), "admin must be admitted"),
        (policy.Rule(frozenset({Role.ADMIN, Role.TASK}), read=True, task_field="nope"), "is not a string field"),
    ],
)
def test_a_bad_rule_is_named(rule: policy.Rule, problem: str) -> None:
    rules = {**RULES, "/lobwife.v1.TaskService/GetTask": rule}
    found = policy.problems(CONTRACT, rules)
    assert len(found) == 1 and problem in found[0] and "GetTask" in found[0]


def _returns_a_job(desc: Any, seen: set[str] | None = None) -> bool:
    """The message holds a whole lobwife.v1.Job (command, env) somewhere."""
    seen = seen if seen is not None else set()
    if desc.full_name in seen:
        return False
    seen.add(desc.full_name)
    for f in desc.fields:
        if f.message_type is not None and (
            f.message_type.full_name == "lobwife.v1.Job" or _returns_a_job(f.message_type, seen)
        ):
            return True
    return False


def test_no_one_but_admin_sees_a_jobs_env() -> None:
    # Generated from the contract: any RPC whose response carries a Job definition.
    carrying = [f"/{s.full_name}/{m.name}" for s in SERVICES for m in s.methods if _returns_a_job(m.output_type)]
    assert "/lobwife.v1.JobService/GetJob" in carrying and "/lobwife.v1.JobService/ListJobs" in carrying
    for name in carrying:
        assert RULES[name].roles == {Role.ADMIN}, name


# What the issue says of each role, spelled out by hand (the table must agree; the e2e matrix then
# checks that the server does what the table says).
SPOT_CHECKS = [
    ("/lobwife.v1.TaskService/GetTask", Role.TASK, True),
    ("/lobwife.v1.TaskService/UpdateTask", Role.TASK, True),
    ("/lobwife.v1.TaskService/CreateTaskEvent", Role.TASK, True),
    ("/lobwife.v1.BrokerService/IssueTaskToken", Role.TASK, True),
    ("/lobwife.v1.CostService/RecordCost", Role.TASK, True),
    ("/lobwife.v1.BrokerService/IssueServiceToken", Role.TASK, False),
    ("/lobwife.v1.TaskService/CreateTask", Role.TASK, False),
    ("/lobwife.v1.TaskService/ListTasks", Role.TASK, False),
    ("/lobwife.v1.TaskService/CancelTask", Role.TASK, False),
    ("/lobwife.v1.BrokerService/RegisterTask", Role.TASK, False),
    ("/lobwife.v1.BrokerService/IssueServiceToken", Role.SERVICE, True),
    ("/lobwife.v1.TaskService/CreateTask", Role.SERVICE, True),
    ("/lobwife.v1.TaskService/UpdateTask", Role.SERVICE, True),
    ("/lobwife.v1.AuthService/MintToken", Role.SERVICE, False),
    ("/lobwife.v1.JobService/CreateJob", Role.SERVICE, False),
    ("/lobwife.v1.TaskService/CreateTask", Role.READER, False),
    ("/lobwife.v1.TaskService/ListTasks", Role.READER, True),
    ("/lobwife.v1.JobService/GetStatus", Role.READER, True),
    ("/lobwife.v1.JobService/GetJob", Role.READER, False),
    ("/lobwife.v1.BrokerService/IssueTaskToken", Role.READER, False),
    ("/lobwife.v1.AuthService/MintToken", Role.ADMIN, True),
]


@pytest.mark.parametrize(("rpc", "role", "admitted"), SPOT_CHECKS)
def test_the_table_says_what_the_issue_says(rpc: str, role: Role, admitted: bool) -> None:
    assert RULES[rpc].admits(role) is admitted


def test_admin_may_call_everything_and_a_reader_only_reads() -> None:
    for name, rule in RULES.items():
        assert rule.admits(Role.ADMIN), name
        if rule.admits(Role.READER):
            assert rule.read, name


def test_a_task_is_bound_to_the_task_its_request_names() -> None:
    for name, rule in RULES.items():
        if rule.admits(Role.TASK) and not rule.public and not rule.any_task:
            # One task named in task_id, or in every item of a batch (RecordCosts).
            assert rule.task_field in ("task_id", "items.task_id"), name
    assert [n for n, r in RULES.items() if r.any_task] == ["/lobwife.v1.AuthService/WhoAmI"]
    assert [n for n, r in RULES.items() if r.public] == ["/lobwife.v1.SystemService/GetHealth"]


def test_docs_auth_md_shows_the_table() -> None:
    text = (ROOT / "docs" / "auth.md").read_text()
    shown = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert shown == policy.markdown_table(), (
        "docs/auth.md is stale: python -m lobwife_server.auth table --write docs/auth.md"
    )


async def test_a_batch_admits_a_task_only_when_every_item_names_its_own_task() -> None:
    from lobwife.v1 import costs_pb2
    from lobwife_server.auth.enforcer import task_refs

    rule = RULES["/lobwife.v1.CostService/RecordCosts"]
    assert rule.task_field == "items.task_id" and rule.admits(Role.TASK)
    req = costs_pb2.RecordCostsRequest(items=[costs_pb2.RecordCostRequest(task_id=t, model="m") for t in ("T1", "1")])
    assert task_refs(req, rule.task_field) == ["T1", "1"]
    assert task_refs(costs_pb2.RecordCostsRequest(), rule.task_field) == []
    assert task_refs(costs_pb2.RecordCostRequest(task_id="T3"), "task_id") == ["T3"]
    bad = {**RULES, "/lobwife.v1.CostService/RecordCosts": policy.Rule(rule.roles, False, task_field="items.model_x")}
    methods = [(f"/{s.full_name}/{m.name}", m.input_type) for s in SERVICES for m in s.methods]
    assert any("items.model_x" in p for p in policy.problems(methods, bad))
