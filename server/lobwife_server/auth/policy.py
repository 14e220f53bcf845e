"""The roles and the one table of who may call what, keyed by the RPC's full name.

The enforcer reads :data:`RULES` and nothing else; a test walks the contract
(``lobwife.v1.services.SERVICES``) and fails for an RPC without a rule, and the
app refuses to start with one (:func:`check_complete`). docs/auth.md's table is
generated from it (:func:`markdown_table`, checked by a test).

A rule names the roles that may call the RPC. ``admin`` may call everything. A
``task`` identity is bound to one task: a rule that lets it in names the request
field that says which task the call is about (``task_field``; ``items.task_id`` for each item of a
batch), and the enforcer
admits the call only when that is the identity's own task and the task is still
live. A rule is a ``read`` when the call changes nothing; ``reader`` is only ever
given reads (a test holds the table to that).

A reader never sees a job's environment: ``ListJobs`` and ``GetJob`` answer with
whole Job definitions (``command``, ``env``), and the create/update calls echo
them, so they are admin only. ``GetStatus`` (job summaries, no command, no env),
runs and their output are reads any reader has. If dashboards need the job list,
the way to open it is a redacting step in JobService (blank ``env`` for a caller
that is not admin), not a wider rule here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType


class Role(enum.StrEnum):
    """What a caller may do; the value is its name in tokens, logs, the role map and the proto's short name."""

    ADMIN = "admin"
    SERVICE = "service"
    TASK = "task"
    READER = "reader"


ROLES: tuple[Role, ...] = tuple(Role)


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may call one RPC."""

    #: The roles admitted (admin is always among them).
    roles: frozenset[Role]
    #: True when the call changes nothing (the only kind a reader is given).
    read: bool
    #: For the task role: the request field naming the task (``task_id``); None when a task may not call it.
    task_field: str | None = None
    #: No credential needed or looked at (health).
    public: bool = False
    #: The task role is admitted whatever task the request names (WhoAmI: there is none); else
    #: a rule admitting it must name ``task_field``.
    any_task: bool = False

    def admits(self, role: Role) -> bool:
        return role in self.roles


_A, _S, _T, _R = Role.ADMIN, Role.SERVICE, Role.TASK, Role.READER


def _read(*roles: Role, task_field: str | None = None, any_task: bool = False) -> Rule:
    return Rule(frozenset((_A, *roles)), read=True, task_field=task_field, any_task=any_task)


def _write(*roles: Role, task_field: str | None = None) -> Rule:
    return Rule(frozenset((_A, *roles)), read=False, task_field=task_field)


_PUBLIC = Rule(frozenset(ROLES), read=True, public=True)
#: Every read a dashboard or a service may make.
_SHARED_READ = _read(_S, _R)
_ADMIN = _write()

_TABLE: dict[str, Rule] = {
    # -- tasks: services read and write them; a task reads and updates its own.
    "/lobwife.v1.TaskService/CreateTask": _write(_S),
    "/lobwife.v1.TaskService/GetTask": _read(_S, _R, _T, task_field="task_id"),
    "/lobwife.v1.TaskService/ListTasks": _SHARED_READ,
    "/lobwife.v1.TaskService/UpdateTask": _write(_S, _T, task_field="task_id"),
    "/lobwife.v1.TaskService/CancelTask": _write(_S),
    "/lobwife.v1.TaskService/CreateTaskEvent": _write(_S, _T, task_field="task_id"),
    "/lobwife.v1.TaskService/ListTaskEvents": _read(_S, _R, _T, task_field="task_id"),
    "/lobwife.v1.TaskService/RegisterTaskRepos": _write(_S),
    # A task may watch its own task (task_id set to it); a watch of every task is not its.
    "/lobwife.v1.TaskService/WatchTasks": _read(_S, _R, _T, task_field="task_id"),
    # -- jobs: definitions carry command and env, so they are the admin's; runs and summaries are reads.
    "/lobwife.v1.JobService/ListJobs": _ADMIN,
    "/lobwife.v1.JobService/GetJob": _ADMIN,
    "/lobwife.v1.JobService/CreateJob": _ADMIN,
    "/lobwife.v1.JobService/UpdateJob": _ADMIN,
    "/lobwife.v1.JobService/DeleteJob": _ADMIN,
    "/lobwife.v1.JobService/TriggerJob": _ADMIN,
    "/lobwife.v1.JobService/EnableJob": _ADMIN,
    "/lobwife.v1.JobService/DisableJob": _ADMIN,
    "/lobwife.v1.JobService/ListJobRuns": _SHARED_READ,
    "/lobwife.v1.JobService/GetJobRun": _SHARED_READ,
    "/lobwife.v1.JobService/WatchRuns": _SHARED_READ,
    "/lobwife.v1.JobService/GetStatus": _SHARED_READ,
    "/lobwife.v1.JobService/GetSyncStatus": _SHARED_READ,
    "/lobwife.v1.JobService/TriggerSync": _ADMIN,
    # -- the broker: lobboss registers; a task gets its own token; services get service tokens.
    "/lobwife.v1.BrokerService/RegisterTask": _ADMIN,
    "/lobwife.v1.BrokerService/DeregisterTask": _ADMIN,
    "/lobwife.v1.BrokerService/ListRegistrations": _SHARED_READ,
    "/lobwife.v1.BrokerService/IssueTaskToken": _write(_T, task_field="task_id"),
    "/lobwife.v1.BrokerService/IssueServiceToken": _write(_S),
    "/lobwife.v1.BrokerService/ListTokenAudit": _SHARED_READ,
    "/lobwife.v1.BrokerService/ExpireRegistrations": _ADMIN,
    # -- costs: a task records its own.
    "/lobwife.v1.CostService/RecordCost": _write(_S, _T, task_field="task_id"),
    # A worker flushing its buffer: every item must name its own task.
    "/lobwife.v1.CostService/RecordCosts": _write(_S, _T, task_field="items.task_id"),
    "/lobwife.v1.CostService/RepriceCosts": _ADMIN,
    "/lobwife.v1.CostService/ListCosts": _SHARED_READ,
    "/lobwife.v1.CostService/SummarizeCosts": _SHARED_READ,
    # -- audit findings.
    "/lobwife.v1.AuditService/CreateFinding": _write(_S),
    "/lobwife.v1.AuditService/GetFinding": _SHARED_READ,
    "/lobwife.v1.AuditService/ListFindings": _SHARED_READ,
    "/lobwife.v1.AuditService/UpdateFinding": _write(_S),
    "/lobwife.v1.AuditService/ResolveFinding": _write(_S),
    # -- auth itself: minting is the admin's; anyone with a credential may ask who it is.
    "/lobwife.v1.AuthService/MintToken": _ADMIN,
    "/lobwife.v1.AuthService/WhoAmI": _read(_S, _R, _T, any_task=True),
    # -- open: the legacy health document (gRPC health and reflection are outside the dispatcher).
    "/lobwife.v1.SystemService/GetHealth": _PUBLIC,
}

#: The rule of every RPC of the contract, keyed by ``/package.Service/Method``.
RULES: Mapping[str, Rule] = MappingProxyType(_TABLE)


class PolicyError(Exception):
    """The table and the contract disagree (an RPC without a rule, a rule without an RPC, a bad rule)."""


def problems(methods: Iterable[tuple[str, object]], rules: Mapping[str, Rule] = RULES) -> list[str]:
    """What is wrong with ``rules`` for ``methods`` (``(full name, input descriptor)`` pairs); empty when nothing.

    Checked: every RPC has a rule and every rule an RPC; a rule's ``task_field`` is a string field
    of the request, and a rule that admits the task role names one; a reader only reads.
    """
    out: list[str] = []
    seen: set[str] = set()
    for name, input_type in methods:
        seen.add(name)
        rule = rules.get(name)
        if rule is None:
            out.append(f"{name} has no rule in lobwife_server.auth.policy.RULES")
            continue
        if Role.ADMIN not in rule.roles:
            out.append(f"{name}: admin must be admitted")
        if Role.TASK in rule.roles and not rule.public and (rule.task_field is None) == (not rule.any_task):
            out.append(f"{name}: admits the task role: name the request field of its task, or say any_task")
        if rule.task_field is not None:
            fields = getattr(input_type, "fields_by_name", {})
            outer, _, inner = rule.task_field.partition(".")
            fd = fields.get(outer)
            if inner and fd is not None:
                # `items.task_id`: a repeated message field whose every item names the task.
                repeated = fd.is_repeated and fd.message_type is not None
                fd = fd.message_type.fields_by_name.get(inner) if repeated else None
            if fd is None or fd.type != fd.TYPE_STRING:
                out.append(f"{name}: task_field {rule.task_field!r} is not a string field of the request")
        if Role.READER in rule.roles and not rule.read:
            out.append(f"{name}: admits the reader role but is not a read")
    for name in rules:
        if name not in seen:
            out.append(f"{name} has a rule but is not an RPC of the contract")
    return out


def check_complete(methods: Iterable[tuple[str, object]], rules: Mapping[str, Rule] = RULES) -> None:
    """PolicyError unless :func:`problems` finds nothing (the app calls it at start, in every auth mode)."""
    found = problems(methods, rules)
    if found:
        raise PolicyError("; ".join(found))


def cell(rule: Rule, role: Role) -> str:
    """What ``role`` gets from ``rule``, as docs/auth.md's table shows it."""
    if rule.public:
        return "open"
    if not rule.admits(role):
        return "—"
    if role is Role.TASK and not rule.any_task:
        return f"own (`{rule.task_field}`)"
    return "yes"


def markdown_table(rules: Mapping[str, Rule] = RULES) -> str:
    """docs/auth.md's table of RPC x role, from the rules, in the contract's order of services."""
    rows = ["| RPC | read | " + " | ".join(r.value for r in ROLES) + " |", "|---|---|" + "---|" * len(ROLES)]
    for name, rule in sorted(rules.items()):
        svc, _, method = name[1:].partition("/")
        cells = " | ".join(cell(rule, r) for r in ROLES)
        rows.append(f"| `{svc.rsplit('.', 1)[-1]}.{method}` | {'yes' if rule.read else 'no'} | {cells} |")
    return "\n".join(rows)
